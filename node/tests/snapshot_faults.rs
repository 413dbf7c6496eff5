//! A randomized fault schedule through background snapshots (single-leader).
//!
//! Three rc-node processes compact every few dozen entries, so snapshots are being written in
//! the background nearly all the time, while a random member is killed (`kill -9`) at a random
//! moment, round after round; a killed leader is replaced at once (fence + promote, no delay).
//! The laws: no acknowledged write is lost, every member comes back with the same data, and
//! the history of concurrent clients is linearizable. The seed is printed; `RC_FAULT_SEED`
//! replays a schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/history.rs"]
mod history;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use history::{linearizable, spawn_clients, History};

const ROUNDS: usize = 6;

/// xorshift64: the schedule's only source of randomness, so a seed replays it.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn seed() -> u64 {
    std::env::var("RC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        .max(1)
}

/// Write `count` fresh keys `prefix{n}` (1 KiB values, so snapshots take a while) to `node`;
/// return the keys that were acknowledged.
async fn write_keys(c: &Cluster, node: usize, prefix: &str, count: u64) -> Vec<String> {
    let value = "v".repeat(1024);
    let mut acked = Vec::new();
    for n in 0..count {
        let key = format!("{prefix}{n}");
        if c.put(node, &key, &value)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            acked.push(key);
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_through_background_snapshots_lose_no_acknowledged_write() {
    let seed = seed();
    eprintln!("fault schedule seed {seed} (RC_FAULT_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut c = Cluster::start(3, &["--replication", "quorum", "--snapshot-every", "30"]);
    let mut leader = c.bootstrap().await;
    let mut epoch = 1;
    let history = History::new();
    let targets = Arc::new(Mutex::new((0..3).map(|i| c.addr(i)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(history.clone(), targets.clone(), 3, 4, stop.clone());

    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let count = 40 + rng.below(60);
        acked.extend(write_keys(&c, leader, &format!("r{round}-"), count).await);
        let victim = rng.below(3) as usize;
        let was_leader = victim == leader;
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        c.kill9(victim);
        eprintln!("round {round}: killed node {victim} (leader: {was_leader})");
        if was_leader {
            epoch += 1;
            let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
            leader = c.failover(&others, epoch).await;
            c.wait_leader_ready(leader).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        c.spawn(victim);
        c.wait_up(victim).await;
    }
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.await.unwrap();
    }

    let leader_status = c.status(leader).await.unwrap();
    for i in 0..3 {
        c.wait_applied(i, leader_status.commit_index).await;
        let s = c.status(i).await.unwrap();
        assert!(s.snapshot_index > 0, "node {i} never compacted: {s:?}");
    }
    for key in &acked {
        assert!(
            c.get(leader, key, "linearizable").await.is_some(),
            "lost acknowledged {key} (seed {seed})\n{}",
            c.logs()
        );
        for i in 0..3 {
            assert!(
                c.get(i, key, "stale").await.is_some(),
                "node {i} lacks acknowledged {key} (seed {seed})"
            );
        }
    }
    let counts = format!("{:?}", history.counts.lock().unwrap());
    eprintln!(
        "{} keys acknowledged, history {counts}, final epoch {epoch}",
        acked.len()
    );
    assert!(acked.len() > ROUNDS * 30, "too few writes acknowledged");
    assert!(
        linearizable(&history.ops()),
        "history is not linearizable (seed {seed})\n{}",
        c.logs()
    );
}
