//! Table-driven tests of the pure failover decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pretty_assertions::assert_eq;
use rc_api::{
    EpochResponse, FollowerStatus, LogPosition, ModeStatus, NodeStatus, Peer, Replication,
    RequestStats, Role, SingleLeaderStatus, Voter, VoterConfig,
};

use super::*;
use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};

pub(super) const NOW: i64 = 1_700_000_000_000;
pub(super) const LOSS: Duration = Duration::from_millis(1000);
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(5);

pub(super) fn name(i: usize) -> String {
    format!("orders-{i}")
}

pub(super) fn addr(i: usize) -> String {
    format!("10.0.0.{i}:7400")
}

pub(super) fn peer_of(i: usize) -> Peer {
    Peer {
        id: name(i),
        address: addr(i),
    }
}

/// The incarnation of member `i`'s data in these tests.
pub(crate) fn inc(i: usize) -> u64 {
    i as u64 + 1
}

/// The voter set {orders-0, orders-1, orders-2} every initialized node holds here.
pub(super) fn three_voters() -> VoterConfig {
    VoterConfig {
        index: 2,
        voters: (0..3)
            .map(|i| Voter {
                id: name(i),
                incarnation: inc(i),
            })
            .collect(),
        committed: true,
    }
}

pub(super) fn peers(ordinals: &[usize]) -> Vec<Peer> {
    ordinals.iter().map(|i| peer_of(*i)).collect()
}

/// A follower of `leader` in `epoch` that last heard from it `contact_ms` ago.
pub(crate) fn follower(
    epoch: u64,
    leader: Option<usize>,
    last: (u64, u64),
    contact_ms: Option<u64>,
) -> SingleLeaderStatus {
    SingleLeaderStatus {
        incarnation: 0,
        config: (epoch > 0).then(three_voters),
        role: Role::Follower,
        epoch,
        leader: leader.map(name),
        last_log: LogPosition {
            epoch: last.0,
            index: last.1,
        },
        commit_index: last.1,
        applied_index: last.1,
        snapshot_index: 0,
        followers: Vec::new(),
        ms_since_leader_contact: contact_ms,
        self_fenced: false,
        replication: Replication::Quorum,
    }
}

/// What node `id` reports: its single-leader status `s`.
pub(crate) fn node_status(id: String, s: SingleLeaderStatus) -> NodeStatus {
    NodeStatus {
        node_id: id,
        stats: RequestStats::default(),
        credentials: Default::default(),
        detail: ModeStatus::SingleLeader(s),
    }
}

/// The leader of `epoch` replicating to `followers`.
pub(crate) fn leader(me: usize, epoch: u64, followers: &[usize]) -> SingleLeaderStatus {
    SingleLeaderStatus {
        role: Role::Leader,
        followers: followers
            .iter()
            .map(|i| FollowerStatus {
                id: name(*i),
                address: addr(*i),
                match_index: 10,
                lag_entries: 0,
                last_ack_ms: Some(20),
                incarnation: Some(inc(*i)),
                voter: *i < 3,
            })
            .collect(),
        ms_since_leader_contact: Some(0),
        ..follower(epoch, Some(me), (epoch, 10), Some(0))
    }
}

pub(super) fn member(i: usize, pod: PodState, node: Result<SingleLeaderStatus, String>) -> Member {
    Member {
        name: name(i),
        address: (pod != PodState::Missing).then(|| addr(i)),
        stable_address: format!("{}.orders-peers.shop.svc:7400", name(i)),
        pod,
        role_label: None,
        node: node.map(|mut n| {
            n.incarnation = inc(i);
            node_status(name(i), n)
        }),
    }
}

pub(crate) fn up(i: usize, node: SingleLeaderStatus) -> Member {
    member(i, PodState::Ready, Ok(node))
}

pub(super) fn down(i: usize, pod: PodState) -> Member {
    member(i, pod, Err("connection refused".into()))
}

