//! The rc-operator binary: args, logging, the operator's HTTP endpoints, leader election and
//! the controller; `rc-operator crd` prints the CRD instead. `anyhow` lives here only.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use rc_operator::controller::observe::NodeAddressing;
use rc_operator::controller::{self, Context};
use rc_operator::crd::{self, ReplicatedCluster};
use rc_operator::http::{self, HttpState};
use rc_operator::metrics::Metrics;
use rc_operator::node_client::HttpNodeAdmin;

#[derive(Parser, Debug)]
#[command(
    name = "rc-operator",
    version,
    about = "Kubernetes operator for ReplicatedCluster resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default).
    Run,
    /// Print the ReplicatedCluster CustomResourceDefinition as YAML.
    Crd {
        /// Print the Helm template (behind `crds.create`, with a keep policy) instead.
        #[arg(long)]
        helm: bool,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch ReplicatedClusters in these namespaces only (comma-separated); all when empty.
    #[arg(
        long = "namespaces",
        global = true,
        env = "RC_OPERATOR_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Elect one active replica through a coordination.k8s.io Lease.
    #[arg(long, global = true, env = "RC_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_LEASE_NAME",
        default_value = "rc-operator-leader"
    )]
    lease_name: String,
    /// Namespace of the Lease; defaults to the operator's own (POD_NAMESPACE) or the client's.
    #[arg(long, global = true, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events; defaults to POD_NAME.
    #[arg(long, global = true, env = "POD_NAME")]
    identity: Option<String>,
    /// How to dial each node's admin API.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_NODE_ADDRESS",
        value_enum,
        default_value = "pod-ip"
    )]
    node_address: NodeAddressing,
    /// Create a NetworkPolicy per cluster (client port open, peer port for members, admin port
    /// for this operator's pods). Needs POD_NAMESPACE (the chart sets it): an operator running
    /// outside the cluster creates none, since it would shut itself out.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_NETWORK_POLICIES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    network_policies: bool,
    /// Lifetime of the node certificates the operator issues, in hours (renewed with a third
    /// left).
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_CERTIFICATE_LIFETIME_HOURS",
        default_value_t = 2160
    )]
    certificate_lifetime_hours: u64,
    /// Timeout of one admin API call, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_NODE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    node_timeout_ms: u64,
    /// Timeout of one status read, in milliseconds: a failover decision waits for these, so a
    /// hung leader must not hold it up long (a healthy node answers in milliseconds).
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_STATUS_TIMEOUT_MS",
        default_value_t = 120
    )]
    status_timeout_ms: u64,
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `rc_operator=debug,kube=info`.
    #[arg(
        long,
        global = true,
        env = "RC_OPERATOR_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd { helm }) => {
            let yaml = if helm {
                crd::crd_helm_template()?
            } else {
                crd::crd_yaml()?
            };
            print!("{yaml}");
            Ok(())
        }
        Some(Command::Run) | None => run(cli.run).await,
    }
}

fn init_tracing(args: &RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).context("invalid --log-level")?;
    // Colours only for a terminal: log files and `kubectl logs` get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Where this operator's pods run, for the clusters' NetworkPolicies: `POD_NAMESPACE` and the
/// chart's `app.kubernetes.io/name` label.
fn operator_pods(enabled: bool) -> Option<rc_operator::controller::build::OperatorPods> {
    if !enabled {
        return None;
    }
    let Ok(namespace) = std::env::var("POD_NAMESPACE") else {
        warn!("POD_NAMESPACE is not set (running outside the cluster?): no NetworkPolicies are created");
        return None;
    };
    Some(rc_operator::controller::build::OperatorPods {
        namespace,
        labels: std::collections::BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "rc-operator".to_owned(),
        )]),
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    let metrics = Arc::new(Metrics::default());
    let http_state = HttpState {
        metrics: metrics.clone(),
        ready: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let http_task = tokio::spawn(http::serve(
        listener,
        http_state.clone(),
        signalled(shutdown.clone()),
    ));

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let scopes = watch_scopes(&args.namespaces);
    // Ready once the API server answers and the CRD is installed: a standby replica is ready too.
    can_list_clusters(&client, &scopes[0]).await?;
    http_state.ready.store(true, Ordering::Relaxed);

    let identity = args.identity.clone().unwrap_or_else(random_identity);
    let reporter = Reporter {
        controller: "rc-operator".into(),
        instance: Some(identity.clone()),
    };
    let nodes = HttpNodeAdmin::new(
        Duration::from_millis(args.node_timeout_ms),
        Duration::from_millis(args.status_timeout_ms),
    )?;
    let mut ctx = Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        Arc::new(nodes),
        metrics.clone(),
        args.node_address,
    );
    ctx.certificate_lifetime = Duration::from_secs(args.certificate_lifetime_hours.max(1) * 3600);
    ctx.operator_pods = operator_pods(args.network_policies);
    let ctx = Arc::new(ctx);
    info!(namespaces = ?args.namespaces, identity, "starting");

    let result = if args.leader_election {
        let lease_namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        run_elected(
            ctx,
            scopes,
            &args.lease_name,
            &lease_namespace,
            &identity,
            shutdown.clone(),
        )
        .await
    } else {
        metrics.is_leader.set(1);
        run_controllers(ctx, scopes, shutdown.clone()).await;
        Ok(())
    };
    // Whatever ended the controller, stop serving too.
    drop(shutdown);
    http_task.abort();
    result
}

