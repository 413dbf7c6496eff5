//! The failover executor against real rc-node processes on loopback (no Kubernetes): bootstrap,
//! then `kill -9` of the leader, with an acknowledged write that must survive.
//!
//! Needs the rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo
//! test` builds it), or its path in `RC_NODE_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Nodes, TOKEN};
use rc_api::{EpochRequest, NodeStatus, Role};
use rc_operator::failover::execute::{drive, refresh, Report};
use rc_operator::failover::{Action, Member, PodState, View};
use rc_operator::node_client::{HttpNodeAdmin, NodeAdmin};

const DELAY: Duration = Duration::from_secs(1);
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
            failover_delay: DELAY,
            known_epoch: 0,
            no_leader_since_ms: None,
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

fn status(view: &View, i: usize) -> &NodeStatus {
    view.members[i].node.as_ref().unwrap()
}

async fn pass(admin: &HttpNodeAdmin, view: &mut View) -> Report {
    refresh(admin, TOKEN, view).await;
    drive(admin, TOKEN, view, &now_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_leader_kill_fails_over_to_the_most_up_to_date_survivor() {
    let mut nodes = Nodes::start("failover", 3, SINGLE_LEADER);
    nodes.wait_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500)).unwrap();
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
    let killed = Instant::now();
    nodes.spawn(1);
    let first = pass(&admin, &mut view).await;
    assert_eq!(
        (first.decision.action, first.promoted),
        (Action::Nothing, None)
    );
    assert!(first.decision.recheck.is_some(), "waits out the delay");

    // The operator notices, waits out the delay, then fences, promotes orders-2 (it holds the
    // acknowledged write; orders-1 does not) and points orders-1 at it.
    let failover = loop {
        let report = pass(&admin, &mut view).await;
        if let Some(p) = report.promoted.clone() {
            break (p, report);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no failover: {report:?}\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (promoted, report) = failover;
    assert!(killed.elapsed() >= DELAY, "failed over before the delay");
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
            .epoch(&nodes.addr(i), TOKEN, EpochRequest { epoch: 3 })
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
