//! The failover executor against real rc-node processes on loopback (no Kubernetes): bootstrap,
//! then `kill -9` of the leader, with an acknowledged write that must survive.
//!
//! Needs the rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo
//! test` builds it), or its path in `RC_NODE_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{auth, Nodes};
use rc_api::{EpochRequest, Role, SingleLeaderStatus};
use rc_operator::controller::leader::health_targets;
use rc_operator::failover::execute::{drive, refresh, Report};
use rc_operator::failover::{Action, Member, PodState, Timing, View};
use rc_operator::feed::{cluster_ref, Feed};
use rc_operator::metrics::Metrics;
use rc_operator::node_client::{HttpNodeAdmin, NodeAdmin};

/// `leaderLossTimeoutMs`: followers that have not heard from the leader this long lost it.
const LOSS: Duration = Duration::from_secs(1);
/// Single-leader nodes; a leader fences itself 500 ms after it stops hearing a majority.
const SINGLE_LEADER: &[&str] = &["--fence-timeout-ms", "500"];

impl Nodes {
    /// What the operator would see: every pod exists and is ready, each node at its address.
    fn view(&self) -> View {
        View {
            desired: self.count(),
            had_voters: false,
            members: (0..self.count())
                .map(|i| Member {
                    name: format!("orders-{i}"),
                    address: Some(self.addr(i)),
                    stable_address: self.addr(i),
                    pod: PodState::Ready,
                    role_label: None,
                    node: Err("not observed yet".into()),
                })
                .collect(),
            timing: Timing {
                leader_loss: LOSS,
                min_interval: Duration::ZERO,
                deprecated_delay: None,
            },
            last_failover_ms: None,
            known_epoch: 0,
            no_leader_since_ms: None,
            statuses_read_ms: None,
            switchover: None,
        }
    }

