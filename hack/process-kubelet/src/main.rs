//! rc-process-kubelet: a **development and test** node agent, not part of the product. It makes a
//! real control plane (hack/kube/cluster.sh) run pods without containers: it registers a Node,
//! renews its Lease, and runs every Pod bound to it as local processes, each pod in its own
//! network namespace (veth into a bridge it creates) and mount namespace (volumes bind-mounted at
//! their mountPaths). Image names map to local binaries (`--image-map`). It serves the
//! containers' logs through the kubelet API (HTTPS, client certificates of the cluster CA), so
//! `kubectl logs` works. See README.md here.
//!
//! Needs root (namespaces, mounts, links) and iproute2.

mod api_proxy;
mod controller;
mod env;
mod hosts;
mod images;
mod kubelet;
mod logs;
mod net;
mod node;
mod pod;
mod probe;
mod runtime;
mod sandbox;
mod server;
mod status;
mod volumes;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::images::ImageMap;
use crate::kubelet::Kubelet;
use crate::net::Network;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "DEV/TEST ONLY: a kubelet that runs pods as local processes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Register the node and run the pods bound to it until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Internal: enter a pod's namespaces and exec its program (used by `run`).
    #[command(hide = true)]
    Sandbox(sandbox::SandboxArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig of a user allowed to manage nodes, leases, pods and service-account tokens.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "proc-node-0")]
    node_name: String,
    /// REPOSITORY=/abs/path/to/binary, comma-separated or repeated; tags are ignored.
    #[arg(long = "image-map", required = true)]
    image_map: Vec<String>,
    /// Pod directories (volumes, logs, hosts files) live here.
    #[arg(long, default_value = "/tmp/rc-process-kubelet")]
    state_dir: PathBuf,
    /// Name of the bridge this kubelet creates (and removes at exit); at most 8 characters.
    #[arg(long, default_value = "rck0")]
    bridge: String,
    /// Private /24 for pod addresses: .1 is the bridge (node address), .2-.254 pods.
    #[arg(long, default_value = "10.241.0.0/24")]
    pod_subnet: String,
    /// Port of the API-server pass-through on the bridge address.
    #[arg(long, default_value_t = 443)]
    api_proxy_port: u16,
    /// Port of the kubelet API (HTTPS; container logs) on the node address (the bridge's .1),
    /// reported as the Node's `daemonEndpoints.kubeletEndpoint.Port`.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Serving certificate (PEM) of the kubelet API. The kubelet API is served only with all
    /// three of --tls-cert-file, --tls-private-key-file and --client-ca-file.
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, requires_all = ["tls_cert_file", "client_ca_file"])]
    tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that kubelet API clients' certificates must chain to (the API server's
    /// --kubelet-client-certificate is issued by the cluster CA).
    #[arg(long, requires_all = ["tls_cert_file", "tls_private_key_file"])]
    client_ca_file: Option<PathBuf>,
    /// First restart back-off; doubles per crash up to --backoff-max-seconds.
    #[arg(long, default_value_t = 10)]
    backoff_seconds: u64,
    #[arg(long, default_value_t = 300)]
    backoff_max_seconds: u64,
    /// How often running pods' secret, configMap, downwardAPI and projected volumes are read
    /// again and changed files replaced, so that a rotated Secret reaches them without a
    /// restart (the real kubelet's periodic sync, --sync-frequency, 1 min there). 0: never
    /// (projected service-account tokens are still renewed at 80% of their life).
    #[arg(
        long,
        env = "RC_PROCESS_KUBELET_VOLUME_REFRESH_SECONDS",
        default_value_t = 2
    )]
    volume_refresh_seconds: u64,
    /// Longest grace period for pods when the kubelet itself stops.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_seconds: u64,
    #[arg(long, default_value = "8")]
    cpu: String,
    #[arg(long, default_value = "16Gi")]
    memory: String,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    #[arg(long, default_value = "v1.37.2")]
    kubelet_version: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sandbox(args) => {
            let err = sandbox::exec(args);
            eprintln!("rc-process-kubelet sandbox: {err:#}");
            ExitCode::from(127)
        }
        Cmd::Run(args) => {
            tracing_subscriber::fmt()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("tokio runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Timestamp::now();
    let prepared = prepare(&args).await?;
    prepared
        .net
        .setup()
        .await
        .context("creating the pod bridge")?;
    let shutdown = CancellationToken::new();
    // Stopped only after the pods: an operator pod shutting down still talks to the API server,
    // and `kubectl logs -f` follows containers until they end.
    let proxy_stop = CancellationToken::new();
    let result = run_node(&args, started, prepared, &shutdown, &proxy_stop).await;
    if result.is_err() {
        shutdown.cancel();
        proxy_stop.cancel();
        Network::new(&args.bridge, &args.pod_subnet)?
            .cleanup()
            .await;
    }
    tracing::info!("process kubelet stopped");
    result
}

/// What the kubelet needs before it changes anything on the host.
struct Prepared {
    client: kube::Client,
    /// The API server's `host:port`, for the pass-through.
    upstream: String,
    images: ImageMap,
    net: Network,
    self_exe: PathBuf,
    tls: Option<Arc<rustls::ServerConfig>>,
}

async fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    let upstream = {
        let uri = &config.cluster_url;
        let host = uri.host().context("API server URL without host")?;
        let port = uri.port_u16().unwrap_or(443);
        format!("{host}:{port}")
    };
    let client = kube::Client::try_from(config).context("building the API client")?;
    let images = ImageMap::parse(&args.image_map)?;
    let net = Network::new(&args.bridge, &args.pod_subnet)?;
    let self_exe = std::env::current_exe().context("locating this binary")?;
    std::fs::create_dir_all(&args.state_dir)?;
    let tls = kubelet_api_tls(args)?;
    Ok(Prepared {
        client,
        upstream,
        images,
        net,
        self_exe,
        tls,
    })
}

