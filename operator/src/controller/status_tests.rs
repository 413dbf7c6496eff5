#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use pretty_assertions::assert_eq;
use rc_api::{
    FollowerStatus, LogPosition, Mode, ModeStatus, NodeStatus, Replication, RequestStats, Role,
    SingleLeaderStatus,
};

use super::*;
use crate::controller::fixtures::cluster;
use crate::controller::observe::{Observed, ObservedPod};
use crate::controller::ring::RingOutcome;
use crate::controller::validate::{validate, ObservedFacts, ValidatedCluster};
use crate::crd::{MemberStatus, RingRecord};

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn valid(mode: Mode) -> ValidatedCluster {
    validate(&cluster(mode), &ObservedFacts::default()).unwrap()
}

fn pod(ordinal: i32, ready: bool) -> ObservedPod {
    ObservedPod {
        name: format!("orders-{ordinal}"),
        ordinal: Some(ordinal),
        ready,
        terminating: false,
        address: Some(format!("10.0.0.{ordinal}:7400")),
        role_label: None,
        revision: None,
        uid: None,
        fenced: false,
    }
}

/// A node's status as its admin API reports it (shared with the controller tests).
pub(crate) fn node_status(id: &str, role: Role, epoch: u64) -> NodeStatus {
    let ordinal: i32 = id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    node(ordinal, role, epoch, 1.0)
}

fn node(ordinal: i32, role: Role, epoch: u64, mean_ms: f64) -> NodeStatus {
    NodeStatus {
        node_id: format!("orders-{ordinal}"),
        stats: RequestStats {
            count: 100,
            mean_ms,
            p99_ms: mean_ms * 3.0,
        },
        credentials: Default::default(),
        detail: ModeStatus::SingleLeader(SingleLeaderStatus {
            incarnation: u64::try_from(ordinal).unwrap() + 1,
            config: Some(rc_api::VoterConfig {
                index: 2,
                voters: (0..3)
                    .map(|i| rc_api::Voter {
                        id: format!("orders-{i}"),
                        incarnation: i + 1,
                    })
                    .collect(),
                committed: true,
            }),
            role,
            epoch,
            leader: None,
            last_log: LogPosition { epoch, index: 10 },
            commit_index: 10,
            applied_index: 10 - u64::try_from(ordinal).unwrap(),
            snapshot_index: 0,
            followers: Vec::new(),
            ms_since_leader_contact: (role == Role::Follower).then_some(40),
            self_fenced: false,
            replication: Replication::Quorum,
        }),
    }
}

/// A StatefulSet whose controller has caught up with `replicas` ready pods.
fn settled(replicas: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            generation: Some(1),
            ..ObjectMeta::default()
        },
        status: Some(StatefulSetStatus {
            observed_generation: Some(1),
            replicas,
            ready_replicas: Some(replicas),
            updated_replicas: Some(replicas),
            current_revision: Some("orders-1".into()),
            update_revision: Some("orders-1".into()),
            ..StatefulSetStatus::default()
        }),
        ..StatefulSet::default()
    }
}

/// orders-0's single-leader status in `observed`.
fn leader_of(observed: &mut Observed) -> Option<&mut SingleLeaderStatus> {
    observed
        .nodes
        .get_mut("orders-0")?
        .as_mut()
        .ok()?
        .single_leader_mut()
}