pub(super) fn labelled(mut m: Member, role: &str) -> Member {
    m.role_label = Some(role.to_owned());
    m
}

pub(super) fn view(
    members: Vec<Member>,
    known_epoch: u64,
    no_leader_since_ms: Option<i64>,
) -> View {
    View {
        desired: members.len(),
        had_voters: known_epoch > 0,
        members,
        timing: Timing {
            leader_loss: LOSS,
            min_interval: MIN_INTERVAL,
            deprecated_delay: None,
        },
        last_failover_ms: None,
        known_epoch,
        no_leader_since_ms,
        statuses_read_ms: None,
        switchover: None,
    }
}

/// A healthy 3-node cluster led by orders-0 in epoch 2, labels in place.
pub(super) fn healthy_cluster() -> Vec<Member> {
    vec![
        labelled(up(0, leader(0, 2, &[1, 2])), "leader"),
        labelled(up(1, follower(2, Some(0), (2, 10), Some(30))), "follower"),
        labelled(up(2, follower(2, Some(0), (2, 10), Some(30))), "follower"),
    ]
}

struct Case {
    name: &'static str,
    view: View,
    action: Action,
    /// A substring of the blocked reason, when the decision must say why it does nothing.
    blocked: Option<&'static str>,
}

#[test]
fn the_decision_table_holds() {
    let fresh = |i| up(i, follower(0, None, (0, 0), None));
    let stale = |i| up(i, follower(2, Some(0), (2, 10), Some(2_500)));
    let cases = vec![
        Case {
            name: "a fresh cluster is bootstrapped at epoch 1 once a majority answers",
            view: view(vec![fresh(0), fresh(1), fresh(2)], 0, None),
            action: Action::Bootstrap {
                new_epoch: 1,
                fence: peers(&[0, 1, 2]),
            },
            blocked: None,
        },
        Case {
            name: "a fresh cluster waits while only one node is up",
            view: view(
                vec![
                    fresh(0),
                    down(1, PodState::Missing),
                    down(2, PodState::NotReady),
                ],
                0,
                None,
            ),
            action: Action::Nothing,
            blocked: Some("only 1 of 3 members answer; 2 are needed"),
        },
        Case {
            name: "a healthy leader is left alone",
            view: view(healthy_cluster(), 2, None),
            action: Action::Nothing,
            blocked: None,
        },
        Case {
            name: "an unreachable leader its followers heard from within the timeout is waited for",
            view: view(
                vec![
                    down(0, PodState::NotReady),
                    up(1, follower(2, Some(0), (2, 10), Some(600))),
                    up(2, follower(2, Some(0), (2, 10), Some(700))),
                ],
                2,
                Some(NOW - 300),
            ),
            action: Action::Nothing,
            blocked: Some("only 1 of 3 members lost it"),
        },
        Case {
            name: "an unreachable leader that a majority lost for the timeout is failed over at once",
            view: view(
                vec![down(0, PodState::NotReady), stale(1), stale(2)],
                2,
                None,
            ),
            action: Action::Failover {
                new_epoch: 3,
                fence: peers(&[0, 1, 2]),
                from: Some(name(0)),
            },
            blocked: None,
        },
        Case {
            name: "one follower that lost the leader plus the operator's silence is a majority of 3",
            view: view(
                vec![down(0, PodState::Ready), stale(1), down(2, PodState::NotReady)],
                2,
                None,
            ),
            action: Action::Nothing,
            // Corroborated, but a fence needs two voters to answer.
            blocked: Some("only 1 of 3 voters answer"),
        },
        Case {
            name: "a deleted leader pod is failed over",
            view: view(
                vec![down(0, PodState::Missing), stale(1), stale(2)],
                2,
                Some(NOW - 5_000),
            ),
            action: Action::Failover {
                new_epoch: 3,
                fence: peers(&[1, 2]),
                from: Some(name(0)),
            },
            blocked: None,
        },
        Case {
            name: "a terminating leader hands over to the best other member, even before its followers notice",
            view: view(
                vec![
                    member(0, PodState::Terminating, Ok(leader(0, 2, &[1, 2]))),
                    up(1, follower(2, Some(0), (2, 10), Some(20))),
                    up(2, follower(2, Some(0), (2, 10), Some(20))),
                ],
                2,
                None,
            ),
            action: Action::Switchover {
                new_epoch: 3,
                fence: peers(&[0, 1, 2]),
                from: name(0),
                exclude: vec![name(0)],
                prefer: None,
            },
            blocked: None,
        },
        Case {
            name: "a leader whose address refuses connections is replaced at once, even while a follower still hears it",
            view: view(
                vec![
                    member(
                        0,
                        PodState::Ready,
                        Err("request to 10.0.0.0:7400 failed: error sending request (connection refused)".into()),
                    ),
                    up(1, follower(2, Some(0), (2, 10), Some(100))),
                    up(2, follower(2, Some(0), (2, 10), Some(100))),
                ],
                2,
                None,
            ),
            action: Action::Failover {
                new_epoch: 3,
                fence: peers(&[0, 1, 2]),
                from: Some(name(0)),
            },
            blocked: None,
        },
        Case {
            name: "an unreachable leader that a follower still hears is not deposed",
            view: view(
                vec![
                    down(0, PodState::Ready),
                    stale(1),
                    up(2, follower(2, Some(0), (2, 10), Some(100))),
                ],
                2,
                Some(NOW - 10_000),
            ),
            action: Action::Nothing,
            blocked: Some("orders-2 heard from it 100 ms ago"),
        },
        Case {
            name: "of 5, a leader still heard by one follower is deposed when three lost it",
            view: view(
                vec![
                    down(0, PodState::Ready),
                    up(1, follower(2, Some(0), (2, 10), Some(50))),
                    up(2, follower(2, Some(0), (2, 10), Some(2_500))),
                    up(3, follower(2, Some(0), (2, 10), Some(2_500))),
                    down(4, PodState::NotReady),
                ],
                2,
                None,
            ),
            action: Action::Failover {
                new_epoch: 3,
                fence: peers(&[0, 1, 2, 3, 4]),
                from: Some(name(0)),
            },
            blocked: None,
        },
        Case {
            name: "of 5, a leader still heard by two followers keeps a majority and stays",
            view: view(
                vec![
                    down(0, PodState::Ready),
                    up(1, follower(2, Some(0), (2, 10), Some(50))),
                    up(2, follower(2, Some(0), (2, 10), Some(50))),
                    up(3, follower(2, Some(0), (2, 10), Some(2_500))),
                    up(4, follower(2, Some(0), (2, 10), Some(2_500))),
                ],
                2,
                None,
            ),
            action: Action::Nothing,
            blocked: Some("3 of 5 members lost it"),
        },
        Case {
            name: "a leader that restarted as a follower needs no corroboration",
            view: view(
                vec![
                    up(0, follower(2, Some(0), (2, 10), None)),
                    up(1, follower(2, Some(0), (2, 10), Some(100))),
                    stale(2),
                ],
                2,
                Some(NOW - 3_000),
            ),
            action: Action::Failover {
                new_epoch: 3,
                fence: peers(&[0, 1, 2]),
                from: Some(name(0)),
            },
            blocked: None,
        },
        Case {
            name: "a lost leader with only one member answering is not failed over",
            view: view(
                vec![
                    down(0, PodState::NotReady),
                    stale(1),
                    down(2, PodState::NotReady),
                ],
                2,
                Some(NOW - 3_000),
            ),
            action: Action::Nothing,
            blocked: Some("only 1 of 3 voters answer (orders-1); 2 are needed"),
        },
        Case {
            name: "an operator restarted after the fence promotes the most up-to-date",
            view: view(
                vec![
                    down(0, PodState::NotReady),
                    up(1, follower(3, None, (2, 10), Some(4_000))),
                    up(2, follower(3, None, (2, 11), Some(4_000))),
                ],
                2,
                Some(NOW - 3_000),
            ),
            action: Action::Promote {
                candidate: peer_of(2),
                epoch: 3,
                followers: peers(&[0, 1]),
                voters: vec![],
                elected: true,
            },
            blocked: None,
        },
        Case {
            name: "an operator restarted after the promote sends the stragglers to the leader",
            view: view(
                vec![
                    up(0, leader(0, 2, &[1, 2])),
                    up(1, leader(1, 3, &[0, 2])),
                    up(2, follower(3, None, (2, 10), None)),
                ],
                2,
                Some(NOW - 3_000),
            ),
            action: Action::Follow {
                members: peers(&[0, 2]),
                epoch: 3,
                leader: peer_of(1),
            },
            blocked: None,
        },
        Case {
            name: "a leader with a majority following it only needs its labels moved",
            view: view(
                vec![
                    labelled(up(0, follower(3, Some(1), (2, 10), Some(10))), "leader"),
                    up(1, leader(1, 3, &[0, 2])),
                    labelled(up(2, follower(3, Some(1), (3, 11), Some(10))), "follower"),
                ],
                3,
                None,
            ),
            action: Action::Relabel {
                pods: vec![(name(0), ROLE_FOLLOWER), (name(1), ROLE_LEADER)],
            },
            blocked: None,
        },
        Case {
            name: "after a scale-up the leader is promoted again with the new followers",
            view: view(
                {
                    let mut members = healthy_cluster();
                    members.push(fresh(3));
                    members.push(down(4, PodState::Missing));
                    members
                },
                2,
                None,
            ),
            action: Action::Promote {
                candidate: peer_of(0),
                epoch: 2,
                followers: vec![
                    peer_of(1),
                    peer_of(2),
                    peer_of(3),
                    Peer {
                        id: name(4),
                        address: "orders-4.orders-peers.shop.svc:7400".into(),
                    },
                ],
                voters: vec![],
                elected: false,
            },
            blocked: None,
        },
        Case {
            name: "a member whose pod has no address keeps the address the leader has for it",
            view: view(
                vec![
                    labelled(up(0, leader(0, 2, &[1, 2])), "leader"),
                    down(1, PodState::Missing),
                    labelled(up(2, follower(2, Some(0), (2, 10), Some(30))), "follower"),
                ],
                2,
                None,
            ),
            action: Action::Nothing,
            blocked: None,
        },
        Case {
            name: "a member that restarted without a leader in the epoch is told to follow",
            view: view(
                {
                    let mut members = healthy_cluster();
                    members[2] = up(2, follower(2, None, (2, 10), None));
                    members
                },
                2,
                None,
            ),
            action: Action::Follow {
                members: peers(&[2]),
                epoch: 2,
                leader: peer_of(0),
            },
            blocked: None,
        },
    ];
    for case in cases {
        let decision = decide(&case.view, NOW);
        assert_eq!(decision.action, case.action, "{}", case.name);
        match (case.blocked, &decision.blocked) {
            (None, None) => {}
            (Some(want), Some(got)) => assert!(
                got.reason.contains(want),
                "{}: blocked reason {:?} lacks {want:?}",
                case.name,
                got.reason
            ),
            (want, got) => panic!("{}: blocked {got:?}, wanted {want:?}", case.name),
        }
    }
}