/// The kubelet API's TLS configuration; `None` (it is not served) without the three files.
fn kubelet_api_tls(args: &RunArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    match (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.client_ca_file,
    ) {
        (Some(cert), Some(key), Some(client_ca)) => Ok(Some(
            server::tls_config(&server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca.clone(),
            })
            .context("kubelet API TLS")?,
        )),
        _ => {
            tracing::warn!("no --tls-cert-file/--tls-private-key-file/--client-ca-file: the kubelet API (kubectl logs) is not served");
            Ok(None)
        }
    }
}

/// With the bridge up: serves on it, registers the Node and runs pods until `shutdown`, then
/// stops them, the heartbeat and the pass-through, and removes the bridge.
async fn run_node(
    args: &RunArgs,
    started: Timestamp,
    p: Prepared,
    shutdown: &CancellationToken,
    proxy_stop: &CancellationToken,
) -> anyhow::Result<()> {
    let gateway = p.net.gateway();
    let log_registry = Arc::new(logs::LogRegistry::default());
    let kubelet_port =
        serve_on_bridge(args, gateway, &p.upstream, p.tls, &log_registry, proxy_stop).await?;
    let node_cfg = node::NodeConfig {
        name: args.node_name.clone(),
        internal_ip: gateway.to_string(),
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        max_pods: args.max_pods,
        kubelet_version: args.kubelet_version.clone(),
        kubelet_port,
    };
    let node_uid = node::register(&p.client, &node_cfg, started)
        .await
        .context("registering the Node")?;
    tracing::info!(node = %args.node_name, bridge = %args.bridge, gateway = %gateway, api = %p.upstream, "node registered; running pods");
    let heartbeat = tokio::spawn(node::heartbeat(
        p.client.clone(),
        node_cfg,
        node_uid,
        started,
        shutdown.clone(),
    ));
    let kubelet = Arc::new(Kubelet {
        client: p.client,
        node_name: args.node_name.clone(),
        net: p.net,
        images: p.images,
        state_dir: args.state_dir.clone(),
        self_exe: p.self_exe,
        backoff_base: Duration::from_secs(args.backoff_seconds.max(1)),
        backoff_max: Duration::from_secs(args.backoff_max_seconds.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        api_proxy_port: args.api_proxy_port,
        hosts: hosts::HostsTable::new(gateway),
        logs: log_registry,
        volume_refresh: (args.volume_refresh_seconds > 0)
            .then(|| Duration::from_secs(args.volume_refresh_seconds)),
    });
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    controller::run(kubelet.clone(), shutdown.clone()).await;
    shutdown.cancel();
    signals.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), heartbeat).await;
    proxy_stop.cancel();
    kubelet.net.cleanup().await;
    Ok(())
}

/// The API-server pass-through and, with TLS, the kubelet API, on the bridge address until
/// `stop`; returns the kubelet API's port (0: not served).
async fn serve_on_bridge(
    args: &RunArgs,
    gateway: Ipv4Addr,
    upstream: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    log_registry: &Arc<logs::LogRegistry>,
    stop: &CancellationToken,
) -> anyhow::Result<u16> {
    let listener = api_proxy::bind(SocketAddr::from((gateway, args.api_proxy_port)))
        .await
        .context("binding the API-server proxy on the bridge")?;
    tokio::spawn(api_proxy::serve(
        listener,
        upstream.to_owned(),
        stop.clone(),
    ));
    let Some(tls) = tls else {
        return Ok(0);
    };
    let addr = SocketAddr::from((gateway, args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the kubelet API on {addr}"))?;
    tokio::spawn(server::serve(
        listener,
        tls,
        log_registry.clone(),
        stop.clone(),
    ));
    tracing::info!(%addr, "kubelet API (container logs) listening");
    Ok(args.port)
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received; stopping pods");
    shutdown.cancel();
}
