//! rc-bench: start a local 3-node rc-node cluster and measure it (a benchmark, not a test).
//!
//! Prints write and read throughput and p50/p99 latency at 1, 16 and 64 concurrent clients for
//! `Async` and `Quorum` replication, and the unavailability window of a leader kill with an
//! immediate promote. With `--etcd`, runs the same load against a 3-member etcd cluster
//! (JSON gateway) on this machine and prints our figures over etcd's.
//!
//! Run: `cargo build --release -p rc-node -p rc-bench && target/release/rc-bench [--etcd] [--seconds 3]`

mod background;
mod cluster;
mod etcd;
mod load;
mod procs;
mod scenarios;
mod wire;

/// What every module of the benchmark uses.
mod prelude {
    pub use std::net::TcpListener;
    pub use std::path::{Path, PathBuf};
    pub use std::process::{Child, Command, Stdio};
    pub use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub use std::sync::Arc;
    pub use std::time::{Duration, Instant};

    pub use anyhow::{bail, Context};
    pub use rc_api::{LeaderlessStatus, NodeStatus, StreamState};
    pub use rc_tls::rustls::ClientConfig;
    pub use serde_json::json;

    pub use crate::background::*;
    pub use crate::cluster::*;
    pub use crate::etcd::*;
    pub use crate::load::*;
    pub use crate::procs::*;
    pub use crate::scenarios::*;
    pub use crate::Args;
}

use clap::Parser;
use prelude::*;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a local 3-node rc-node cluster (optionally against etcd)")]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Concurrent client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Also run the load against a 3-member etcd cluster.
    #[arg(long)]
    pub etcd: bool,
    /// etcd binary (default: $RC_KUBE_BIN/etcd, ~/.cache/rc-kube/*/etcd, then PATH).
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    /// What to measure: single-leader `async`, `quorum`, and `leaderless` (N=3, W=2, R=2);
    /// `none` for only the other measurements (`--stall-keys`).
    #[arg(long, value_delimiter = ',', default_value = "async,quorum,leaderless")]
    pub modes: Vec<String>,
    /// Keys (1 KiB values) on the 3 members before a fourth joins, for the join's streaming rate
    /// (0: skip it).
    #[arg(long, default_value_t = 50_000)]
    pub join_keys: usize,
    /// Keys on a single-leader leader for the snapshot-stall measurement (0: skip it).
    #[arg(long, default_value_t = 0)]
    pub stall_keys: usize,
    /// Keys on each of 3 leaderless members for the background-work stall measurement
    /// (a run with nothing, one through snapshots, one through anti-entropy; 0: skip it).
    #[arg(long, default_value_t = 0)]
    pub background_keys: usize,
    /// The rc-node load runs (both modes) over TLS (a test CA; clients verify it), as on
    /// Kubernetes; the join, stall and failover measurements stay plain.
    #[arg(long)]
    pub tls: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let etcd = if args.etcd {
        Some(etcd_baseline(&http, &args).await?)
    } else {
        None
    };
    for mode in &args.modes {
        if mode == "none" {
            continue;
        }
        if mode == "leaderless" {
            bench_leaderless(&http, &args, etcd.as_deref()).await?;
            if args.join_keys > 0 {
                bench_join(&http, args.join_keys, 1024).await?;
            }
            continue;
        }
        let (c, target) = if args.tls {
            start_rc_tls(mode).await?
        } else {
            (start_rc(&http, mode).await?, Target::RC)
        };
        let tls = if args.tls { ", TLS" } else { "" };
        println!("rc-node, 3 nodes, replication={mode}, fsync=always (group commit){tls}");
        let servers = Servers {
            target: &target,
            addrs: &c.addrs[..1],
            procs: &c.procs,
        };
        for (i, &clients) in args.clients.iter().enumerate() {
            let base = etcd.as_ref().and_then(|e| e.get(i)).copied();
            let w = load(&servers, clients, args.seconds, true).await;
            row(&format!("rc put, {clients} clients"), w, base.map(|b| b.0));
            let r = load(&servers, clients, args.seconds, false).await;
            row(
                &format!("rc get (linearizable), {clients} clients"),
                r,
                base.map(|b| b.1),
            );
        }
        drop(c);
    }
    if args.stall_keys > 0 {
        bench_snapshot_stall(&http, args.stall_keys, args.seconds).await?;
    }
    if args.background_keys > 0 {
        bench_leaderless_background(&http, args.background_keys, args.seconds).await?;
    }
    let mut windows = Vec::new();
    for _ in 0..3 {
        windows.push(failover_window(&http).await?);
    }
    windows.sort();
    println!(
        "leader kill -> first acknowledged write on the new leader (immediate fence+promote): median {:.1} ms over {} runs",
        windows[1].as_secs_f64() * 1000.0,
        windows.len()
    );
    Ok(())
}

/// The same load against a 3-member etcd cluster: (put, get) figures per client count.
async fn etcd_baseline(
    http: &reqwest::Client,
    args: &Args,
) -> anyhow::Result<Vec<(Figures, Figures)>> {
    let bin = etcd_bin(&args.etcd_bin)?;
    println!("starting a 3-member etcd cluster ({})", bin.display());
    let (addrs, procs, dir) = start_etcd(http, &bin).await?;
    let leader = etcd_leader(http, &addrs).await;
    let mut figures = Vec::new();
    let servers = Servers {
        target: &Target::Etcd,
        addrs: std::slice::from_ref(&leader),
        procs: &procs,
    };
    for &clients in &args.clients {
        let w = load(&servers, clients, args.seconds, true).await;
        let r = load(&servers, clients, args.seconds, false).await;
        row(&format!("etcd put, {clients} clients"), w, None);
        row(
            &format!("etcd get (linearizable), {clients} clients"),
            r,
            None,
        );
        figures.push((w, r));
    }
    drop(procs);
    drop(dir);
    Ok(figures)
}
