//! The rollout plan: restart order, gates, pause.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rc_api::{LeaderlessStatus, MemberState, MemberView, ModeStatus, NodeStatus, StreamState};

use super::*;
use crate::failover::tests::{follower as sl_follower, leader as sl_leader, node_status};

fn leader(me: usize, epoch: u64, followers: &[usize]) -> NodeStatus {
    node_status(format!("orders-{me}"), sl_leader(me, epoch, followers))
}

fn follower(
    epoch: u64,
    leader: Option<usize>,
    last: (u64, u64),
    contact_ms: Option<u64>,
) -> NodeStatus {
    node_status(String::new(), sl_follower(epoch, leader, last, contact_ms))
}

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
        Mode::SingleLeader,
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
    if let Some(l) = lagging[0].single_leader_mut() {
        l.followers[1].lag_entries = CAUGHT_UP_LAG + 1;
    }
    assert!(matches!(plan_led(&lagging, [OLD, OLD, OLD]),
        Step::Wait { why, .. } if why.contains("orders-2 is catching up")));
    // A pod not ready.
    let mut members = led(&names, &nodes, [OLD, OLD, NEW]);
    members[2].ready = false;
    assert!(
        matches!(plan(Mode::SingleLeader, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-2 is not ready")
    );
    // A node that does not answer.
    let mut members = led(&names, &nodes, [OLD, OLD, NEW]);
    members[1].node = None;
    assert!(
        matches!(plan(Mode::SingleLeader, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-1 does not answer")
    );
    // No leader (fenced itself).
    let mut fenced = statuses();
    if let Some(l) = fenced[0].single_leader_mut() {
        l.self_fenced = true;
    }
    assert!(matches!(plan_led(&fenced, [OLD, OLD, OLD]),
        Step::Wait { why, .. } if why == "no leader serves"));
}

#[test]
fn paused_holds_and_no_update_revision_is_done() {
    let names = names();
    let nodes = statuses();
    let members = led(&names, &nodes, [OLD, OLD, NEW]);
    assert_eq!(
        plan(Mode::SingleLeader, &members, Some(NEW), true),
        Step::Paused { updated: 1 }
    );
    assert_eq!(plan(Mode::SingleLeader, &members, None, false), Step::Done);
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
        detail: ModeStatus::Leaderless(LeaderlessStatus {
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
    assert!(matches!(plan(Mode::Leaderless, &members, Some(NEW), false),
        Step::Restart { pod, .. } if pod == "orders-2"));

    let mut hinted = nodes.clone();
    hinted[0] = ringed(3, whole());
    let members = led(&names, &hinted, [OLD, OLD, NEW]);
    assert!(matches!(plan(Mode::Leaderless, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-0 holds 3 hints to deliver"));

    let mut down = nodes.clone();
    let mut view = whole();
    view[2] = ring_member(2, false, MemberState::Normal);
    down[1] = ringed(0, view);
    let members = led(&names, &down, [OLD, OLD, NEW]);
    assert!(matches!(plan(Mode::Leaderless, &members, Some(NEW), false),
        Step::Wait { why, .. } if why == "orders-1 sees orders-2 down"));
}

mod laws {
    //! Laws of the plan over random single-leader clusters: whatever the pods' readiness,
    //! revisions, follower lags and who leads, a restart happens only when every member is
    //! ready, answering and caught up; the pod restarted is old; the leader's pod is never
    //! restarted while it leads a follower; a switchover is asked only when the leader is the
    //! last old member; and the plan is Done exactly when every pod is updated.

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Shape {
        size: usize,
        leader: usize,
        ready: Vec<bool>,
        answers: Vec<bool>,
        old: Vec<bool>,
        lag: Vec<u64>,
        fenced: bool,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (1usize..=5).prop_flat_map(|size| {
            (
                Just(size),
                0..size,
                proptest::collection::vec(prop::bool::weighted(0.85), size),
                proptest::collection::vec(prop::bool::weighted(0.9), size),
                proptest::collection::vec(any::<bool>(), size),
                proptest::collection::vec(prop_oneof![Just(0u64), 0u64..200], size),
                prop::bool::weighted(0.1),
            )
                .prop_map(|(size, leader, ready, answers, old, lag, fenced)| Shape {
                    size,
                    leader,
                    ready,
                    answers,
                    old,
                    lag,
                    fenced,
                })
        })
    }

    fn statuses(s: &Shape) -> Vec<NodeStatus> {
        let followers: Vec<usize> = (0..s.size).filter(|&i| i != s.leader).collect();
        (0..s.size)
            .map(|i| {
                if i == s.leader {
                    let mut l = sl_leader(i, 2, &followers);
                    for (f, status) in followers.iter().zip(l.followers.iter_mut()) {
                        status.lag_entries = s.lag[*f];
                    }
                    l.self_fenced = s.fenced;
                    node_status(format!("orders-{i}"), l)
                } else {
                    follower(2, Some(s.leader), (2, 10), Some(5))
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_plan_keeps_its_laws(s in shape()) {
            let names: Vec<String> = (0..s.size).map(|i| format!("orders-{i}")).collect();
            let nodes = statuses(&s);
            let members: Vec<RolloutMember> = (0..s.size)
                .map(|i| RolloutMember {
                    name: &names[i],
                    ready: s.ready[i],
                    revision: Some(if s.old[i] { OLD } else { NEW }),
                    node: s.answers[i].then_some(&nodes[i]),
                })
                .collect();
            let step = plan(Mode::SingleLeader, &members, Some(NEW), false);
            let all_new = s.old.iter().all(|o| !o);
            prop_assert_eq!(step == Step::Done, all_new);
            let whole = s.ready.iter().all(|r| *r)
                && s.answers.iter().all(|a| *a)
                && !s.fenced
                && (0..s.size).all(|i| i == s.leader || s.lag[i] <= CAUGHT_UP_LAG);
            match &step {
                Step::Restart { pod, .. } => {
                    prop_assert!(whole, "restart while not whole: {s:?}");
                    let i = names.iter().position(|n| n == pod).unwrap();
                    prop_assert!(s.old[i], "restarted an updated pod");
                    if i == s.leader {
                        prop_assert_eq!(s.size, 1, "the leader of followers restarted");
                    }
                }
                Step::Switchover { avoid, .. } => {
                    prop_assert!(whole);
                    prop_assert!(s.old[s.leader]);
                    prop_assert!((0..s.size).all(|i| i == s.leader || !s.old[i]));
                    prop_assert!(avoid.contains(&names[s.leader]));
                }
                Step::Wait { .. } => prop_assert!(!whole || all_new, "waited while whole: {s:?}"),
                Step::Paused { .. } => prop_assert!(false, "not paused"),
                Step::Done => {}
            }
        }
    }
}
