//! Table-driven tests of the pure membership decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use rc_api::{LeaderlessStatus, MemberState, MemberView, ModeStatus, RequestStats, StreamState};

use super::*;
use MemberState::{Joining as J, Leaving as L, Normal as N};
use StreamState::{Decommissioned, Idle, Joined, Streaming};

fn name(i: usize) -> String {
    format!("orders-{i}")
}

fn addr(i: usize) -> String {
    format!("10.0.0.{i}:7400")
}

fn ring(version: u64, members: &[(usize, MemberState)]) -> Ring {
    Ring {
        version,
        members: members
            .iter()
            .map(|(i, state)| RingMember {
                id: name(*i),
                address: addr(*i),
                state: *state,
            })
            .collect(),
    }
}

fn peers(ordinals: &[usize]) -> Vec<Peer> {
    ordinals
        .iter()
        .map(|i| Peer {
            id: name(*i),
            address: addr(*i),
        })
        .collect()
}

/// What a leaderless node reports: `ring` installed (or none), streaming state `stream`.
fn node(i: usize, ring: Option<&Ring>, stream: StreamState) -> NodeStatus {
    NodeStatus {
        node_id: name(i),
        stats: RequestStats::default(),
        credentials: Default::default(),
        detail: ModeStatus::Leaderless(LeaderlessStatus {
            ring_version: ring.map_or(0, |r| r.version),
            members: ring
                .iter()
                .flat_map(|r| r.members.iter())
                .map(|m| MemberView::of(m, true))
                .collect(),
            replication_factor: 3,
            write_quorum: 2,
            read_quorum: 2,
            keys: 10,
            hints_queued: 0,
            stream,
            keys_streamed: 0,
            anti_entropy_rounds: 0,
            keys_repaired: 0,
            restoring: false,
            hints_for: Default::default(),
        }),
    }
}

fn up(i: usize, ring: Option<&Ring>, stream: StreamState) -> Pod {
    Pod {
        name: name(i),
        address: Some(addr(i)),
        node: Ok(node(i, ring, stream)),
    }
}

/// Member `i` on `ring`, holding `n` hints for member `target`.
fn hinting(i: usize, ring: &Ring, target: usize, n: u64) -> Pod {
    let mut pod = up(i, Some(ring), Idle);
    if let Ok(status) = &mut pod.node {
        if let Some(l) = status.leaderless_mut() {
            l.hints_for.insert(name(target), n);
            l.hints_queued = n;
        }
    }
    pod
}

fn no_address(i: usize) -> Pod {
    Pod {
        name: name(i),
        address: None,
        node: Err("pod has no address yet".into()),
    }
}

fn unreachable(i: usize) -> Pod {
    Pod {
        node: Err("connection refused".into()),
        ..up(i, None, Idle)
    }
}

fn view(desired: usize, recorded: Option<Ring>, pods: Vec<Pod>) -> View {
    View {
        desired: (0..desired).map(name).collect(),
        replication_factor: 3,
        recorded,
        pods,
    }
}

fn push(ring: Ring, targets: &[usize], change: Change) -> Action {
    Action::Push {
        ring,
        targets: peers(targets),
        change,
    }
}

fn names(ordinals: &[usize]) -> Vec<String> {
    ordinals.iter().map(|i| name(*i)).collect()
}

/// (warn, scale_down) of the expected wait.
type Waits = Option<(bool, bool)>;