/// Three ready single-leader nodes, orders-0 leading epoch 3.
fn healthy_single_leader() -> Observed {
    let mut leader = node(0, Role::Leader, 3, 2.0);
    let Some(sl) = leader.single_leader_mut() else {
        unreachable!("node() builds single-leader statuses")
    };
    sl.followers = vec![
        FollowerStatus {
            id: "orders-1".into(),
            address: String::new(),
            match_index: 9,
            lag_entries: 1,
            last_ack_ms: Some(5),
            incarnation: Some(2),
            voter: true,
        },
        FollowerStatus {
            id: "orders-2".into(),
            address: String::new(),
            match_index: 8,
            lag_entries: 2,
            last_ack_ms: Some(5),
            incarnation: Some(3),
            voter: true,
        },
    ];
    Observed {
        admin: Some(crate::credentials::AdminTokens {
            token: "t".into(),
            ..Default::default()
        }),
        auth: Some(crate::node_client::NodeAccess::plain("t")),
        ca: None,
        node_cert: None,
        admin_secret_dedicated: false,
        client_secret_ready: false,
        client_secret_dedicated: false,
        statefulset: Some(settled(3)),
        pods: vec![pod(0, true), pod(1, true), pod(2, true)],
        nodes: BTreeMap::from([
            ("orders-0".into(), Ok(leader)),
            ("orders-1".into(), Ok(node(1, Role::Follower, 3, 4.0))),
            ("orders-2".into(), Ok(node(2, Role::Follower, 3, 6.0))),
        ]),
        nodes_read_ms: None,
    }
}

fn compute(
    v: &ValidatedCluster,
    observed: &Observed,
    previous: Option<&ReplicatedClusterStatus>,
    now: i64,
) -> ReplicatedClusterStatus {
    compute_status(&StatusInput {
        generation: Some(1),
        spec: Ok(v),
        observed,
        previous,
        now: at(now),
        steps: StepOutcomes::default(),
    })
}

fn condition<'a>(status: &'a ReplicatedClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_healthy_single_leader_cluster_is_running_with_its_leader_epoch_and_members() {
    let status = compute(
        &valid(Mode::SingleLeader),
        &healthy_single_leader(),
        None,
        100,
    );
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.leader.as_deref(), Some("orders-0"));
    assert_eq!(status.epoch, Some(3));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=orders,app.kubernetes.io/name=rc-node,replicated.dev/cluster=orders")
    );
    assert_eq!(
        status.members[1],
        MemberStatus {
            name: "orders-1".into(),
            role: Some(Role::Follower),
            ready: true,
            reachable: true,
            epoch: Some(3),
            applied_index: Some(9),
            lag_entries: Some(1),
            lag_ms: Some(40),
            mean_response_ms: Some(4.0),
            load_ratio: Some(1.0),
            message: None,
            voter: Some(true),
        }
    );
    let available = condition(&status, condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("True", reason::LEADER_SERVING)
    );
    assert_eq!(condition(&status, condition::PROGRESSING).status, "False");
    assert_eq!(condition(&status, condition::DEGRADED).status, "False");
}

#[test]
fn the_seeds_load_figures_come_from_each_nodes_mean_response_time() {
    // T = 2, 4, 6 ms: T_avg = 4, max = 6, B = 4/6, L = 0.5, 1, 1.5.
    let status = compute(
        &valid(Mode::SingleLeader),
        &healthy_single_leader(),
        None,
        100,
    );
    let load = status.load.unwrap();
    assert_eq!(load.mean_response_ms, 4.0);
    assert_eq!(load.max_response_ms, 6.0);
    assert_eq!(load.balance_coefficient, 0.667);
    assert_eq!(load.nodes, 3);
    let ratios: Vec<Option<f64>> = status.members.iter().map(|m| m.load_ratio).collect();
    assert_eq!(ratios, [Some(0.5), Some(1.0), Some(1.5)]);
}

#[test]
fn a_perfectly_balanced_cluster_has_a_balance_coefficient_of_one() {
    let mut members: Vec<MemberStatus> = (0..3)
        .map(|i| MemberStatus {
            name: format!("n{i}"),
            mean_response_ms: Some(3.0),
            ..MemberStatus::default()
        })
        .collect();
    let load = load_figures(&mut members).unwrap();
    assert_eq!(load.balance_coefficient, 1.0);
    assert!(members.iter().all(|m| m.load_ratio == Some(1.0)));
}

