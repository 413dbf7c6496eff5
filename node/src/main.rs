//! The rc-node binary: parse flags, set up logs, open storage, serve until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use rc_api::Peer;
use rc_node::config::{Args, FsyncArg, LogFormat};
use rc_node::http;
use rc_node::leaderless::http::{surfaces as leaderless_surfaces, LeaderlessState};
use rc_node::leaderless::node::{LeaderlessConfig, LeaderlessNode};
use rc_node::leaderless::ring;
use rc_node::metrics::Metrics;
use rc_node::security::{Security, SecurityConfig, TlsConfig};
use rc_node::single_leader::http::{surfaces as single_leader_surfaces, AppState};
use rc_node::single_leader::node::{Node, RuntimeConfig};
use rc_node::single_leader::replica::ReplicaConfig;
use rc_node::storage::wal::FsyncPolicy;
use rc_tls::server::CertFiles;

/// mimalloc frees memory allocated by another thread without taking that thread's arena lock.
/// With the system allocator, a snapshot thread freeing the 100,000 log entries it covered
/// held up the request threads' allocations: every client stalled for 30-50 ms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

fn init_tracing(args: &Args) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).context("bad --log-level")?;
    // Colours only for a terminal: log files and `kubectl logs` get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// The admin token and TLS settings from the flags.
fn security(args: &Args, peer_port: Option<u16>) -> anyhow::Result<Arc<Security>> {
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            ca: args
                .tls_ca_file
                .clone()
                .context("--tls-ca-file is required with TLS: peers are verified against it")?,
            server_name: args.tls_server_name.clone(),
        }),
        _ => None,
    };
    let security = Security::load(&SecurityConfig {
        token_file: args.admin_token_file.clone(),
        token: args.admin_token.clone(),
        client_tokens: args.client_token_file.clone(),
        tls,
        peer_port,
    })?;
    security.spawn_reloader();
    Ok(security)
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.node_id.is_empty() {
        bail!("--node-id must not be empty");
    }
    let listeners = Listeners::bind(&args).await?;
    let security = security(&args, listeners.peer_port()?)?;
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None => listeners.client.local_addr()?.to_string(),
    };
    let fsync = match args.fsync {
        FsyncArg::Always => FsyncPolicy::Always,
        FsyncArg::Interval => {
            FsyncPolicy::Interval(Duration::from_millis(args.fsync_interval_ms.max(1)))
        }
    };
    let http_cfg = Arc::new(args.http_config());
    let metrics = Arc::new(Metrics::default());
    if args.mode == rc_api::Mode::Leaderless {
        let cfg = leaderless_config(&args, advertise.clone(), security, fsync)?;
        return run_leaderless(&args, cfg, listeners, advertise, http_cfg, metrics).await;
    }
    let runtime_cfg = RuntimeConfig {
        data_dir: args.data_dir.clone(),
        fsync,
        security: security.clone(),
        heartbeat: args.heartbeat(),
        write_timeout: Duration::from_millis(args.write_timeout_ms),
    };
    let replica_cfg = ReplicaConfig {
        id: args.node_id.clone(),
        address: advertise.clone(),
        replication: args.replication,
        fence_timeout: Duration::from_millis(args.fence_timeout_ms),
        snapshot_every: args.snapshot_every,
        max_batch_entries: 2048,
        max_batch_bytes: 8 << 20,
        seed: rc_node::random::random_seed(),
    };
    let node = Node::open(runtime_cfg, replica_cfg).context("opening the data directory")?;
    let state = AppState {
        node: node.clone(),
        cfg: http_cfg,
        http: security
            .http_client(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()))?,
        metrics,
    };
    tracing::info!(
        node_id = %args.node_id, listen = %args.listen, advertise = %advertise,
        peer_listen = args.peer_listen.as_deref().unwrap_or("(client port)"),
        admin_listen = args.admin_listen.as_deref().unwrap_or("(client port)"),
        replication = ?args.replication, fence_timeout_ms = args.fence_timeout_ms,
        tls = security.acceptor().is_some(),
        "rc-node serving (single-leader mode; waiting for the operator to promote or follow)"
    );
    let handover = Duration::from_millis(args.handover_timeout_ms);
    let stop = hand_over_then_stop(node.clone(), handover);
    serve(
        listeners,
        single_leader_surfaces(state),
        Some(http::PeerStreams::SingleLeader(node.clone())),
        security.acceptor(),
        stop,
    )
    .await;
    node.shut_down();
    tracing::info!("shutting down; every acknowledged write is already durable");
    Ok(())
}

/// Serve in leaderless mode until a signal.
async fn run_leaderless(
    args: &Args,
    cfg: LeaderlessConfig,
    listeners: Listeners,
    advertise: String,
    http_cfg: Arc<rc_node::config::HttpConfig>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    tracing::info!(
        node_id = %args.node_id, listen = %args.listen, advertise = %advertise,
        peer_listen = args.peer_listen.as_deref().unwrap_or("(client port)"),
        admin_listen = args.admin_listen.as_deref().unwrap_or("(client port)"),
        n = cfg.n, w = cfg.w, r = cfg.r, conflict = ?cfg.conflict,
        tls = cfg.security.acceptor().is_some(),
        "rc-node serving (leaderless mode; waiting for the operator's ring)"
    );
    let node = LeaderlessNode::open(cfg).context("opening the data directory")?;
    let surfaces = leaderless_surfaces(LeaderlessState {
        node: node.clone(),
        cfg: http_cfg,
        metrics,
    });
    let tls = node.cfg.security.acceptor();
    let streams = args
        .serves_peer_streams()
        .then(|| http::PeerStreams::Leaderless(node.clone()));
    serve(listeners, surfaces, streams, tls, shutdown_signal()).await;
    node.shut_down();
    tracing::info!("shutting down; every acknowledged write is already durable");
    Ok(())
}