/// The namespaces to watch, one controller each; `None` for all when none is named.
fn watch_scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let named: Vec<Option<String>> = namespaces
        .iter()
        .filter(|ns| !ns.is_empty())
        .map(|ns| Some(ns.clone()))
        .collect();
    if named.is_empty() {
        vec![None]
    } else {
        named
    }
}

/// Lists one ReplicatedCluster in `scope`: the API server answers, the CRD is installed and the
/// operator may list them.
async fn can_list_clusters(client: &Client, scope: &Option<String>) -> anyhow::Result<()> {
    let probe: Api<ReplicatedCluster> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    probe
        .list(&ListParams::default().limit(1))
        .await
        .context("listing ReplicatedClusters (is the CRD installed, and may we list them?)")?;
    Ok(())
}

/// Runs the controller only while this replica holds the Lease. Losing the Lease ends the
/// process (after the controller stopped): a restart begins from fresh caches, and Kubernetes
/// brings the replica back as a standby.
async fn run_elected(
    ctx: Arc<Context>,
    scopes: Vec<Option<String>>,
    lease_name: &str,
    lease_namespace: &str,
    identity: &str,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let manager = LeaseManagerBuilder::new(ctx.client.clone(), lease_name)
        .with_namespace(lease_namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("creating the leader election Lease manager")?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(
        lease = lease_name,
        lease_namespace, "waiting for leadership"
    );
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            _ = shutdown.changed() => return release(leading, lease_task).await,
        }
    }
    info!("leading: starting the controller");
    ctx.metrics.is_leader.set(1);
    let mut lost = leading.clone();
    let stop_shutdown = shutdown.clone();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        let lost_lease = async {
            while lost.changed().await.is_ok() {
                if !*lost.borrow() {
                    return;
                }
            }
        };
        tokio::select! {
            () = lost_lease => warn!("lost the leader Lease: stopping the controller"),
            () = signalled(stop_shutdown) => {}
        }
        let _ = stop_tx.send(true);
    });
    run_controllers(ctx.clone(), scopes, stop).await;
    ctx.metrics.is_leader.set(0);
    let shutting_down = *shutdown.borrow();
    release(leading, lease_task).await?;
    if shutting_down {
        Ok(())
    } else {
        anyhow::bail!("lost the leader Lease")
    }
}

/// One controller per watched namespace (or one for all), until `stop` is set.
async fn run_controllers(
    ctx: Arc<Context>,
    scopes: Vec<Option<String>>,
    stop: watch::Receiver<bool>,
) {
    let controllers = scopes
        .into_iter()
        .map(|scope| controller::run(ctx.clone(), scope, signalled(stop.clone())));
    futures::future::join_all(controllers).await;
}

/// Stops renewing and frees the Lease, so a standby takes over at once instead of after expiry.
async fn release(
    leading: watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<
        kube_lease_manager::Result<kube_lease_manager::LeaseManager>,
    >,
) -> anyhow::Result<()> {
    drop(leading);
    let manager = lease_task.await.context("lease task panicked")??;
    manager.release().await.context("releasing the Lease")?;
    Ok(())
}

/// Resolves once the shutdown flag is set.
async fn signalled(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn random_identity() -> String {
    format!("rc-operator-{:016x}", rand::random::<u64>())
}