#[test]
fn nodes_that_served_no_request_are_left_out_of_the_load_figures() {
    let mut members = vec![
        MemberStatus {
            name: "a".into(),
            mean_response_ms: Some(2.0),
            ..MemberStatus::default()
        },
        MemberStatus {
            name: "b".into(),
            mean_response_ms: None,
            ..MemberStatus::default()
        },
    ];
    let load = load_figures(&mut members).unwrap();
    assert_eq!((load.nodes, load.balance_coefficient), (1, 1.0));
    assert_eq!(members[1].load_ratio, None);
    assert_eq!(load_figures(&mut [MemberStatus::default()]), None);
}

#[test]
fn a_new_cluster_without_a_leader_is_pending_and_not_available() {
    let mut observed = healthy_single_leader();
    observed.pods = vec![pod(0, false), pod(1, false), pod(2, false)];
    for i in 0..3 {
        observed
            .nodes
            .insert(format!("orders-{i}"), Ok(node(i, Role::Follower, 0, 0.0)));
    }
    let status = compute(&valid(Mode::SingleLeader), &observed, None, 100);
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.leader, None);
    let available = condition(&status, condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", reason::NO_LEADER)
    );
    assert_eq!(
        condition(&status, condition::DEGRADED).reason,
        reason::NODES_NOT_READY
    );
}

#[test]
fn a_running_cluster_that_loses_one_node_is_degraded_but_available() {
    let v = valid(Mode::SingleLeader);
    let before = compute(&v, &healthy_single_leader(), None, 100);
    let mut observed = healthy_single_leader();
    observed.pods[2].ready = false;
    observed
        .nodes
        .insert("orders-2".into(), Err("connection refused".into()));
    let after = compute(&v, &observed, Some(&before), 200);
    assert_eq!(after.phase, Some(Phase::Degraded));
    assert_eq!(condition(&after, condition::AVAILABLE).status, "True");
    let degraded = condition(&after, condition::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::NODES_NOT_READY)
    );
    assert_eq!(
        after.members[2].message.as_deref(),
        Some("connection refused")
    );
    assert!(!after.members[2].reachable);
}

#[test]
fn a_follower_the_leader_cannot_reach_makes_a_ready_cluster_degraded() {
    let v = valid(Mode::SingleLeader);
    let before = compute(&v, &healthy_single_leader(), None, 100);
    assert_eq!(before.phase, Some(Phase::Running));
    // Every pod is ready and answers, but the leader never hears from orders-2 (e.g. it dials
    // an address the follower is not at): writes still reach a quorum, one failure from none.
    let mut observed = healthy_single_leader();
    if let Some(leader) = leader_of(&mut observed) {
        leader.followers[1].last_ack_ms = None;
    }
    let after = compute(&v, &observed, Some(&before), 200);
    assert_eq!(after.phase, Some(Phase::Degraded));
    assert_eq!(condition(&after, condition::AVAILABLE).status, "True");
    let degraded = condition(&after, condition::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::REPLICATION_STALLED)
    );
    assert!(
        degraded.message.contains("orders-2"),
        "{}",
        degraded.message
    );
}

#[test]
fn a_running_cluster_that_loses_quorum_is_degraded_and_unavailable() {
    let v = valid(Mode::SingleLeader);
    let before = compute(&v, &healthy_single_leader(), None, 100);
    let mut observed = healthy_single_leader();
    observed.pods[1].ready = false;
    observed.pods[2].ready = false;
    let after = compute(&v, &observed, Some(&before), 200);
    assert_eq!(after.phase, Some(Phase::Degraded));
    let available = condition(&after, condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", reason::NO_QUORUM)
    );
}

#[test]
fn a_self_fenced_leader_does_not_count_as_leader() {
    let mut observed = healthy_single_leader();
    if let Some(leader) = leader_of(&mut observed) {
        leader.self_fenced = true;
    }
    let status = compute(&valid(Mode::SingleLeader), &observed, None, 100);
    assert_eq!(status.leader, None);
    assert_eq!(
        condition(&status, condition::AVAILABLE).reason,
        reason::NO_LEADER
    );
}