fn leaderless_config(
    args: &Args,
    address: String,
    security: Arc<Security>,
    fsync: FsyncPolicy,
) -> anyhow::Result<LeaderlessConfig> {
    let (n, w, r) = (args.replication_factor, args.write_quorum, args.read_quorum);
    ring::check_quorums(n, w, r).map_err(anyhow::Error::msg)?;
    if !ring::quorums_overlap(n, w, r) {
        tracing::warn!(
            n,
            w,
            r,
            "W + R <= N: a read may miss the latest acknowledged write"
        );
    }
    let mut seeds = Vec::new();
    for p in &args.peers {
        let Some((id, address)) = p.split_once('=') else {
            bail!("--peers entries look like id=host:port (got {p:?})");
        };
        seeds.push(Peer {
            id: id.to_string(),
            address: address.to_string(),
        });
    }
    Ok(LeaderlessConfig {
        id: args.node_id.clone(),
        address,
        n,
        w,
        r,
        conflict: args.conflict_resolution,
        security,
        data_dir: args.data_dir.clone(),
        fsync,
        hint_limit: args.hint_limit,
        anti_entropy_every: Duration::from_secs(args.anti_entropy_interval_seconds),
        tombstone_grace: Duration::from_secs(args.tombstone_grace_seconds),
        request_timeout: Duration::from_millis(args.write_timeout_ms.min(2000)),
        seeds,
        compact_every: args.snapshot_every,
    })
}

/// The node's listeners: clients always; the admin API and peers when they have their own.
struct Listeners {
    client: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    peer: Option<tokio::net::TcpListener>,
}

impl Listeners {
    async fn bind(args: &Args) -> anyhow::Result<Self> {
        let optional = |address: &Option<String>| {
            let address = address.clone();
            async move {
                match address {
                    Some(a) => bind(&a).await.map(Some),
                    None => Ok(None),
                }
            }
        };
        Ok(Listeners {
            client: bind(&args.listen).await?,
            admin: optional(&args.admin_listen).await?,
            peer: optional(&args.peer_listen).await?,
        })
    }

    /// The cluster's peer port, when peers have a listener of their own.
    fn peer_port(&self) -> anyhow::Result<Option<u16>> {
        Ok(match &self.peer {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        })
    }
}

async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}

/// Serves every surface on its listener until `stop`. The peer stream (`streams`) is accepted
/// where peers are: the peer port, else the client port.
async fn serve(
    listeners: Listeners,
    surfaces: http::Surfaces,
    streams: Option<http::PeerStreams>,
    tls: Option<rc_tls::tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    let token = tokio_util::sync::CancellationToken::new();
    let (client, admin, peer) = surfaces.split(listeners.admin.is_some(), listeners.peer.is_some());
    let on_client = streams.clone().filter(|_| listeners.peer.is_none());
    let stopped = || token.clone().cancelled_owned();
    let optional = |listener: Option<tokio::net::TcpListener>,
                    router: Option<axum::Router>,
                    replication: Option<http::PeerStreams>| {
        let tls = tls.clone();
        let stopped = stopped();
        async move {
            if let (Some(listener), Some(router)) = (listener, router) {
                http::serve(listener, router, replication, tls, stopped).await;
            }
        }
    };
    tokio::join!(
        async {
            stop.await;
            token.cancel();
        },
        http::serve(listeners.client, client, on_client, tls.clone(), stopped()),
        optional(listeners.admin, admin, None),
        optional(listeners.peer, peer, streams),
    );
}

/// Resolves when the node should stop serving. A follower stops at SIGTERM. A leader keeps
/// serving until the operator, seeing its pod terminate, has fenced it and promoted a
/// follower (a planned hand-over: no election timeout for clients to wait out), or until
/// `limit`; a second signal stops it at once.
async fn hand_over_then_stop(node: std::sync::Arc<Node>, limit: Duration) {
    shutdown_signal().await;
    let leading = node.health(u64::MAX);
    if leading.role != rc_api::Role::Leader || limit.is_zero() {
        return;
    }
    tracing::info!(
        epoch = leading.epoch,
        limit_ms = limit.as_millis() as u64,
        "SIGTERM while leading: serving until the operator hands leadership to a follower"
    );
    let handed_over = async {
        loop {
            let now = node.health(u64::MAX);
            if now.role != rc_api::Role::Leader || now.epoch != leading.epoch {
                tracing::info!(
                    epoch = now.epoch,
                    leader = now.leader.as_deref().unwrap_or("-"),
                    "leadership handed over; stopping"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = handed_over => {}
        () = tokio::time::sleep(limit) => tracing::warn!(
            limit_ms = limit.as_millis() as u64,
            "no hand-over in time; stopping as leader (the operator fails over)"
        ),
        () = shutdown_signal() => tracing::warn!("second signal; stopping as leader"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
