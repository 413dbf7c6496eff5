//! Multi-process fault tests of single-leader mode (issue: the node binary, part 1).
//!
//! Three real rc-node processes on loopback; the test plays the operator through the admin API.
//! Concurrent clients record histories that Porcupine checks for linearizability.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/history.rs"]
mod history;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use history::{linearizable, spawn_clients, History, Op};
use rc_api::Role;
use serde_json::json;

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Write `count` fresh keys `prefix{n}` to `node`; return the keys that were acknowledged.
async fn write_keys(c: &Cluster, node: usize, prefix: &str, count: usize) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0..count {
        let key = format!("{prefix}{n}");
        match c.put(node, &key, "v").await {
            Ok(r) if r.status().is_success() => acked.push(key),
            Ok(r) => eprintln!(
                "put {key}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(e) => eprintln!("put {key}: {e}"),
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_every_node_serves_them_stale() {
    let c = Cluster::start(3, &[]);
    let leader = c.bootstrap().await;
    let acked = write_keys(&c, leader, "a", 50).await;
    assert_eq!(acked.len(), 50);
    let commit = c.status(leader).await.unwrap().commit_index;
    for i in 0..3 {
        c.wait_applied(i, commit).await;
        for key in &acked {
            assert_eq!(
                c.get(i, key, "stale").await.as_deref(),
                Some("v"),
                "node {i} lacks {key}"
            );
        }
    }
    // A write sent to a follower is redirected to the leader.
    let r = c.put(1, "x", "1").await.unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(r.headers()["location"], c.url(leader, "/v1/kv/x").as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_survive_leader_kill_and_history_is_linearizable() {
    let mut c = Cluster::start(3, &["--replication", "quorum"]);
    let leader = c.bootstrap().await;
    assert_eq!(leader, 0);
    let history = History::new();
    let targets = Arc::new(Mutex::new((0..3).map(|i| c.addr(i)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(history.clone(), targets.clone(), 4, 4, stop.clone());

    // A separate writer of unique keys: every key acknowledged must survive.
    let acked_before = write_keys(&c, 0, "before", 100).await;
    c.kill9(0);
    targets.lock().unwrap().retain(|a| *a != c.addr(0));
    let new_leader = c.failover(&[1, 2], 2).await;
    c.wait_leader_ready(new_leader).await;
    sleep_ms(500).await;

    // The old leader returns: it must follow epoch 2 and catch up.
    c.spawn(0);
    c.wait_up(0).await;
    targets.lock().unwrap().push(c.addr(0));
    sleep_ms(700).await;
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.await.unwrap();
    }

    for key in &acked_before {
        assert_eq!(
            c.get(new_leader, key, "linearizable").await.as_deref(),
            Some("v"),
            "lost acknowledged {key}"
        );
    }
    let s0 = c.status(0).await.unwrap();
    assert_eq!(
        (s0.role, s0.epoch),
        (Role::Follower, 2),
        "old leader did not follow the new epoch"
    );
    let counts = history.counts.lock().unwrap();
    eprintln!("history: {counts:?}");
    assert!(
        counts.ok > 50,
        "too few operations completed to mean anything: {counts:?}"
    );
    drop(counts);
    assert!(
        linearizable(&history.ops()),
        "history is not linearizable\n{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_leader_returns_as_follower_and_drops_its_unacknowledged_suffix() {
    let mut c = Cluster::start(3, &["--write-timeout-ms", "300"]);
    c.bootstrap().await;
    let acked = write_keys(&c, 0, "acked", 20).await;
    assert_eq!(acked.len(), 20);
    // Cut the leader off from both followers; it appends writes it can never commit.
    c.pause(1);
    c.pause(2);
    let orphans = write_keys(&c, 0, "orphan", 3).await;
    assert!(
        orphans.is_empty(),
        "a write was acknowledged without a quorum: {orphans:?}"
    );
    let old = c.status(0).await.unwrap();
    assert!(
        old.last_log.index > old.commit_index,
        "the old leader should hold an uncommitted suffix"
    );
    c.kill9(0);
    c.resume(1);
    c.resume(2);
    let leader = c.failover(&[1, 2], 2).await;
    c.wait_leader_ready(leader).await;
    let after = write_keys(&c, leader, "after", 5).await;
    assert_eq!(after.len(), 5);

    c.spawn(0);
    c.wait_up(0).await;
    let target = c.status(leader).await.unwrap().commit_index;
    c.wait_applied(0, target).await;
    let s0 = c.status(0).await.unwrap();
    assert_eq!(
        (s0.role, s0.epoch, s0.leader.as_deref()),
        (Role::Follower, 2, Some(c.nodes[leader].id.as_str()))
    );
    // An unacknowledged write may survive (a follower may have received it before the
    // failover) or vanish; either way the returning node must agree with the new leader.
    for n in 0..3 {
        let key = format!("orphan{n}");
        let on_leader = c.get(leader, &key, "linearizable").await;
        assert_eq!(
            c.get(0, &key, "stale").await,
            on_leader,
            "{key} differs from the new leader\n{}",
            c.logs()
        );
    }
    assert_eq!(
        c.status(0).await.unwrap().last_log,
        c.status(leader).await.unwrap().last_log
    );
    for key in acked.iter().chain(&after) {
        assert_eq!(c.get(0, key, "stale").await.as_deref(), Some("v"));
    }
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(
        log.contains("truncating a divergent log suffix"),
        "truncation was not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_cannot_acknowledge_after_failover() {
    // The promotion comes at once, with no delay, and the old leader is paused for less than
    // its fence timeout: it wakes believing it still leads. Safety must come from the epochs
    // alone, which is what lets the operator fail over without a fixed wait.
    let c = Cluster::start(3, &["--fence-timeout-ms", "5000"]);
    c.bootstrap().await;
    let history = History::new();
    let targets = Arc::new(Mutex::new((0..3).map(|i| c.addr(i)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(history.clone(), targets.clone(), 4, 4, stop.clone());
    sleep_ms(300).await;

    c.pause(0);
    let leader = c.failover(&[1, 2], 2).await;
    c.wait_leader_ready(leader).await;
    sleep_ms(1200).await;
    c.resume(0);
    // The old leader's very first decisions after waking must not acknowledge a write.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut refused = BTreeSet::new();
    for n in 0..5 {
        let r = direct
            .put(c.url(0, &format!("/v1/kv/zombie{n}")))
            .json(&serde_json::json!({"value": "x"}))
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status().as_u16(),
            200,
            "the deposed leader acknowledged a write"
        );
        refused.insert(r.status().as_u16());
    }
    eprintln!("deposed leader answered {refused:?}");
    sleep_ms(500).await;
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        h.await.unwrap();
    }
    for n in 0..5 {
        assert_eq!(
            c.get(leader, &format!("zombie{n}"), "linearizable").await,
            None
        );
    }
    let s0 = c.status(0).await.unwrap();
    assert_eq!((s0.role, s0.epoch), (Role::Follower, 2));
    assert!(
        linearizable(&history.ops()),
        "history is not linearizable\n{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restarted_after_kill_9_keep_every_acknowledged_write() {
    let mut c = Cluster::start(3, &["--snapshot-every", "50"]);
    let leader = c.bootstrap().await;
    let acked = write_keys(&c, leader, "k", 120).await;
    assert_eq!(acked.len(), 120);
    // A follower first: it comes back, replays log + snapshot, and catches up.
    c.restart(2);
    c.wait_up(2).await;
    let commit = c.status(leader).await.unwrap().commit_index;
    c.wait_applied(2, commit).await;
    for key in &acked {
        assert_eq!(c.get(2, key, "stale").await.as_deref(), Some("v"));
    }
    // Then the whole cluster at once.
    for i in 0..3 {
        c.restart(i);
    }
    for i in 0..3 {
        c.wait_up(i).await;
        let s = c.status(i).await.unwrap();
        assert_eq!(
            s.role,
            Role::Follower,
            "a restarted node must not lead by itself"
        );
        assert!(
            s.snapshot_index > 0,
            "node {i} should have compacted into a snapshot"
        );
    }
    let leader = c.failover(&[0, 1, 2], 2).await;
    c.wait_leader_ready(leader).await;
    for key in &acked {
        assert_eq!(
            c.get(leader, key, "linearizable").await.as_deref(),
            Some("v"),
            "lost {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_is_caught_up_by_snapshot() {
    let mut c = Cluster::start(3, &["--snapshot-every", "20"]);
    let leader = c.bootstrap().await;
    c.kill9(2);
    let acked = write_keys(&c, leader, "s", 100).await;
    assert_eq!(acked.len(), 100, "two of three nodes are a quorum");
    c.spawn(2);
    c.wait_up(2).await;
    let commit = c.status(leader).await.unwrap().commit_index;
    c.wait_applied(2, commit).await;
    for key in &acked {
        assert_eq!(c.get(2, key, "stale").await.as_deref(), Some("v"));
    }
    let log = std::fs::read_to_string(&c.nodes[2].log).unwrap();
    assert!(
        log.contains("installing a snapshot from the leader"),
        "catch-up did not use a snapshot"
    );
}

/// The checker must be able to fail: with reads that skip the read-index round, a deposed
/// leader serves a value that a newer write has already replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_stale_reads_served_as_linearizable() {
    for (bug, expect_linearizable) in [(true, false), (false, true)] {
        let flags: &[&str] = if bug {
            &["--unsafe-skip-read-barrier"]
        } else {
            &[]
        };
        let c = Cluster::start(3, flags);
        c.bootstrap().await;
        let h = History::new();
        let op = |op: &'static str, value: &str, found: bool, call: u64| Op {
            client: 0,
            op,
            key: "a".into(),
            value: value.into(),
            found,
            call,
            ret: h.now(),
            unknown: false,
        };
        let t = h.now();
        assert!(c.put(0, "a", "1").await.unwrap().status().is_success());
        let put1 = op("put", "1", true, t);
        c.pause(0);
        // The new leader does not replicate to n0, so n0 cannot learn the new value by itself
        // and its answer depends only on whether it runs the read-index round.
        for i in [1, 2] {
            c.fence(i, 2).await.unwrap();
        }
        c.promote_with(1, 2, &[2]).await;
        assert!(c.follow(2, 2, 1).await);
        c.wait_leader_ready(1).await;
        let t = h.now();
        assert!(c.put(1, "a", "2").await.unwrap().status().is_success());
        let put2 = op("put", "2", true, t);
        c.resume(0);
        let t = h.now();
        let r = c.http.get(c.url(0, "/v1/kv/a")).send().await.unwrap();
        let mut ops = vec![put1, put2];
        if r.status().is_success() {
            let v: serde_json::Value = r.json().await.unwrap();
            ops.push(op("get", v["value"].as_str().unwrap(), true, t));
        }
        assert_eq!(
            linearizable(&ops),
            expect_linearizable,
            "bug={bug}: {ops:?}"
        );
    }
}

/// The operator re-promotes the leader (same epoch) when a follower's address changes, e.g. a
/// pod that had no IP yet at promotion: the leader must start replicating to the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_promote_with_a_new_follower_address_reconnects_to_it() {
    let c = Cluster::start(3, &[]);
    for i in 0..3 {
        c.wait_up(i).await;
        c.fence(i, 1).await.unwrap();
    }
    let wrong = json!([
        {"id": "n1", "address": c.addr(1)},
        {"id": "n2", "address": "127.0.0.1:1"},
    ]);
    let promote = |followers: serde_json::Value| {
        c.http
            .post(c.url(0, "/admin/promote"))
            .bearer_auth(common::TOKEN)
            .json(&json!({"epoch": 1, "followers": followers}))
            .send()
    };
    assert!(promote(wrong).await.unwrap().status().is_success());
    c.wait_leader_ready(0).await;
    let acked = write_keys(&c, 0, "k", 10).await;
    assert_eq!(acked.len(), 10, "n0 and n1 are a majority");
    assert_eq!(
        c.status(2).await.unwrap().applied_index,
        0,
        "n2 was never reached"
    );
    let right = json!([
        {"id": "n1", "address": c.addr(1)},
        {"id": "n2", "address": c.addr(2)},
    ]);
    assert!(promote(right).await.unwrap().status().is_success());
    let commit = c.status(0).await.unwrap().commit_index;
    c.wait_applied(2, commit).await;
    for key in &acked {
        assert_eq!(c.get(2, key, "stale").await.as_deref(), Some("v"));
    }
}

/// `GET /admin/status?waitForChange=<token>` on node `i`: the answer and how long it took.
async fn watch(
    c: &Cluster,
    i: usize,
    token: &str,
    timeout_ms: u64,
) -> (rc_api::NodeStatus, Duration) {
    let started = std::time::Instant::now();
    let r = c
        .http
        .get(c.url(i, "/admin/status"))
        .query(&[
            ("waitForChange", token.to_owned()),
            ("timeoutMs", timeout_ms.to_string()),
            ("leaderLossMs", "500".to_owned()),
        ])
        .bearer_auth(common::TOKEN)
        .timeout(Duration::from_millis(timeout_ms + 5000))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    (r.json().await.unwrap(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_feed_answers_when_a_follower_loses_its_leader() {
    let c = Cluster::start(3, &[]);
    let leader = c.bootstrap().await;
    let follower = (leader + 1) % 3;
    let health = |s: &rc_api::NodeStatus| rc_api::Health::of(s.single_leader().unwrap(), 500);
    let now = health(&c.node_status(follower).await.unwrap());
    assert!(!now.leader_contact_lost, "{now:?}");

    // Unchanged: the request waits out its timeout and answers the same health.
    let (same, took) = watch(&c, follower, &now.token(), 400).await;
    assert_eq!(health(&same), now);
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}"
    );
    // A token the node does not have: answered at once.
    let (at_once, _) = watch(&c, follower, "Leader/0/-/serving/contact", 20_000).await;
    assert_eq!(health(&at_once), now);

    // The leader hangs: the follower's feed answers once contact is 500 ms old, well before
    // the 20 s timeout, and says so.
    c.pause(leader);
    let (lost, took) = watch(&c, follower, &now.token(), 20_000).await;
    c.resume(leader);
    let lost = health(&lost);
    assert!(lost.leader_contact_lost, "{lost:?} after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "answered only after {took:?}"
    );

    // Bad feed parameters are a 400, not a hang.
    let r = c
        .http
        .get(c.url(follower, "/admin/status?timeoutMs=soon"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A batch used to wedge replication (followers could not decode it, so nothing committed after
/// it) and could not be replayed after a restart. It must reach every node, commit, and survive
/// every node restarting from its own log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_replicates_commits_and_survives_every_node_restarting() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.bootstrap().await;
    let ops = json!({"ops": [
        {"op": "put", "key": "b1", "value": "1"},
        {"op": "put", "key": "b2", "value": "2"},
        {"op": "delete", "key": "b1"}
    ]});
    let r = c
        .http()
        .post(c.url(leader, "/v1/batch"))
        .json(&ops)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}\n{}", r.status(), c.logs());
    let index = r.json::<serde_json::Value>().await.unwrap()["index"]
        .as_u64()
        .unwrap();
    for i in 0..3 {
        c.wait_applied(i, index).await;
    }
    let after = c.put(leader, "after", "x").await.unwrap();
    assert!(
        after.status().is_success(),
        "{}\n{}",
        after.status(),
        c.logs()
    );
    for i in 0..3 {
        c.restart(i);
    }
    for i in 0..3 {
        c.wait_up(i).await;
    }
    let leader = c.failover(&[0, 1, 2], 2).await;
    c.wait_leader_ready(leader).await;
    assert_eq!(
        c.get(leader, "b2", "linearizable").await.as_deref(),
        Some("2")
    );
    assert_eq!(c.get(leader, "b1", "linearizable").await, None);
    assert_eq!(
        c.get(leader, "after", "linearizable").await.as_deref(),
        Some("x")
    );
}