#[test]
fn a_healthy_leader_clears_the_no_leader_time_and_a_lost_one_keeps_it() {
    let healthy = decide(&view(healthy_cluster(), 2, Some(NOW - 500)), NOW);
    assert_eq!(healthy.leader.as_deref(), Some("orders-0"));
    assert_eq!(healthy.no_leader_since_ms, None);

    let members = vec![
        down(0, PodState::NotReady),
        up(1, follower(2, Some(0), (2, 10), Some(900))),
        up(2, follower(2, Some(0), (2, 10), Some(900))),
    ];
    let first = decide(&view(members.clone(), 2, None), NOW);
    assert_eq!(first.no_leader_since_ms, Some(NOW), "the clock starts now");
    assert_eq!(
        first.recheck,
        Some(Duration::from_millis(100)),
        "look again when the freshest contact reaches the timeout"
    );
    assert!(!first.failing_over);
    assert!(
        !first.blocked.unwrap().warn,
        "waiting for the timeout is normal"
    );
    // Still undecided after twice the timeout: the operator may be the one cut off.
    let later = decide(&view(members, 2, Some(NOW - 2_500)), NOW);
    assert_eq!(later.no_leader_since_ms, Some(NOW - 2_500));
    assert!(later.blocked.unwrap().warn);
}