#[test]
fn each_situation_leads_to_the_expected_next_step() {
    let v1 = ring(1, &[(0, N), (1, N), (2, N)]);
    let v2_join = ring(2, &[(0, N), (1, N), (2, N), (3, J)]);
    let v3_four = ring(3, &[(0, N), (1, N), (2, N), (3, N)]);
    let v4_leave = ring(4, &[(0, N), (1, N), (2, N), (3, L)]);
    let v5_three = ring(5, &[(0, N), (1, N), (2, N)]);
    let on = |r: &Ring, ordinals: &[usize]| -> Vec<Pod> {
        ordinals.iter().map(|i| up(*i, Some(r), Idle)).collect()
    };
    let with = |mut pods: Vec<Pod>, pod: Pod| {
        pods.retain(|p| p.name != pod.name);
        pods.push(pod);
        pods
    };
    let cases: Vec<(&str, View, Action, Waits)> = vec![
        (
            "bootstrap waits until every wanted pod has an address",
            view(
                3,
                None,
                vec![up(0, None, Idle), up(1, None, Idle), no_address(2)],
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "bootstrap installs ring v1 with every member normal",
            view(3, None, (0..3).map(|i| up(i, None, Idle)).collect()),
            push(v1.clone(), &[0, 1, 2], Change::Bootstrap),
            None,
        ),
        (
            "a steady cluster needs nothing",
            view(3, Some(v1.clone()), on(&v1, &[0, 1, 2])),
            Action::Nothing,
            None,
        ),
        (
            "a member that restarted without its ring gets it again",
            view(
                3,
                Some(v1.clone()),
                with(on(&v1, &[0, 1, 2]), up(1, None, Idle)),
            ),
            push(v1.clone(), &[1], Change::Resend),
            None,
        ),
        (
            "scale up waits for the new pod's node to answer",
            view(
                4,
                Some(v1.clone()),
                with(on(&v1, &[0, 1, 2]), unreachable(3)),
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "scale up adds the new pod as joining",
            view(
                4,
                Some(v1.clone()),
                with(on(&v1, &[0, 1, 2]), up(3, None, Idle)),
            ),
            push(v2_join.clone(), &[0, 1, 2, 3], Change::Join(names(&[3]))),
            None,
        ),
        (
            "scale up waits while the joining member streams",
            view(
                4,
                Some(v2_join.clone()),
                with(on(&v2_join, &[0, 1, 2]), up(3, Some(&v2_join), Streaming)),
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "a joined member becomes normal",
            view(
                4,
                Some(v2_join.clone()),
                with(on(&v2_join, &[0, 1, 2]), up(3, Some(&v2_join), Joined)),
            ),
            push(v3_four.clone(), &[0, 1, 2, 3], Change::Joined(names(&[3]))),
            None,
        ),
        (
            "a joined member waits while another member holds hints for it",
            view(
                4,
                Some(v2_join.clone()),
                with(
                    vec![
                        up(0, Some(&v2_join), Idle),
                        hinting(1, &v2_join, 3, 7),
                        up(2, Some(&v2_join), Idle),
                    ],
                    up(3, Some(&v2_join), Joined),
                ),
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "a joined member waits while a member does not answer (it may be on an older ring)",
            view(
                4,
                Some(v2_join.clone()),
                with(
                    vec![
                        up(0, Some(&v2_join), Idle),
                        unreachable(1),
                        up(2, Some(&v2_join), Idle),
                    ],
                    up(3, Some(&v2_join), Joined),
                ),
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "scale down marks the highest ordinal leaving",
            view(3, Some(v3_four.clone()), on(&v3_four, &[0, 1, 2, 3])),
            push(v4_leave.clone(), &[0, 1, 2, 3], Change::Leave(names(&[3]))),
            None,
        ),
        (
            "scale down waits while a member does not answer",
            view(
                3,
                Some(v3_four.clone()),
                with(on(&v3_four, &[0, 1, 2, 3]), unreachable(1)),
            ),
            Action::Nothing,
            Some((true, true)),
        ),
        (
            "scale down below the replication factor is refused",
            view(2, Some(v1.clone()), on(&v1, &[0, 1, 2])),
            Action::Nothing,
            Some((true, true)),
        ),
        (
            "a leaving member is told to decommission once every member has the ring",
            view(3, Some(v4_leave.clone()), on(&v4_leave, &[0, 1, 2, 3])),
            Action::Decommission {
                members: peers(&[3]),
            },
            None,
        ),
        (
            "decommission waits for a member on the older ring to get the new one",
            view(
                3,
                Some(v4_leave.clone()),
                with(on(&v4_leave, &[0, 1, 2, 3]), up(2, Some(&v3_four), Idle)),
            ),
            push(v4_leave.clone(), &[2], Change::Resend),
            None,
        ),
        (
            "decommission waits while a member does not answer",
            view(
                3,
                Some(v4_leave.clone()),
                with(on(&v4_leave, &[0, 1, 2, 3]), unreachable(0)),
            ),
            Action::Nothing,
            Some((true, true)),
        ),
        (
            "a decommissioning member is waited for",
            view(
                3,
                Some(v4_leave.clone()),
                with(on(&v4_leave, &[0, 1, 2]), up(3, Some(&v4_leave), Streaming)),
            ),
            Action::Nothing,
            Some((false, false)),
        ),
        (
            "a decommissioned member is removed from the ring",
            view(
                3,
                Some(v4_leave.clone()),
                with(
                    on(&v4_leave, &[0, 1, 2]),
                    up(3, Some(&v4_leave), Decommissioned),
                ),
            ),
            push(v5_three.clone(), &[0, 1, 2], Change::Remove(names(&[3]))),
            None,
        ),
        (
            "a removed member's pod that still runs is left alone",
            view(
                3,
                Some(v5_three.clone()),
                with(
                    on(&v5_three, &[0, 1, 2]),
                    up(3, Some(&v4_leave), Decommissioned),
                ),
            ),
            Action::Nothing,
            None,
        ),
        (
            "an operator restarted after marking leaving resumes from the nodes' newer ring",
            view(3, Some(v3_four.clone()), on(&v4_leave, &[0, 1, 2, 3])),
            Action::Decommission {
                members: peers(&[3]),
            },
            None,
        ),
        (
            "an operator restarted after adding a member resumes from the nodes' newer ring",
            view(
                4,
                Some(v1.clone()),
                with(on(&v2_join, &[0, 1, 2]), up(3, Some(&v2_join), Joined)),
            ),
            push(v3_four.clone(), &[0, 1, 2, 3], Change::Joined(names(&[3]))),
            None,
        ),
        (
            "nodes that lost their ring get the recorded one again",
            view(
                3,
                Some(v5_three.clone()),
                (0..3).map(|i| up(i, None, Idle)).collect(),
            ),
            push(v5_three.clone(), &[0, 1, 2], Change::Resend),
            None,
        ),
    ];
    for (case, view, action, waits) in cases {
        let decision = decide(&view);
        assert_eq!(decision.action, action, "{case}");
        let got = decision.wait.as_ref().map(|w| (w.warn, w.scale_down));
        assert_eq!(got, waits, "{case}: {:?}", decision.wait);
    }
}

#[test]
fn a_member_back_at_a_new_address_is_moved_in_a_new_ring_version() {
    let v1 = ring(1, &[(0, N), (1, N), (2, N)]);
    let mut pods: Vec<Pod> = (0..3).map(|i| up(i, Some(&v1), Idle)).collect();
    pods[1].address = Some("10.0.0.9:7400".into());
    pods[1].node = Ok(node(1, None, Idle));
    let decision = decide(&view(3, Some(v1.clone()), pods));
    let moved = Peer {
        id: name(1),
        address: "10.0.0.9:7400".into(),
    };
    let mut v2 = ring(2, &[(0, N), (1, N), (2, N)]);
    v2.members[1].address = moved.address.clone();
    let mut targets = peers(&[0, 1, 2]);
    targets[1] = moved.clone();
    assert_eq!(
        decision.action,
        Action::Push {
            ring: v2,
            targets,
            change: Change::Moved(vec![moved]),
        }
    );
}

#[test]
fn a_change_under_way_is_reported_and_a_steady_ring_is_not() {
    let v1 = ring(1, &[(0, N), (1, N), (2, N)]);
    let pods = || (0..3).map(|i| up(i, Some(&v1), Idle)).collect::<Vec<_>>();
    assert!(!decide(&view(3, Some(v1.clone()), pods())).changing);
    assert!(decide(&view(2, Some(v1.clone()), pods())).changing);
    let mut grown = pods();
    grown.push(no_address(3));
    assert!(decide(&view(4, Some(v1.clone()), grown)).changing);
}

#[test]
fn the_newest_ring_wins_and_records_round_trip() {
    let v1 = ring(1, &[(0, N), (1, N), (2, N)]);
    let v2 = ring(2, &[(0, N), (1, N), (2, N), (3, J)]);
    let nodes = [node(0, Some(&v2), Idle), node(1, Some(&v1), Idle)];
    assert_eq!(newest_ring(Some(&v1), nodes.iter()), Some(v2.clone()));
    assert_eq!(newest_ring(Some(&v2), [].iter()), Some(v2.clone()));
    assert_eq!(newest_ring(None, [node(0, None, Idle)].iter()), None);
    assert_eq!(from_record(&to_record(&v2)), Some(v2));
}
