//! Multi-process tests of leaderless mode (issue: the node binary, part 2): real rc-node
//! processes on loopback, membership pushed through `PUT /admin/ring` as the operator does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::leaderless::*;
use common::{Cluster, TOKEN};
use rc_api::{MemberState, StreamState};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_read_back_from_any_coordinator() {
    let c = start(3, &[]).await;
    let mut acked = BTreeMap::new();
    for k in 0..60 {
        let (key, value) = (format!("k{k}"), format!("v{k}"));
        assert!(
            put(&c, k % 3, &key, &value, None).await,
            "write {key} failed"
        );
        acked.insert(key, value);
    }
    for i in 0..3 {
        for (key, value) in &acked {
            let v = get(&c, i, key).await.unwrap();
            assert_eq!(
                v["value"],
                json!(value),
                "node {i} coordinating a read of {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_stay_visible_as_siblings_until_resolved() {
    let c = start(3, &["--conflict-resolution", "siblings"]).await;
    // Concurrent writers (no context) through every coordinator.
    let mut acked = Vec::new();
    let writes = (0..9).map(|n| {
        let c = &c;
        async move {
            (
                format!("w{n}"),
                put(c, n % 3, "cart", &format!("w{n}"), None).await,
            )
        }
    });
    for (value, ok) in futures::future::join_all(writes).await {
        if ok {
            acked.push(value);
        }
    }
    acked.sort();
    assert_eq!(acked.len(), 9);
    let read = get(&c, 1, "cart").await.unwrap();
    assert_eq!(
        values(&read),
        acked,
        "an acknowledged concurrent value is missing"
    );
    // Resolve: write with the context of the read; every sibling is superseded.
    let ctx = read["context"].as_str().unwrap().to_string();
    assert!(put(&c, 2, "cart", "merged", Some(&ctx)).await);
    for i in 0..3 {
        assert_eq!(
            values(&get(&c, i, "cart").await.unwrap()),
            vec!["merged".to_string()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_gets_its_hints_and_anti_entropy_makes_replicas_identical() {
    let mut c = start(3, &[]).await;
    for k in 0..20 {
        assert!(put(&c, 0, &format!("before{k}"), "x", None).await);
    }
    c.kill9(2);
    wait_status(&c, 0, "n2 detected down", |s| {
        s.members.iter().any(|m| m.id == "n2" && !m.alive)
    })
    .await;
    let mut acked = Vec::new();
    for k in 0..40 {
        let key = format!("during{k}");
        assert!(
            put(&c, k % 2, &key, "y", None).await,
            "writes must succeed with one node down"
        );
        acked.push(key);
    }
    for key in &acked {
        assert_eq!(
            get(&c, (key.len()) % 2, key).await.unwrap()["value"],
            "y",
            "reads must succeed with one node down"
        );
    }
    let hints: u64 = lstatus(&c, 0).await.hints_queued + lstatus(&c, 1).await.hints_queued;
    assert!(
        hints > 0,
        "writes for the dead node should have been hinted"
    );
    c.spawn(2);
    c.wait_up(2).await;
    wait_status(&c, 0, "hints delivered", |s| s.hints_queued == 0).await;
    wait_status(&c, 1, "hints delivered", |s| s.hints_queued == 0).await;
    for key in &acked {
        assert!(
            local(&c, 2, key).await.is_some(),
            "n2 did not receive the hinted write {key}"
        );
    }
    // Anti-entropy settles anything else; then all replicas agree key by key.
    for i in 0..3 {
        let r = c
            .http
            .post(c.url(i, "/admin/repair"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    for key in acked
        .iter()
        .chain(&(0..20).map(|k| format!("before{k}")).collect::<Vec<_>>())
    {
        let copies: Vec<Option<Value>> =
            futures::future::join_all((0..3).map(|i| local(&c, i, key))).await;
        assert!(
            copies.iter().all(|x| x.is_some() && *x == copies[0]),
            "replicas differ on {key}: {copies:?}"
        );
    }
}

/// Writer that records acknowledged keys until stopped.
fn writer(
    c: &Cluster,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    targets: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    let http = c.http.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 5000 {
            let key = format!("live{n}");
            let target = &targets[n % targets.len()];
            let ok = http
                .put(format!("http://{target}/v1/kv/{key}"))
                .json(&json!({"value": "z"}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                acked.lock().unwrap().push(key);
            }
            n += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_out_and_back_in_loses_no_acknowledged_write() {
    let mut c = start(5, &[]).await;
    // Start as a 3-member ring; n3 and n4 are up but not members yet.
    use MemberState::*;
    let three = ring(&c, 2, &[(0, Normal), (1, Normal), (2, Normal)]);
    assert!(push_ring(&c, 0, &three).await.status().is_success());
    for i in 0..3 {
        wait_status(&c, i, "ring v2", |s| s.ring_version == 2).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let w = writer(
        &c,
        stop.clone(),
        acked.clone(),
        (0..3).map(|i| c.addr(i)).collect(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // (c) 3 -> 5: join, stream, then normal.
    let joining = ring(
        &c,
        3,
        &[
            (0, Normal),
            (1, Normal),
            (2, Normal),
            (3, Joining),
            (4, Joining),
        ],
    );
    assert!(push_ring(&c, 0, &joining).await.status().is_success());
    wait_status(&c, 3, "n3 joined", |s| s.stream == StreamState::Joined).await;
    wait_status(&c, 4, "n4 joined", |s| s.stream == StreamState::Joined).await;
    let five = ring(&c, 4, &(0..5).map(|i| (i, Normal)).collect::<Vec<_>>());
    assert!(push_ring(&c, 1, &five).await.status().is_success());
    for i in 0..5 {
        wait_status(&c, i, "ring v4", |s| s.ring_version == 4).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lstatus(&c, 3).await.keys > 0 && lstatus(&c, 4).await.keys > 0,
        "data did not move to the new owners"
    );

    // (d) 5 -> 3: n3 and n4 leave and hand their ranges over before they stop.
    let leaving = ring(
        &c,
        5,
        &[
            (0, Normal),
            (1, Normal),
            (2, Normal),
            (3, Leaving),
            (4, Leaving),
        ],
    );
    assert!(push_ring(&c, 0, &leaving).await.status().is_success());
    for i in [3, 4] {
        wait_status(&c, i, "ring v5", |s| s.ring_version == 5).await;
        let r = c
            .http
            .post(c.url(i, "/admin/decommission"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    wait_status(&c, 3, "n3 decommissioned", |s| {
        s.stream == StreamState::Decommissioned
    })
    .await;
    wait_status(&c, 4, "n4 decommissioned", |s| {
        s.stream == StreamState::Decommissioned
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    w.await.unwrap();
    let back = ring(&c, 6, &[(0, Normal), (1, Normal), (2, Normal)]);
    assert!(push_ring(&c, 0, &back).await.status().is_success());
    for i in 0..3 {
        wait_status(&c, i, "ring v6", |s| s.ring_version == 6).await;
    }
    c.kill9(3);
    c.kill9(4);

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the writer made too little progress: {}",
        acked.len()
    );
    for key in &acked {
        // With n3/n4 gone, every key is on all three remaining nodes (N=3).
        for i in 0..3 {
            assert!(
                local(&c, i, key).await.is_some(),
                "node {i} lacks {key} after scale-in"
            );
        }
        assert_eq!(
            get(&c, 0, key).await.unwrap()["value"],
            "z",
            "lost acknowledged {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_with_an_empty_disk_is_refilled() {
    let mut c = start(3, &[]).await;
    for k in 0..50 {
        assert!(put(&c, k % 3, &format!("k{k}"), "v", None).await);
    }
    c.kill9(1);
    std::fs::remove_dir_all(&c.nodes[1].data).unwrap();
    // It knows nobody: seed peers let it fetch the ring by gossip.
    let peers = (0..3)
        .map(|i| format!("{}={}", c.nodes[i].id, c.addr(i)))
        .collect::<Vec<_>>()
        .join(",");
    c.args.extend(["--peers".to_string(), peers]);
    c.spawn(1);
    c.wait_up(1).await;
    wait_status(&c, 1, "ring learned from peers", |s| s.ring_version == 1).await;
    let r = c
        .http
        .post(c.url(1, "/admin/repair"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for k in 0..50 {
        assert!(
            local(&c, 1, &format!("k{k}")).await.is_some(),
            "k{k} was not refilled"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rings_and_quorums_get_clear_errors_and_change_nothing() {
    let c = start(3, &[]).await;
    use MemberState::*;
    let dup = json!({"version": 2, "members": [
        {"id": "n0", "address": c.addr(0), "state": "normal"},
        {"id": "n0", "address": c.addr(1), "state": "normal"},
        {"id": "n2", "address": c.addr(2), "state": "normal"}]});
    let cases = [
        (dup, 400, "appears more than once"),
        (
            ring(&c, 0, &[(0, Normal), (1, Normal), (2, Normal)]),
            400,
            "at least 1",
        ),
        (
            ring(&c, 2, &[(0, Normal), (1, Normal)]),
            400,
            "replication factor is 3",
        ),
        (
            json!({"version": 2, "members": [{"id": "n0", "address": c.addr(0), "state": "sleepy"}]}),
            400,
            "unknown variant",
        ),
        (
            json!({"version": 2, "members": [{"id": "n0"}]}),
            400,
            "missing field",
        ),
        (
            json!({"version": 1, "members": [
            {"id": "n0", "address": c.addr(0), "state": "normal"},
            {"id": "n1", "address": c.addr(1), "state": "normal"},
            {"id": "n2", "address": "127.0.0.1:1", "state": "normal"}]}),
            409,
            "different members",
        ),
    ];
    for (body, status, message) in cases {
        let r = push_ring(&c, 0, &body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(message), "{text}");
    }
    let newer = ring(&c, 5, &[(0, Normal), (1, Normal), (2, Normal)]);
    assert!(push_ring(&c, 0, &newer).await.status().is_success());
    let stale = push_ring(
        &c,
        0,
        &ring(&c, 4, &[(0, Normal), (1, Normal), (2, Normal)]),
    )
    .await;
    assert_eq!(stale.status().as_u16(), 409);
    assert_eq!(lstatus(&c, 0).await.ring_version, 5);
    // Per-request quorums outside 1..=N.
    for q in ["w=4", "w=0", "r=9", "r=abc", "x=1"] {
        let r = c
            .http
            .get(c.url(0, &format!("/v1/kv/a?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
    }
    // W > N at start-up is refused with a clear message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rc-node"))
        .args([
            "--mode",
            "leaderless",
            "--node-id",
            "x",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            TOKEN,
        ])
        .args(["--replication-factor", "3", "--write-quorum", "4"])
        .arg("--data-dir")
        .arg(c.dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 <= W <= N"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_survive_a_restart_of_the_node_holding_them() {
    // Compacting every few records puts keys, hints and the ring through snapshots (written in
    // the background) and their replay, not only through the log.
    let mut c = start(3, &["--snapshot-every", "7"]).await;
    c.kill9(2);
    wait_status(&c, 0, "n2 detected down", |s| {
        s.members.iter().any(|m| m.id == "n2" && !m.alive)
    })
    .await;
    // n0 coordinates every write (it owns every key with N=3), so it holds the hints for n2.
    for k in 0..20 {
        assert!(put(&c, 0, &format!("h{k}"), "v", None).await);
    }
    let held = lstatus(&c, 0).await.hints_queued;
    assert!(held > 0, "n0 should hold hints for n2");
    c.restart(0);
    c.wait_up(0).await;
    assert_eq!(
        lstatus(&c, 0).await.hints_queued,
        held,
        "hints must be durable"
    );
    c.spawn(2);
    c.wait_up(2).await;
    wait_status(&c, 0, "hints delivered after both restarts", |s| {
        s.hints_queued == 0
    })
    .await;
    for k in 0..20 {
        assert!(
            local(&c, 2, &format!("h{k}")).await.is_some(),
            "n2 lacks h{k}"
        );
    }
}

/// The log a node replays on restart counts toward its next snapshot: a node restarted more
/// often than it snapshots would otherwise grow its log without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_replayed_at_a_restart_count_toward_the_next_snapshot() {
    // A snapshot every 40 records, give or take 10.
    let mut c = start(3, &["--snapshot-every", "40"]).await;
    let snapshot = c.nodes[2].data.join("snapshot.bin");
    for k in 0..25 {
        assert!(put(&c, 0, &format!("a{k}"), "v", None).await);
    }
    assert!(holds(&c, 2, "a24").await, "n2 never got a24");
    assert!(
        !snapshot.exists(),
        "26 records (the ring and 25 keys): none due yet"
    );
    c.restart(2);
    c.wait_up(2).await;
    for k in 0..25 {
        assert!(put(&c, 0, &format!("b{k}"), "v", None).await);
    }
    assert!(holds(&c, 2, "b24").await, "n2 never got b24");
    // 26 records replayed and 25 written since: past 50, due whatever interval was drawn.
    for _ in 0..200 {
        if snapshot.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("n2 wrote no snapshot after 51 records\n{}", c.logs());
}

/// A rolling upgrade from the version before the binary peer stream runs members that answer
/// only the internal HTTP API next to newer ones. A newer coordinator must still reach them:
/// writes that need every replica (W=3) and reads that ask every replica (R=3) succeed through
/// it, and it says that it switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_peer_stream_still_gets_writes_and_reads() {
    let mut c = start(3, &[]).await;
    c.kill9(2);
    c.args.push("--unsafe-no-peer-stream".into());
    c.spawn(2);
    c.wait_up(2).await;
    wait_status(&c, 0, "n2 alive again", |s| {
        s.members.iter().any(|m| m.id == "n2" && m.alive)
    })
    .await;
    for n in 0..20 {
        let key = format!("mixed{n}");
        let r = c
            .http
            .put(c.url(0, &format!("/v1/kv/{key}?w=3")))
            .json(&json!({"value": "v"}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "W=3 write {key} through n0: {}\n{}",
            r.text().await.unwrap_or_default(),
            c.logs()
        );
        let read = c
            .http
            .get(c.url(0, &format!("/v1/kv/{key}?r=3")))
            .send()
            .await
            .unwrap();
        assert!(read.status().is_success(), "R=3 read of {key} through n0");
        assert!(local(&c, 2, &key).await.is_some(), "n2 lacks {key}");
    }
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(
        log.contains("peer stream refused, HTTP answered"),
        "n0 did not say it switched to HTTP for n2"
    );
}
