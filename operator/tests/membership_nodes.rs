//! The membership executor against real leaderless rc-node processes on loopback (no
//! Kubernetes): bootstrap, scale 3 -> 4 (joining -> joined -> normal) and 4 -> 3 (leaving ->
//! decommissioned -> removed, resumed by an operator that stopped half-way), with writes
//! acknowledged before the changes read back after.
//!
//! Needs the rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo
//! test` builds it), or its path in `RC_NODE_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{auth, Nodes};
use rc_api::{MemberState, NodeStatus, Ring};
use rc_operator::membership::execute::{drive, refresh, Report};
use rc_operator::membership::{Pod, View};
use rc_operator::node_client::{HttpNodeAdmin, NodeAdmin};

/// Leaderless nodes: N = 3, W = 2, R = 2.
const LEADERLESS: &[&str] = &[
    "--mode",
    "leaderless",
    "--replication-factor",
    "3",
    "--write-quorum",
    "2",
    "--read-quorum",
    "2",
];

impl Nodes {
    /// What the operator would see with `spec.replicas = desired` and pods `0..pods`.
    fn view(&self, desired: usize, pods: usize, recorded: Option<Ring>) -> View {
        View {
            desired: (0..desired).map(|i| format!("orders-{i}")).collect(),
            replication_factor: 3,
            recorded,
            pods: (0..pods)
                .map(|i| Pod {
                    name: format!("orders-{i}"),
                    address: Some(self.addr(i)),
                    node: Err("not observed yet".into()),
                })
                .collect(),
        }
    }

    async fn get(&self, i: usize, key: &str) -> Option<String> {
        let url = format!("http://{}/v1/kv/{key}", self.addr(i));
        let r = self.http().get(url).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let body: serde_json::Value = r.json().await.ok()?;
        body["value"].as_str().map(str::to_owned)
    }
}

fn status(view: &View, i: usize) -> &NodeStatus {
    view.pods[i].node.as_ref().unwrap()
}

fn ring_version(view: &View, i: usize) -> u64 {
    status(view, i).leaderless().unwrap().ring_version
}

fn states(ring: &Ring) -> Vec<(String, MemberState)> {
    ring.members
        .iter()
        .map(|m| (m.id.clone(), m.state))
        .collect()
}

/// Runs reconcile-like passes (refresh, drive) until the ring matches the spec, collecting the
/// Event reasons in order.
async fn settle(nodes: &Nodes, admin: &HttpNodeAdmin, view: &mut View) -> (Report, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reasons = Vec::new();
    loop {
        refresh(admin, &auth(), view).await;
        let report = drive(admin, &auth(), view).await;
        reasons.extend(report.notes.iter().map(|n| n.reason.to_owned()));
        if !report.decision.changing {
            return (report, reasons);
        }
        assert!(
            Instant::now() < deadline,
            "membership did not settle: {report:?}\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_scale_out_and_back_in_keeps_every_acknowledged_write() {
    // Four processes: orders-3 stands for the pod the StatefulSet adds on scale-up.
    let mut nodes = Nodes::start(4, LEADERLESS);
    nodes.wait_all_up().await;
    let admin =
        HttpNodeAdmin::new(Duration::from_millis(2000), Duration::from_millis(2000)).unwrap();
    let normal = |n: usize| -> Vec<(String, MemberState)> {
        (0..n)
            .map(|i| (format!("orders-{i}"), MemberState::Normal))
            .collect()
    };

    // Bootstrap: no ring anywhere; ring v1 with the three wanted members, all normal.
    let mut view = nodes.view(3, 3, None);
    let (report, reasons) = settle(&nodes, &admin, &mut view).await;
    let ring = report.ring.clone().expect("a ring after bootstrap");
    assert_eq!((ring.version, states(&ring)), (1, normal(3)));
    assert_eq!(reasons, ["RingUpdated"]);
    for i in 0..3 {
        assert_eq!(ring_version(&view, i), 1, "orders-{i}\n{}", nodes.logs());
    }
    // Idempotent: another pass does nothing.
    refresh(&admin, &auth(), &mut view).await;
    let again = drive(&admin, &auth(), &mut view).await;
    assert!(again.notes.is_empty(), "{again:?}");

    // Writes acknowledged (W = 2) before any membership change.
    let keys: Vec<String> = (0..40).map(|k| format!("key-{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        assert_eq!(nodes.put(k % 3, key, "v1").await, 200, "{}", nodes.logs());
    }

    // Scale 3 -> 4: orders-3 joins, streams its ranges, then serves.
    let mut view = nodes.view(4, 4, Some(ring.clone()));
    let (report, reasons) = settle(&nodes, &admin, &mut view).await;
    let ring = report.ring.clone().unwrap();
    assert_eq!((ring.version, states(&ring)), (3, normal(4)), "{reasons:?}");
    assert_eq!(reasons, ["MemberJoining", "MemberJoined"]);
    for i in 0..4 {
        assert_eq!(ring_version(&view, i), 3, "orders-{i}");
    }
    let streamed = status(&view, 3).leaderless().unwrap().keys;
    assert!(streamed > 0, "orders-3 got no data\n{}", nodes.logs());

    // Scale 4 -> 3, with an operator that stopped right after marking orders-3 leaving (ring
    // v4 reached one node, the status still says v3): the next operator resumes from the
    // nodes' ring, has orders-3 hand its data over, and only then removes it from the ring.
    let mut leaving = ring.clone();
    leaving.version = 4;
    leaving.members[3].state = MemberState::Leaving;
    admin.ring(&nodes.addr(0), &auth(), &leaving).await.unwrap();
    let mut view = nodes.view(3, 4, Some(ring.clone()));
    let (report, reasons) = settle(&nodes, &admin, &mut view).await;
    let ring = report.ring.clone().unwrap();
    assert_eq!((ring.version, states(&ring)), (5, normal(3)), "{reasons:?}");
    assert_eq!(reasons, ["DecommissionStarted", "MemberRemoved"]);
    for i in 0..3 {
        assert_eq!(ring_version(&view, i), 5, "orders-{i}");
    }
    // Now the StatefulSet may stop the pod.
    nodes.kill9(3);

    for key in &keys {
        for i in 0..3 {
            assert_eq!(
                nodes.get(i, key).await.as_deref(),
                Some("v1"),
                "{key} through orders-{i}\n{}",
                nodes.logs()
            );
        }
    }
}
