//! The switchover rules: what a request does while the leader serves, and which member the
//! fence elects.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use rc_api::{EpochResponse, LogPosition};

use super::tests::{follower, healthy_cluster, leader, name, peers, three_voters, up, view, NOW};
use super::*;

fn ask(target: Option<usize>, since_ms: i64) -> SwitchoverRequest {
    SwitchoverRequest {
        target: target.map(name),
        since_ms,
        bound: Duration::from_secs(10),
        avoid: Vec::new(),
    }
}

fn decide_with(members: Vec<Member>, request: SwitchoverRequest) -> Decision {
    let mut v = view(members, 2, None);
    v.switchover = Some(request);
    decide(&v, NOW)
}

#[test]
fn a_caught_up_target_is_switched_to_at_a_new_epoch_with_the_leader_excluded() {
    let d = decide_with(healthy_cluster(), ask(Some(2), NOW));
    assert_eq!(
        d.action,
        Action::Switchover {
            new_epoch: 3,
            fence: peers(&[0, 1, 2]),
            from: name(0),
            exclude: vec![name(0)],
            prefer: Some(name(2)),
        }
    );
    assert_eq!(d.cause.map(|c| c.kind), Some("switchover"));
    // `any` away from orders-0: the first caught-up voter.
    let mut away = ask(None, NOW);
    away.avoid = vec![name(0)];
    let d = decide_with(healthy_cluster(), away.clone());
    assert!(matches!(d.action, Action::Switchover { prefer: Some(p), .. } if p == name(1)));
    // Once orders-1 leads (the same pass decides again), it is done: no ping-pong.
    let moved = vec![
        up(0, follower(3, Some(1), (3, 11), Some(5))),
        up(1, leader(1, 3, &[0, 2])),
        up(2, follower(3, Some(1), (3, 11), Some(5))),
    ];
    let d = decide_with(moved, away);
    assert!(
        matches!(d.switchover, Some(SwitchoverState::Done(_))),
        "{d:?}"
    );
    assert!(!matches!(d.action, Action::Switchover { .. }));
}

#[test]
fn a_request_for_the_leader_is_done_and_bad_targets_are_refused_at_once() {
    let d = decide_with(healthy_cluster(), ask(Some(0), NOW));
    assert!(matches!(d.switchover, Some(SwitchoverState::Done(_))));
    assert_eq!(d.action, Action::Nothing);

    let mut unknown = ask(None, NOW);
    unknown.target = Some("orders-9".into());
    let d = decide_with(healthy_cluster(), unknown);
    assert!(
        matches!(&d.switchover, Some(SwitchoverState::Refused(m)) if m.contains("orders-9 is not a member")),
        "{d:?}"
    );
    assert!(!matches!(d.action, Action::Switchover { .. }));

    let mut fenced = ask(Some(1), NOW);
    fenced.avoid = vec![name(1)];
    let d = decide_with(healthy_cluster(), fenced);
    assert!(matches!(&d.switchover, Some(SwitchoverState::Refused(m)) if m.contains("fenced")));
}

#[test]
fn a_lagging_target_is_waited_for_then_refused_after_the_bound() {
    let mut members = healthy_cluster();
    if let Some(n) = members[0]
        .node
        .as_mut()
        .ok()
        .and_then(|n| n.single_leader_mut())
    {
        n.followers[1].lag_entries = 5_000;
    }
    let d = decide_with(members.clone(), ask(Some(2), NOW - 1_000));
    assert!(
        matches!(&d.switchover, Some(SwitchoverState::Waiting(m)) if m == "orders-2 is 5000 entries behind the leader")
    );
    assert_eq!(d.recheck, Some(switchover::RECHECK));
    assert!(!matches!(d.action, Action::Switchover { .. }));
    let d = decide_with(members, ask(Some(2), NOW - 10_000));
    assert!(
        matches!(&d.switchover, Some(SwitchoverState::Refused(m)) if m.contains("nothing changed"))
    );
}

fn answer(last: u64) -> Result<EpochResponse, String> {
    Ok(EpochResponse {
        epoch: 3,
        last_log: LogPosition {
            epoch: 2,
            index: last,
        },
        incarnation: 0,
        config: Some(three_voters()),
    })
}

fn answers(lasts: [u64; 3]) -> Vec<(String, Result<EpochResponse, String>)> {
    (0..3)
        .map(|i| (name(i), answer(lasts[i])))
        .map(|(n, mut a)| {
            if let Ok(r) = a.as_mut() {
                r.incarnation =
                    super::tests::inc(n.trim_start_matches("orders-").parse().unwrap_or(0));
            }
            (n, a)
        })
        .collect()
}

fn promoted(action: Result<Action, FenceFailure>) -> String {
    match action {
        Ok(Action::Promote { candidate, .. }) => candidate.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_fence_elects_the_preferred_member_only_when_it_is_electable() {
    let v = view(healthy_cluster(), 2, None);
    let exclude = [name(0)];
    let pick = |lasts, prefer| {
        promoted(after_fence_preferring(
            &v,
            3,
            &answers(lasts),
            &exclude,
            prefer,
        ))
    };
    // Every log equal: the preferred member; without a preference, the first of the best.
    assert_eq!(pick([10, 10, 10], Some("orders-2")), name(2));
    assert_eq!(pick([10, 10, 10], None), name(1));
    // orders-1 and the old leader hold entry 11 (maybe committed) that orders-2 lacks: orders-2
    // is not electable, the most up-to-date member leads instead.
    assert_eq!(pick([11, 11, 10], Some("orders-2")), name(1));
    // Entry 11 only on the old leader (never committed): orders-2 is electable.
    assert_eq!(pick([11, 10, 10], Some("orders-2")), name(2));
}