#[test]
fn failovers_decided_on_reachability_keep_the_least_interval_and_gone_leaders_do_not() {
    let recent = |members: Vec<Member>| View {
        last_failover_ms: Some(NOW - 2_000),
        ..view(members, 2, None)
    };
    // Unreachable and corroborated, but the last failover was 2 s ago (least interval 5 s).
    let flapping = decide(
        &recent(vec![
            down(0, PodState::NotReady),
            up(1, follower(2, Some(0), (2, 10), Some(2_500))),
            up(2, follower(2, Some(0), (2, 10), Some(2_500))),
        ]),
        NOW,
    );
    assert_eq!(flapping.action, Action::Nothing);
    assert_eq!(flapping.recheck, Some(Duration::from_secs(3)));
    assert!(flapping.failing_over);
    assert!(flapping
        .blocked
        .unwrap()
        .reason
        .contains("minFailoverIntervalSeconds (5 s)"),);
    // Fenced itself: the same.
    let mut fenced = leader(0, 2, &[1, 2]);
    fenced.self_fenced = true;
    let self_fenced = decide(
        &recent(vec![
            up(0, fenced),
            up(1, follower(2, Some(0), (2, 10), Some(2_500))),
            up(2, follower(2, Some(0), (2, 10), Some(2_500))),
        ]),
        NOW,
    );
    assert_eq!(self_fenced.action, Action::Nothing);
    // Its pod is gone: no flapping to fear, replaced at once.
    let gone = decide(
        &recent(vec![
            down(0, PodState::Missing),
            up(1, follower(2, Some(0), (2, 10), Some(2_500))),
            up(2, follower(2, Some(0), (2, 10), Some(2_500))),
        ]),
        NOW,
    );
    assert!(matches!(gone.action, Action::Failover { .. }), "{gone:?}");
    assert_eq!(gone.cause.map(|c| c.kind), Some("gone"));
}