#[test]
fn transition_times_change_only_when_a_condition_flips() {
    let v = valid(Mode::SingleLeader);
    let first = compute(&v, &healthy_single_leader(), None, 100);
    let same = compute(&v, &healthy_single_leader(), Some(&first), 200);
    assert_eq!(
        same, first,
        "an unchanged world must give an identical status (no write)"
    );
    let mut observed = healthy_single_leader();
    observed.pods[2].ready = false;
    let flipped = compute(&v, &observed, Some(&same), 300);
    assert_eq!(
        condition(&flipped, condition::DEGRADED).last_transition_time,
        at(300)
    );
    assert_eq!(
        condition(&flipped, condition::AVAILABLE).last_transition_time,
        at(100)
    );
}

#[test]
fn scaling_shows_while_pods_are_added_and_progressing_until_the_statefulset_settles() {
    let mut c = cluster(Mode::SingleLeader);
    c.spec.replicas = 5;
    let v = validate(&c, &ObservedFacts::default()).unwrap();
    let status = compute(&v, &healthy_single_leader(), None, 100);
    assert_eq!(status.phase, Some(Phase::Scaling));
    let progressing = condition(&status, condition::PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", reason::ROLLING_OUT)
    );
}

#[test]
fn pods_on_an_old_revision_keep_the_cluster_progressing_and_not_ready() {
    let observed = healthy_single_leader();
    let mut status = compute(&valid(Mode::SingleLeader), &observed, None, 100);
    let rollout = crate::controller::rollout::RolloutOutcome {
        step: crate::rollout::Step::Restart {
            updated: 1,
            pod: "orders-1".into(),
            why: "restarting follower orders-1 (1 of 3 updated; the leader goes last)".into(),
        },
        current_revision: Some("orders-1".into()),
        update_revision: Some("orders-2".into()),
        members: 3,
        held: None,
    };
    let now = status.conditions[0].last_transition_time.clone();
    record_rollout(&mut status, &rollout, None, &now);
    mark_ready(&mut status, None, &now);
    assert_eq!(status.updated_replicas, 1);
    assert_eq!(status.update_revision.as_deref(), Some("orders-2"));
    let progressing = condition(&status, condition::PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", reason::ROLLING_OUT)
    );
    assert_eq!(
        progressing.message,
        "1 of 3 nodes run the latest pod template; restarting follower orders-1 (1 of 3 updated; the leader goes last)"
    );
    let ready = condition(&status, condition::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason::ROLLING_OUT)
    );
}

#[test]
fn a_serving_healthy_up_to_date_cluster_is_ready() {
    let observed = healthy_single_leader();
    let mut status = compute(&valid(Mode::SingleLeader), &observed, None, 100);
    let now = status.conditions[0].last_transition_time.clone();
    mark_ready(&mut status, None, &now);
    let ready = condition(&status, condition::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Ready")
    );
    assert_eq!(status.conditions[0].type_, condition::READY);
}

/// A leaderless node that has ring `version` installed (0: none yet).
fn ring_node(ordinal: i32, version: u64) -> NodeStatus {
    NodeStatus {
        detail: ModeStatus::Leaderless(rc_api::LeaderlessStatus {
            ring_version: version,
            members: Vec::new(),
            replication_factor: 3,
            write_quorum: 2,
            read_quorum: 2,
            keys: 0,
            hints_queued: 0,
            stream: rc_api::StreamState::Idle,
            keys_streamed: 0,
            anti_entropy_rounds: 0,
            keys_repaired: 0,
            restoring: false,
            hints_for: Default::default(),
        }),
        ..node(ordinal, Role::Peer, 0, 1.0)
    }
}

