//! The rollout plan: restart order, gates, pause.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rc_api::{LeaderlessStatus, MemberState, MemberView, NodeStatus, StreamState};

use super::*;
use crate::failover::tests::{follower, leader};

const NEW: &str = "orders-new";
const OLD: &str = "orders-old";

fn names() -> Vec<String> {
    (0..3).map(|i| format!("orders-{i}")).collect()
}

/// orders-0 leads orders-1 and orders-2; `revisions` per ordinal.
fn led<'a>(
    names: &'a [String],
    nodes: &'a [NodeStatus],
    revisions: [&'a str; 3],
) -> Vec<RolloutMember<'a>> {
    (0..3)
        .map(|i| RolloutMember {
            name: &names[i],
            ready: true,
            revision: Some(revisions[i]),
            node: Some(&nodes[i]),
        })
        .collect()
}

fn statuses() -> Vec<NodeStatus> {
    vec![
        leader(0, 2, &[1, 2]),
        follower(2, Some(0), (2, 10), Some(5)),
        follower(2, Some(0), (2, 10), Some(5)),
    ]
}

fn plan_led(nodes: &[NodeStatus], revisions: [&str; 3]) -> Step {
    let names = names();
    plan(
        ClusterMode::SingleLeader,
        &led(&names, nodes, revisions),
        Some(NEW),
        false,
    )
}

#[test]
fn followers_restart_first_highest_ordinal_first_and_the_leader_is_switched_away_from_last() {
    let nodes = statuses();
    assert!(matches!(plan_led(&nodes, [OLD, OLD, OLD]),
        Step::Restart { pod, updated: 0, .. } if pod == "orders-2"));
    assert!(matches!(plan_led(&nodes, [OLD, OLD, NEW]),
        Step::Restart { pod, updated: 1, .. } if pod == "orders-1"));
    assert_eq!(
        plan_led(&nodes, [OLD, NEW, NEW]),
        Step::Switchover {
            updated: 2,
            avoid: vec!["orders-0".into()]
        }
    );
    assert_eq!(plan_led(&nodes, [NEW, NEW, NEW]), Step::Done);
}

#[test]
fn after_the_switchover_the_old_leader_is_restarted_as_a_follower() {
    let nodes = vec![
        follower(3, Some(1), (3, 11), Some(5)),
        leader(1, 3, &[0, 2]),
        follower(3, Some(1), (3, 11), Some(5)),
    ];
    assert!(matches!(plan_led(&nodes, [OLD, NEW, NEW]),
        Step::Restart { pod, .. } if pod == "orders-0"));
}

#[test]
fn nothing_restarts_while_a_member_is_down_lagging_or_leaderless() {
    let names = names();
    let nodes = statuses();
    // A follower catching up.
    let mut lagging = statuses();
    lagging[0].followers[1].lag_entries = CAUGHT_UP_LAG + 1;
    assert!(matches!(plan_led(&lagging, [OLD, OLD, OLD]),
        Step::Wait { why, .. } if why.contains("orders-2 is catching up")));
    // A pod not ready.
    let mut members = led(&names, &nodes, [OLD, OLD, NEW]);
    members[2].ready = false;
    assert!(
        matches!(plan(ClusterMode::SingleLeader, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-2 is not ready")
    );
    // A node that does not answer.
    let mut members = led(&names, &nodes, [OLD, OLD, NEW]);
    members[1].node = None;
    assert!(
        matches!(plan(ClusterMode::SingleLeader, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-1 does not answer")
    );
    // No leader (fenced itself).
    let mut fenced = statuses();
    fenced[0].self_fenced = true;
    assert!(matches!(plan_led(&fenced, [OLD, OLD, OLD]),
        Step::Wait { why, .. } if why == "no leader serves"));
}

#[test]
fn paused_holds_and_no_update_revision_is_done() {
    let names = names();
    let nodes = statuses();
    let members = led(&names, &nodes, [OLD, OLD, NEW]);
    assert_eq!(
        plan(ClusterMode::SingleLeader, &members, Some(NEW), true),
        Step::Paused { updated: 1 }
    );
    assert_eq!(
        plan(ClusterMode::SingleLeader, &members, None, false),
        Step::Done
    );
    assert_eq!(Step::Paused { updated: 1 }.updated(3), 1);
    assert_eq!(Step::Done.updated(3), 3);
}

fn ring_member(i: usize, alive: bool, state: MemberState) -> MemberView {
    MemberView {
        id: format!("orders-{i}"),
        address: format!("10.0.0.{i}:7400"),
        state,
        alive,
    }
}

fn ringed(hints: u64, members: Vec<MemberView>) -> NodeStatus {
    NodeStatus {
        leaderless: Some(LeaderlessStatus {
            ring_version: 2,
            members,
            replication_factor: 3,
            write_quorum: 2,
            read_quorum: 2,
            keys: 10,
            hints_queued: hints,
            stream: StreamState::Idle,
            keys_streamed: 0,
            anti_entropy_rounds: 0,
            keys_repaired: 0,
            restoring: false,
            hints_for: Default::default(),
        }),
        ..follower(0, None, (0, 0), None)
    }
}

#[test]
fn leaderless_members_restart_one_at_a_time_once_the_ring_is_whole_and_hints_are_delivered() {
    let names = names();
    let whole = || {
        (0..3)
            .map(|i| ring_member(i, true, MemberState::Normal))
            .collect::<Vec<_>>()
    };
    let nodes: Vec<NodeStatus> = (0..3).map(|_| ringed(0, whole())).collect();
    let members = led(&names, &nodes, [OLD, OLD, OLD]);
    assert!(
        matches!(plan(ClusterMode::Leaderless, &members, Some(NEW), false),
        Step::Restart { pod, .. } if pod == "orders-2")
    );

    let mut hinted = nodes.clone();
    hinted[0] = ringed(3, whole());
    let members = led(&names, &hinted, [OLD, OLD, NEW]);
    assert!(
        matches!(plan(ClusterMode::Leaderless, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-0 holds 3 hints to deliver")
    );

    let mut down = nodes.clone();
    let mut view = whole();
    view[2] = ring_member(2, false, MemberState::Normal);
    down[1] = ringed(0, view);
    let members = led(&names, &down, [OLD, OLD, NEW]);
    assert!(
        matches!(plan(ClusterMode::Leaderless, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-1 sees orders-2 down")
    );
}
