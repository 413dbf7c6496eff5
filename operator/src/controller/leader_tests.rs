//! The pure parts of the leader step: the failover view from observations, and what the status
//! records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::*;
use crate::controller::fixtures::cluster;
use crate::controller::observe::ObservedPod;
use crate::controller::status::tests::node_status;
use crate::controller::validate::{validate, ObservedFacts};
use crate::failover::execute::Promotion;
use crate::failover::Decision;

fn pod(ordinal: i32, ready: bool, terminating: bool) -> ObservedPod {
    ObservedPod {
        name: format!("orders-{ordinal}"),
        ordinal: Some(ordinal),
        ready,
        terminating,
        address: Some(format!("10.0.0.{ordinal}:7400")),
        role_label: None,
        revision: None,
        uid: None,
        fenced: false,
    }
}

#[test]
fn the_view_has_one_member_per_ordinal_with_its_pod_and_node() {
    let valid = validate(&cluster(Mode::SingleLeader), &ObservedFacts::default()).unwrap();
    let leader = node_status("orders-0", rc_api::Role::Leader, 4);
    let observed = Observed {
        pods: vec![pod(0, true, false), pod(2, true, true)],
        nodes: [("orders-0".to_owned(), Ok(leader.clone()))].into(),
        ..Observed::default()
    };
    let previous = ReplicatedClusterStatus {
        epoch: Some(4),
        no_leader_since: Some(MicroTime(Timestamp::from_millisecond(1_000).unwrap())),
        ..ReplicatedClusterStatus::default()
    };
    let view = build_view(&valid, &observed, &previous);
    assert_eq!(view.timing.leader_loss, Duration::from_millis(1000));
    assert_eq!(view.timing.min_interval, Duration::from_secs(5));
    assert_eq!(
        (view.known_epoch, view.no_leader_since_ms),
        (4, Some(1_000))
    );
    let summary: Vec<(&str, Option<&str>, &str, PodState, bool)> = view
        .members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.address.as_deref(),
                m.stable_address.as_str(),
                m.pod,
                m.node.is_ok(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "orders-0",
                Some("10.0.0.0:7400"),
                "orders-0.orders-peers.shop.svc:7400",
                PodState::Ready,
                true
            ),
            (
                "orders-1",
                None,
                "orders-1.orders-peers.shop.svc:7400",
                PodState::Missing,
                false
            ),
            (
                "orders-2",
                Some("10.0.0.2:7400"),
                "orders-2.orders-peers.shop.svc:7400",
                PodState::Terminating,
                false
            ),
        ]
    );
    assert_eq!(view.members[2].node, Err("pod is being deleted".to_owned()));
}

fn report(leader: Option<&str>, epoch: u64, promoted: Option<Promotion>) -> Report {
    Report {
        decision: Decision {
            action: Action::Nothing,
            leader: leader.map(str::to_owned),
            epoch,
            no_leader_since_ms: leader.is_none().then_some(5_000),
            failing_over: leader.is_none(),
            blocked: None,
            recheck: None,
            voters_pending: None,
            cause: None,
            switchover: None,
        },
        notes: Vec::new(),
        promoted,
    }
}

#[test]
fn a_promotion_is_recorded_with_the_time_without_a_leader() {
    let promoted = Promotion {
        to: "orders-2".into(),
        from: Some("orders-0".into()),
        epoch: 3,
        at_ms: 12_345,
        no_leader_since_ms: 9_000,
        last_served_ms: 8_700,
        decided_ms: 12_100,
        fenced_ms: 12_300,
        cause: Some(crate::failover::Cause {
            kind: "unreachable",
            evidence: "orders-0 its admin API is unreachable".into(),
        }),
    };
    let out = outcome(
        &report(Some("orders-2"), 3, Some(promoted)),
        &ReplicatedClusterStatus::default(),
        13_000,
    );
    assert_eq!(
        out.last_failover,
        Some(FailoverRecord {
            time: Time(Timestamp::from_second(12).unwrap()),
            from: Some("orders-0".into()),
            to: "orders-2".into(),
            epoch: 3,
            duration_ms: 3_345,
            unavailable_ms: Some(3_645),
            detect_ms: Some(3_400),
            fence_ms: Some(200),
            promote_ms: Some(45),
            reason: Some("unreachable".into()),
        })
    );
    assert_eq!((out.no_leader_since, out.failing_over), (None, false));
}

#[test]
fn a_leader_found_in_a_new_epoch_after_an_outage_is_recorded_but_a_blip_is_not() {
    let outage = ReplicatedClusterStatus {
        epoch: Some(2),
        no_leader_since: Some(MicroTime(Timestamp::from_millisecond(4_000).unwrap())),
        ..ReplicatedClusterStatus::default()
    };
    // An operator stopped after promoting orders-1 in epoch 3, before writing the status.
    let resumed = outcome(&report(Some("orders-1"), 3, None), &outage, 10_000);
    assert_eq!(
        resumed
            .last_failover
            .map(|r| (r.to, r.epoch, r.duration_ms)),
        Some(("orders-1".to_owned(), 3, 6_000))
    );
    // The leader of epoch 2 came back by itself (a readiness blip): no failover happened.
    let blip = outcome(&report(Some("orders-0"), 2, None), &outage, 10_000);
    assert_eq!(blip.last_failover, None);
    // Still no leader: the clock keeps running and the phase says so.
    let waiting = outcome(&report(None, 2, None), &outage, 10_000);
    assert_eq!(
        waiting.no_leader_since.map(|t| t.0.as_millisecond()),
        Some(5_000)
    );
    assert!(waiting.failing_over);
}
