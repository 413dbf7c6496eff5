//! Benchmark (prints figures, asserts nothing): one operator's health feed following many
//! single-leader clusters. Its CPU and memory at steady state, and how long a node's health
//! change takes to wake the reconcile of its cluster.
//!
//! ```sh
//! cargo run --release -p rc-operator --example feed_scale -- 100
//! ```
//!
//! The nodes are a faithful fake of the admin API's feed in a child process (this same binary,
//! `serve N`): `GET /admin/status?waitForChange=&timeoutMs=&leaderLossMs=` answers a full
//! `NodeStatus` as soon as the node's health token differs from the one given, else after the
//! timeout, exactly as rc-node does; `POST /flip` changes its health (leader contact lost or
//! back). So the figures measured in this process are the feed's alone: the real `Feed`, the
//! real `HttpNodeAdmin`, one long-poll per node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use rc_api::{
    Health, LogPosition, ModeStatus, NodeStatus, Replication, RequestStats, Role,
    SingleLeaderStatus, StatusQuery,
};
use rc_operator::feed::{cluster_ref, Feed, Target};
use rc_operator::metrics::Metrics;
use rc_operator::node_client::HttpNodeAdmin;
use tokio::sync::watch;

const NODES_PER_CLUSTER: usize = 3;
const STEADY: Duration = Duration::from_secs(20);
const FLIPS: usize = 40;
const LOSS_MS: u64 = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("serve") => runtime.block_on(serve(args[2].parse().unwrap())),
        other => {
            let clusters = other.and_then(|n| n.parse().ok()).unwrap_or(100);
            runtime.block_on(bench(clusters));
        }
    }
}

// ---- the fake nodes (child process) -------------------------------------------------------

#[derive(Clone)]
struct FakeNode {
    id: String,
    lost: Arc<AtomicBool>,
    changed: watch::Sender<u64>,
}

impl FakeNode {
    fn status(&self) -> NodeStatus {
        let lost = self.lost.load(Ordering::Relaxed);
        NodeStatus {
            node_id: self.id.clone(),
            stats: RequestStats::default(),
            credentials: Default::default(),
            detail: ModeStatus::SingleLeader(SingleLeaderStatus {
                incarnation: 7,
                config: None,
                role: Role::Follower,
                epoch: 3,
                leader: Some("leader".into()),
                last_log: LogPosition {
                    epoch: 3,
                    index: 1_000,
                },
                commit_index: 1_000,
                applied_index: 1_000,
                snapshot_index: 0,
                followers: Vec::new(),
                ms_since_leader_contact: Some(if lost { 5_000 } else { 20 }),
                self_fenced: false,
                replication: Replication::Quorum,
            }),
        }
    }
}

async fn status(State(node): State<FakeNode>, Query(q): Query<StatusQuery>) -> Json<NodeStatus> {
    let token = |n: &FakeNode| {
        Health::of(
            n.status().single_leader().unwrap(),
            q.leader_loss_ms.unwrap_or(LOSS_MS),
        )
        .token()
    };
    if let Some(seen) = q.wait_for_change {
        let mut changes = node.changed.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(q.timeout_ms.unwrap_or(10_000).min(30_000));
        while token(&node) == seen {
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    Json(node.status())
}

async fn flip(State(node): State<FakeNode>) -> &'static str {
    node.lost.fetch_xor(true, Ordering::Relaxed);
    node.changed.send_modify(|v| *v += 1);
    "flipped"
}

async fn serve(nodes: usize) {
    let mut addresses = Vec::new();
    for i in 0..nodes {
        let (changed, _) = watch::channel(0);
        let node = FakeNode {
            id: format!("n{i}"),
            lost: Arc::default(),
            changed,
        };
        let app = Router::new()
            .route("/admin/status", get(status))
            .route("/flip", post(flip))
            .with_state(node);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    for a in &addresses {
        println!("{a}");
    }
    println!("ready");
    std::future::pending::<()>().await;
}

// ---- the benchmark (this process: the feed only) ------------------------------------------

/// User plus system CPU time of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Starts `nodes` fake nodes in a child process (this binary, `serve N`); their addresses.
fn spawn_fake_nodes(nodes: usize) -> (std::process::Child, Vec<SocketAddr>) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["serve", &nodes.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        addresses.push(line.parse().unwrap());
    }
    assert_eq!(addresses.len(), nodes);
    (child, addresses)
}

async fn bench(clusters: usize) {
    let nodes = clusters * NODES_PER_CLUSTER;
    let (mut child, addresses) = spawn_fake_nodes(nodes);

    let admin = HttpNodeAdmin::new(Duration::from_secs(2), Duration::from_millis(250)).unwrap();
    let feed = Feed::new(Arc::new(admin), Arc::new(Metrics::default()));
    let mut triggers = Box::pin(feed.triggers(None));
    let healthy = Health::new(
        Role::Follower,
        3,
        Some("leader".into()),
        false,
        Some(20),
        LOSS_MS,
    );
    for c in 0..clusters {
        let targets: Vec<Target> = (0..NODES_PER_CLUSTER)
            .map(|i| Target {
                name: format!("c{c}-{i}"),
                address: addresses[c * NODES_PER_CLUSTER + i].to_string(),
                seen: Some(healthy.token()),
            })
            .collect();
        feed.watch(
            &cluster_ref(&format!("c{c}"), "bench"),
            &rc_operator::node_client::NodeAccess::plain("token"),
            LOSS_MS,
            &targets,
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (cpu0, wall0) = (cpu_time(), Instant::now());
    let quiet = tokio::time::timeout(STEADY, triggers.next()).await;
    let cpu = (cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib();
    let spurious = usize::from(quiet.is_ok());

    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    for k in 0..FLIPS {
        let c = (k * 37) % clusters;
        let node = addresses[c * NODES_PER_CLUSTER + 1 + k % 2];
        let want = cluster_ref(&format!("c{c}"), "bench");
        let t0 = Instant::now();
        http.post(format!("http://{node}/flip"))
            .send()
            .await
            .unwrap();
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), triggers.next())
                .await
                .expect("no trigger within 5 s")
                .unwrap();
            if got == want {
                break;
            }
        }
        latencies.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "feed_scale: {clusters} clusters x {NODES_PER_CLUSTER} nodes = {nodes} long-polls ({} followed)",
        feed.followed()
    );
    println!(
        "  steady state over {} s: CPU {cpu:.2} % of one core, RSS {rss:.1} MiB, {spurious} spurious wake-ups",
        STEADY.as_secs()
    );
    println!(
        "  health change -> reconcile trigger ({FLIPS} changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (plus the node's own 20 ms poll step in rc-node)",
        ms(latencies[FLIPS / 2]),
        ms(latencies[(FLIPS * 99) / 100]),
        ms(latencies[FLIPS - 1])
    );
    let _ = child.kill();
    let _ = child.wait();
}