#[test]
fn a_leaderless_cluster_is_available_with_a_quorum_of_ready_nodes() {
    let v = valid(Mode::Leaderless);
    let mut observed = healthy_single_leader();
    observed.nodes.clear();
    observed
        .nodes
        .insert("orders-0".into(), Ok(ring_node(0, 4)));
    observed.pods[2].ready = false;
    let status = compute(&v, &observed, None, 100);
    let available = condition(&status, condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("True", reason::QUORUM_READY)
    );
    assert_eq!(status.leader, None);
    assert_eq!(status.epoch, None);
    assert_eq!(status.ring_version, Some(4));
}

#[test]
fn a_leaderless_cluster_whose_nodes_have_no_ring_yet_is_not_available() {
    let v = valid(Mode::Leaderless);
    let mut observed = healthy_single_leader();
    observed.nodes = (0..3)
        .map(|i| (format!("orders-{i}"), Ok(ring_node(i, 0))))
        .collect();
    let status = compute(&v, &observed, None, 100);
    let available = condition(&status, condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", reason::NO_RING)
    );
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.ring_version, None);
}

#[test]
fn an_invalid_spec_sets_phase_invalid_and_a_degraded_condition_with_the_reason() {
    let error = crate::controller::validate::SpecError::Replicas(0);
    let status = compute_status(&StatusInput {
        generation: Some(2),
        spec: Err(&error),
        observed: &Observed::default(),
        previous: None,
        now: at(100),
        steps: StepOutcomes::default(),
    });
    assert_eq!(status.phase, Some(Phase::Invalid));
    let degraded = condition(&status, condition::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", reason::INVALID_SPEC)
    );
    assert_eq!(degraded.message, "spec.replicas must be at least 1, got 0");
    assert_eq!(degraded.observed_generation, Some(2));
}

#[test]
fn the_last_failover_record_is_carried_over() {
    let v = valid(Mode::SingleLeader);
    let mut previous = compute(&v, &healthy_single_leader(), None, 100);
    previous.last_failover = Some(crate::crd::FailoverRecord {
        time: at(50),
        from: Some("orders-1".into()),
        to: "orders-0".into(),
        epoch: 3,
        duration_ms: 840,
        unavailable_ms: Some(1_200),
        detect_ms: Some(1_050),
        fence_ms: Some(90),
        promote_ms: Some(60),
        reason: Some("unreachable".into()),
    });
    let next = compute(&v, &healthy_single_leader(), Some(&previous), 200);
    assert_eq!(next.last_failover, previous.last_failover);
}

#[test]
fn a_ring_change_shows_as_scaling_and_progressing_since_it_began() {
    let progressing = |status: &str, second: i64| Condition {
        type_: condition::PROGRESSING.to_owned(),
        status: status.to_owned(),
        reason: reason::UP_TO_DATE.to_owned(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: at(second),
    };
    let outcome = RingOutcome {
        ring: Some(RingRecord {
            version: 4,
            members: Vec::new(),
        }),
        changing: Some("orders-3 handing data to the next owners".to_owned()),
        recheck: None,
    };
    let mut status = ReplicatedClusterStatus {
        phase: Some(Phase::Running),
        conditions: vec![progressing("False", 10)],
        ..ReplicatedClusterStatus::default()
    };
    record_ring(&mut status, &outcome, None, &at(50));
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(status.ring.as_ref().map(|r| r.version), Some(4));
    let c = &status.conditions[0];
    assert_eq!(
        (
            c.status.as_str(),
            c.reason.as_str(),
            c.last_transition_time.clone()
        ),
        ("True", reason::RING_CHANGING, at(50))
    );
    // Still changing on the next pass: the transition time stays.
    let previous = status.clone();
    let mut next = ReplicatedClusterStatus {
        phase: Some(Phase::Running),
        conditions: vec![progressing("False", 10)],
        ..ReplicatedClusterStatus::default()
    };
    record_ring(&mut next, &outcome, Some(&previous), &at(90));
    assert_eq!(next.conditions[0].last_transition_time, at(50));
}