pub(super) fn answer(i: usize, epoch: u64, last: (u64, u64)) -> Result<EpochResponse, String> {
    Ok(EpochResponse {
        epoch,
        last_log: LogPosition {
            epoch: last.0,
            index: last.1,
        },
        incarnation: inc(i),
        config: Some(three_voters()),
    })
}

fn fenced_view() -> View {
    view(
        vec![
            down(0, PodState::NotReady),
            up(1, follower(2, Some(0), (2, 10), Some(3_000))),
            up(2, follower(2, Some(0), (2, 10), Some(3_000))),
        ],
        2,
        Some(NOW - 3_000),
    )
}

#[test]
fn a_fence_answered_by_a_minority_is_blocked_with_the_count() {
    let answers = vec![
        (name(0), Err("connection refused".to_owned())),
        (name(1), answer(1, 3, (2, 10))),
        (name(2), Err("timed out".to_owned())),
    ];
    assert_eq!(
        after_fence(&fenced_view(), 3, &answers, &[]),
        Err(FenceFailure::Minority(
            "only 1 of 3 voters answered the fence at epoch 3 (orders-1); 2 are needed".into()
        ))
    );
}

#[test]
fn the_most_up_to_date_member_is_promoted_ties_to_the_lowest_ordinal() {
    let promote = |answers: Vec<(String, Result<EpochResponse, String>)>| match after_fence(
        &fenced_view(),
        3,
        &answers,
        &[],
    ) {
        Ok(Action::Promote { candidate, .. }) => candidate.id,
        other => panic!("no promotion: {other:?}"),
    };
    // A longer log wins.
    let longer = vec![
        (name(1), answer(1, 3, (2, 10))),
        (name(2), answer(2, 3, (2, 12))),
    ];
    assert_eq!(promote(longer), "orders-2");
    // A newer last epoch beats a longer log of an older epoch (Raft's up-to-date order).
    let newer = vec![
        (name(0), answer(0, 3, (1, 50))),
        (name(1), answer(1, 3, (2, 11))),
        (name(2), answer(2, 3, (1, 60))),
    ];
    assert_eq!(promote(newer), "orders-1");
    // Equal logs: the lowest ordinal, whatever order the answers came in.
    let tie = vec![
        (name(2), answer(2, 3, (2, 10))),
        (name(1), answer(1, 3, (2, 10))),
    ];
    assert_eq!(promote(tie), "orders-1");
    // The promoted node is given every other member, the lost leader included.
    let full = after_fence(
        &fenced_view(),
        3,
        &[
            (name(1), answer(1, 3, (2, 10))),
            (name(2), answer(2, 3, (2, 10))),
        ],
        &[],
    );
    assert_eq!(
        full,
        Ok(Action::Promote {
            candidate: peer_of(1),
            epoch: 3,
            followers: peers(&[0, 2]),
            voters: vec![],
            elected: true,
        })
    );
}