    /// A linearizable read, retried while the leader is not ready to serve it yet.
    async fn read(&self, i: usize, key: &str) -> Option<String> {
        let url = format!(
            "http://{}/v1/kv/{key}?consistency=linearizable",
            self.addr(i)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http().get(&url).send().await {
                match r.status().as_u16() {
                    200 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        return body["value"].as_str().map(str::to_owned);
                    }
                    404 => return None,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no linearizable read of {key} from orders-{i}\n{}",
            self.logs()
        );
    }
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn status(view: &View, i: usize) -> &SingleLeaderStatus {
    view.members[i].status().unwrap()
}

/// The ordinal of the member that reports itself leader.
fn leading(view: &View) -> usize {
    (0..view.members.len())
        .find(|&i| {
            view.members[i]
                .status()
                .is_ok_and(|n| n.role == Role::Leader)
        })
        .expect("a leader")
}

async fn pass(admin: &HttpNodeAdmin, view: &mut View) -> Report {
    refresh(admin, &auth(), view).await;
    drive(admin, &auth(), view, &now_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_leader_kill_fails_over_to_the_most_up_to_date_survivor() {
    let mut nodes = Nodes::start(3, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let mut view = nodes.view();

    // Bootstrap: every node starts as a follower without a leader; orders-0 is promoted in
    // epoch 1, the others follow it, and the labels are what is left for the caller.
    let report = pass(&admin, &mut view).await;
    let promoted = report.promoted.clone().expect("bootstrap promotes");
    assert_eq!(
        (promoted.to.as_str(), promoted.epoch, promoted.from),
        ("orders-0", 1, None)
    );
    assert_eq!(
        report.decision.action,
        Action::Relabel {
            pods: vec![
                ("orders-0".into(), "leader"),
                ("orders-1".into(), "follower"),
                ("orders-2".into(), "follower"),
            ]
        },
        "{}",
        nodes.logs()
    );
    assert_eq!(
        (status(&view, 0).role, status(&view, 0).epoch),
        (Role::Leader, 1)
    );
    for i in [1, 2] {
        let s = status(&view, i);
        assert_eq!(
            (s.epoch, s.leader.as_deref()),
            (1, Some("orders-0")),
            "orders-{i}"
        );
    }
    for (member, role) in view
        .members
        .iter_mut()
        .zip(["leader", "follower", "follower"])
    {
        member.role_label = Some(role.to_owned());
    }
    // Idempotent: a second pass finds nothing to do.
    let again = pass(&admin, &mut view).await;
    assert_eq!(
        (again.decision.action, again.notes.len()),
        (Action::Nothing, 0)
    );

    // A write acknowledged by orders-0 and orders-2 only (Quorum, orders-1 down), then the
    // leader is killed and orders-1 comes back without it: its log is behind orders-2's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.put(0, "before", "all-three").await != 200 {
        assert!(
            Instant::now() < deadline,
            "no write accepted\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.kill9(1);
    assert_eq!(
        nodes.put(0, "acked", "before-the-kill").await,
        200,
        "{}",
        nodes.logs()
    );
    nodes.kill9(0);
    nodes.spawn(1);
    nodes.wait_up(1).await;
    // Nothing listens at the killed leader's address (connection refused): its process is not
    // running, which is certain evidence, so the operator fails over at once, without waiting
    // for orders-2 (which still heard from it a moment ago) to time out. It fences, promotes
    // orders-2 (it holds the acknowledged write; orders-1 does not) and points orders-1 at it.
    let report = pass(&admin, &mut view).await;
    let promoted = report
        .promoted
        .clone()
        .unwrap_or_else(|| panic!("no failover at once: {report:?}\n{}", nodes.logs()));
    // Decided on the refused connection, not on the followers' timeout.
    assert_eq!(
        promoted.cause.as_ref().map(|c| c.kind),
        Some("gone"),
        "{promoted:?}"
    );
    assert_eq!(
        (
            promoted.to.as_str(),
            promoted.epoch,
            promoted.from.as_deref()
        ),
        ("orders-2", 2, Some("orders-0")),
        "{report:?}"
    );
    let reasons: Vec<&str> = report.notes.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["FailoverStarted", "LeaderPromoted"]);
    assert_eq!(
        (status(&view, 2).role, status(&view, 2).epoch),
        (Role::Leader, 2)
    );
    assert_eq!(
        (status(&view, 1).epoch, status(&view, 1).leader.as_deref()),
        (2, Some("orders-2"))
    );
    assert_eq!(
        report.decision.action,
        Action::Relabel {
            pods: vec![
                ("orders-0".into(), "follower"),
                ("orders-2".into(), "leader")
            ]
        }
    );

    // Both writes are readable from the new leader.
    assert_eq!(
        nodes.read(2, "acked").await.as_deref(),
        Some("before-the-kill")
    );
    assert_eq!(nodes.read(2, "before").await.as_deref(), Some("all-three"));
    assert_eq!(
        nodes.put(2, "after", "failover").await,
        200,
        "{}",
        nodes.logs()
    );

    // An operator that stopped between fence and promote: the survivors are fenced at epoch 3
    // and nobody leads it. The next pass promotes in epoch 3 without fencing again; both hold
    // the same log now ("after" needed orders-1 for its quorum), so the lowest ordinal wins.
    for i in [1, 2] {
        admin
            .epoch(&nodes.addr(i), &auth(), EpochRequest { epoch: 3 })
            .await
            .unwrap();
    }
    let resumed = pass(&admin, &mut view).await;
    let promoted = resumed.promoted.clone().expect("resumes with a promotion");
    assert_eq!(
        (promoted.to.as_str(), promoted.epoch),
        ("orders-1", 3),
        "{resumed:?}"
    );
    let reasons: Vec<&str> = resumed.notes.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["LeaderPromoted"]);
    assert_eq!(
        (status(&view, 2).epoch, status(&view, 2).leader.as_deref()),
        (3, Some("orders-1"))
    );
    assert_eq!(nodes.read(1, "after").await.as_deref(), Some("failover"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_reported_by_the_feed_and_failed_over_on_its_followers_word() {
    use futures::StreamExt;
    let nodes = Nodes::start(3, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(300)).unwrap();
    let mut view = nodes.view();
    let boot = pass(&admin, &mut view).await;
    assert_eq!(boot.promoted.map(|p| p.to), Some("orders-0".to_owned()));
    for (member, role) in view
        .members
        .iter_mut()
        .zip(["leader", "follower", "follower"])
    {
        member.role_label = Some(role.to_owned());
    }
    let loss_ms = u64::try_from(LOSS.as_millis()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.put(0, "before", "pause").await != 200 {
        assert!(
            Instant::now() < deadline,
            "no write accepted\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The feed follows all three; nothing changes while the cluster is healthy.
    let feed = Feed::new(
        std::sync::Arc::new(admin.clone()),
        std::sync::Arc::new(Metrics::default()),
    );
    let mut triggers = Box::pin(feed.triggers(None));
    let cluster = cluster_ref("orders", "shop");
    refresh(&admin, &auth(), &mut view).await;
    let targets = health_targets(&view, loss_ms);
    feed.watch(&cluster, &auth(), loss_ms, &targets);
    assert_eq!(feed.followed(), 3);
    let quiet = tokio::time::timeout(Duration::from_millis(700), triggers.next()).await;
    assert!(quiet.is_err(), "a trigger while healthy: {quiet:?}");

    // The leader hangs. Its followers' feeds fire once they lost it for the timeout; the
    // operator reads the nodes (the leader's status times out) and fails over on their word.
    nodes.pause(0);
    let paused = Instant::now();
    let woke = tokio::time::timeout(Duration::from_secs(10), triggers.next()).await;
    assert_eq!(
        woke.ok().flatten(),
        Some(cluster.clone()),
        "no trigger\n{}",
        nodes.logs()
    );
    let report = loop {
        let report = pass(&admin, &mut view).await;
        if report.promoted.is_some() {
            break report;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(15),
            "no failover: {report:?}\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    nodes.resume(0);
    let promoted = report.promoted.unwrap();
    assert_ne!(promoted.to, "orders-0");
    assert_eq!(promoted.epoch, 2);
    assert_eq!(promoted.cause.as_ref().map(|c| c.kind), Some("unreachable"));
    assert!(
        promoted.last_served_ms <= promoted.decided_ms
            && promoted.decided_ms <= promoted.fenced_ms
            && promoted.fenced_ms <= promoted.at_ms,
        "{promoted:?}"
    );
    eprintln!(
        "SUMMARY feed failover: unavailable {} ms (detect {}, fence {}, promote {})",
        promoted.at_ms - promoted.last_served_ms,
        promoted.decided_ms - promoted.last_served_ms,
        promoted.fenced_ms - promoted.decided_ms,
        promoted.at_ms - promoted.fenced_ms
    );
    let new = usize::from(promoted.to == "orders-2") + 1;
    assert_eq!(nodes.read(new, "before").await.as_deref(), Some("pause"));

    // Resumed, the old leader learns of epoch 2 and follows: it can acknowledge nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        refresh(&admin, &auth(), &mut view).await;
        let old = view.members[0].status().ok().map(|n| (n.role, n.epoch));
        if old == Some((Role::Follower, 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old leader still {old:?}\n{}",
            nodes.logs()
        );
        let _ = drive(&admin, &auth(), &mut view, &now_ms).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(nodes.put(0, "on-the-old-leader", "x").await, 200);
}

/// Requested switchovers, one after another, while writers keep writing through every node:
/// each ends with the asked-for member leading a higher epoch, and at the end every write that
/// was acknowledged is read back, linearizably, from the last leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchovers_under_writes_lose_no_acknowledged_write() {
    use rc_operator::failover::SwitchoverRequest;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let nodes = Nodes::start(3, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let mut view = nodes.view();
    pass(&admin, &mut view).await; // bootstrap: orders-0 leads epoch 1

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let addrs: Vec<String> = (0..3).map(|i| nodes.addr(i)).collect();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
            let http = nodes.http().clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                // Bounded: at most 100 000 attempts, stopped long before.
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    n += 1;
                    let key = format!("w{w}-{n}");
                    let url = format!("http://{}/v1/kv/{key}", addrs[(n as usize + w) % 3]);
                    let ok = http
                        .put(&url)
                        .json(&serde_json::json!({ "value": key }))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        acked.lock().unwrap().push(key);
                    }
                }
            })
        })
        .collect();

    // Each target in turn, and twice "any" away from the leader of the moment.
    let mut epoch = status(&view, 0).epoch;
    for target in [Some(1), Some(2), None, Some(0), None] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        refresh(&admin, &auth(), &mut view).await;
        let leader = leading(&view);
        // A named target that leads already (after an `any`) is replaced by the next member.
        let target = target.map(|t: usize| if t == leader { (t + 1) % 3 } else { t });
        view.switchover = Some(SwitchoverRequest {
            target: target.map(|i| format!("orders-{i}")),
            since_ms: now_ms(),
            bound: Duration::from_secs(10),
            avoid: vec![format!("orders-{leader}")],
        });
        let report = pass(&admin, &mut view).await;
        view.switchover = None;
        let promoted = report.promoted.clone().unwrap_or_else(|| {
            panic!(
                "switchover to {target:?}: {:?}\n{}",
                report.decision,
                nodes.logs()
            )
        });
        assert!(promoted.epoch > epoch, "a higher epoch: {promoted:?}");
        if let Some(t) = target {
            assert_eq!(promoted.to, format!("orders-{t}"), "{report:?}");
        } else {
            assert_ne!(promoted.to, format!("orders-{leader}"));
        }
        assert_eq!(promoted.cause.as_ref().map(|c| c.kind), Some("switchover"));
        epoch = promoted.epoch;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    refresh(&admin, &auth(), &mut view).await;
    let leader = leading(&view);
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for key in &acked {
        assert_eq!(
            nodes.read(leader, key).await.as_deref(),
            Some(key.as_str()),
            "acknowledged write {key} lost across switchovers"
        );
    }
    eprintln!(
        "{} acknowledged writes across 5 switchovers, all read back",
        acked.len()
    );
}