#[test]
fn a_node_already_past_the_fence_epoch_stops_the_failover() {
    let answers = vec![
        (name(1), answer(1, 3, (2, 10))),
        (name(2), answer(2, 4, (2, 10))),
    ];
    assert!(matches!(
        after_fence(&fenced_view(), 3, &answers, &[]),
        Err(FenceFailure::Superseded(_))
    ));
}

#[test]
fn the_epoch_in_status_is_a_floor_for_the_next_one() {
    let members = vec![
        down(0, PodState::Missing),
        up(1, follower(2, Some(0), (2, 10), Some(3_000))),
        up(2, follower(2, Some(0), (2, 10), Some(3_000))),
    ];
    let decision = decide(&view(members, 7, Some(NOW - 3_000)), NOW);
    assert!(
        matches!(decision.action, Action::Failover { new_epoch: 8, .. }),
        "{decision:?}"
    );
}

#[test]
fn a_leader_promoted_moments_ago_whose_pod_is_not_ready_yet_is_not_replaced() {
    // The e2e saw epochs 1, 2, 3, 4 in 30 ms: right after a promotion the leader's pod is not
    // ready yet (probes lag) and the followers, fenced at the new epoch, have not heard from it
    // yet (its first round is under way), which read as "a majority lost it".
    let mut fresh_leader = leader(0, 1, &[1, 2]);
    fresh_leader.ms_since_leader_contact = None;
    let not_ready = member(0, PodState::NotReady, Ok(fresh_leader));
    let waiting = |i| up(i, follower(1, None, (1, 2), None));
    let just_promoted = View {
        last_failover_ms: Some(NOW - 20),
        ..view(vec![not_ready.clone(), waiting(1), waiting(2)], 1, None)
    };
    let decision = decide(&just_promoted, NOW);
    assert_eq!(decision.action, Action::Nothing, "{decision:?}");
    assert!(!decision.failing_over);
    // The same silence once it has led for leaderLossTimeoutMs (and past the least interval
    // between failovers) is a lost leader.
    let long_ago = View {
        last_failover_ms: Some(NOW - 6_000),
        ..view(vec![not_ready, waiting(1), waiting(2)], 1, None)
    };
    let decision = decide(&long_ago, NOW);
    assert!(
        matches!(&decision.action, Action::Failover { .. }),
        "{decision:?}"
    );
}
