//! Tests of elections over voter sets and of the voter-set steps: learners and members that
//! lost their data never count, and the voters change one member at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use rc_api::{EpochResponse, SingleLeaderStatus, Voter, VoterConfig};

use super::tests::*;
use super::*;

fn voters_of(ordinals: &[usize]) -> VoterConfig {
    VoterConfig {
        index: 9,
        voters: ordinals
            .iter()
            .map(|i| Voter {
                id: name(*i),
                incarnation: inc(*i),
            })
            .collect(),
        committed: true,
    }
}

/// A member whose volume was replaced: empty log, no voter set, a new incarnation.
fn wiped(epoch: u64) -> Result<EpochResponse, String> {
    Ok(EpochResponse {
        epoch,
        last_log: rc_api::LogPosition::default(),
        incarnation: 777,
        config: None,
    })
}

fn five_members_three_voters() -> View {
    let mut members = Vec::new();
    for i in 0..5 {
        let mut node = follower(2, Some(0), (2, 10), Some(3_000));
        node.config = Some(voters_of(&[0, 1, 2]));
        members.push(up(i, node));
    }
    members[0] = down(0, PodState::NotReady);
    view(members, 2, Some(NOW - 3_000))
}

#[test]
fn a_member_that_lost_its_data_is_not_counted_in_the_fence() {
    let answers = vec![
        (name(0), Err("connection refused".to_owned())),
        (name(1), wiped(3)),
        (name(2), answer(2, 3, (2, 10))),
    ];
    let fenced = view(
        vec![
            down(0, PodState::NotReady),
            up(1, follower(0, None, (0, 0), None)),
            up(2, follower(2, Some(0), (2, 10), Some(3_000))),
        ],
        2,
        Some(NOW - 3_000),
    );
    assert_eq!(
        after_fence(&fenced, 3, &answers, &[]),
        Err(FenceFailure::Minority(
            "only 1 of 3 voters answered the fence at epoch 3 (orders-2); 2 are needed; orders-1 answered with data lost since it became a voter and cannot count".into()
        ))
    );
}

#[test]
fn learners_never_make_a_fence_majority_and_a_longer_learner_log_is_not_chosen() {
    let learner = |i: usize, last: (u64, u64)| {
        let mut a = answer(i, 3, last).unwrap();
        a.config = Some(voters_of(&[0, 1, 2]));
        (name(i), Ok(a))
    };
    let voter = |i: usize, last| {
        let mut a = answer(i, 3, last).unwrap();
        a.config = Some(voters_of(&[0, 1, 2]));
        (name(i), Ok(a))
    };
    // 3 -> 5 while orders-3 and orders-4 are empty learners: they answer, orders-1 does not.
    let answers = vec![voter(2, (2, 10)), learner(3, (0, 0)), learner(4, (0, 0))];
    assert!(
        matches!(
            after_fence(&five_members_three_voters(), 3, &answers, &[]),
            Err(FenceFailure::Minority(_))
        ),
        "three of five members answered, but only one voter"
    );
    // A learner ahead of every voter is not elected; a voter with a majority is.
    let answers = vec![voter(1, (2, 10)), voter(2, (2, 10)), learner(3, (2, 12))];
    match after_fence(&five_members_three_voters(), 3, &answers, &[]) {
        Ok(Action::Promote { candidate, .. }) => assert_eq!(candidate.id, name(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cluster_that_had_voters_is_never_bootstrapped_again_from_empty_members() {
    let fresh = |i| up(i, follower(0, None, (0, 0), None));
    let decision = decide(&view(vec![fresh(0), fresh(1), fresh(2)], 4, None), NOW);
    assert_eq!(decision.action, Action::Nothing);
    let reason = decision.blocked.map(|b| b.reason).unwrap_or_default();
    assert!(reason.contains("lost their data"), "{reason}");
}

/// orders-0 leads epoch 2 replicating to `followers` (all caught up), voters `voters`.
fn led(members: usize, desired: usize, voters: &[usize], followers: &[usize]) -> View {
    let config = voters_of(voters);
    let mut lead: SingleLeaderStatus = leader(0, 2, followers);
    lead.config = Some(config.clone());
    for f in &mut lead.followers {
        f.voter = config.has_id(&f.id);
    }
    let mut all = vec![labelled(up(0, lead), "leader")];
    for i in 1..members {
        let mut node = follower(2, Some(0), (2, 10), Some(30));
        node.config = Some(config.clone());
        all.push(labelled(up(i, node), "follower"));
    }
    let mut v = view(all, 2, None);
    v.desired = desired;
    v
}

fn set_voters(voters: &[usize]) -> Vec<String> {
    voters.iter().map(|i| name(*i)).collect()
}

#[test]
fn a_caught_up_learner_is_added_as_a_voter_one_at_a_time() {
    let decision = decide(&led(5, 5, &[0, 1, 2], &[1, 2, 3, 4]), NOW);
    match decision.action {
        Action::SetVoters { voters, epoch, .. } => {
            assert_eq!((voters, epoch), (set_voters(&[0, 1, 2, 3]), 2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_learner_still_catching_up_is_waited_for_and_labels_still_move() {
    let mut v = led(4, 4, &[0, 1, 2], &[1, 2, 3]);
    if let Some(lead) = v.members[0]
        .node
        .as_mut()
        .ok()
        .and_then(|n| n.single_leader_mut())
    {
        lead.followers[2].match_index = 3;
    }
    v.members[3].role_label = None;
    let decision = decide(&v, NOW);
    assert_eq!(
        decision.action,
        Action::Relabel {
            pods: vec![(name(3), "follower")]
        }
    );
    assert_eq!(
        decision.voters_pending.as_deref(),
        Some("orders-3 is a learner catching up (log index 3 of 10)")
    );
}

#[test]
fn voters_beyond_the_spec_are_removed_highest_first_and_the_leader_last_after_a_switchover() {
    let decision = decide(&led(5, 3, &[0, 1, 2, 3, 4], &[1, 2, 3, 4]), NOW);
    match decision.action {
        Action::SetVoters { voters, .. } => assert_eq!(voters, set_voters(&[0, 1, 2, 3])),
        other => panic!("{other:?}"),
    }
    // 3 -> 1 with orders-0 leading: orders-2 goes, then orders-1.
    let decision = decide(&led(3, 1, &[0, 1, 2], &[1, 2]), NOW);
    assert!(
        matches!(&decision.action, Action::SetVoters { voters, .. } if *voters == set_voters(&[0, 1])),
        "{decision:?}"
    );
    // The leader itself beyond the spec: hand over first, to a member that stays.
    let decision = decide(&led(2, 1, &[0, 1], &[1]), NOW);
    assert!(
        matches!(&decision.action, Action::SetVoters { voters, .. } if *voters == set_voters(&[0])),
        "{decision:?}"
    );
    let mut v = led(4, 3, &[0, 1, 2, 3], &[1, 2, 3]);
    v.desired = 3;
    // Make orders-3 the leader: swap the statuses of orders-0 and orders-3.
    let mut lead: SingleLeaderStatus = leader(3, 2, &[0, 1, 2]);
    lead.config = Some(voters_of(&[0, 1, 2, 3]));
    v.members[3] = labelled(up(3, lead), "leader");
    let mut f0 = follower(2, Some(3), (2, 10), Some(30));
    f0.config = Some(voters_of(&[0, 1, 2, 3]));
    v.members[0] = labelled(up(0, f0), "follower");
    for i in 1..3 {
        if let Some(n) = v.members[i]
            .node
            .as_mut()
            .ok()
            .and_then(|n| n.single_leader_mut())
        {
            n.leader = Some(name(3));
        }
    }
    match decide(&v, NOW).action {
        Action::Switchover {
            new_epoch,
            from,
            exclude,
            ..
        } => assert_eq!((new_epoch, from, exclude), (3, name(3), vec![name(3)])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_voter_that_lost_its_data_is_removed_first_and_a_change_committing_is_waited_for() {
    let mut v = led(3, 3, &[0, 1, 2], &[1, 2]);
    if let Some(n) = v.members[2]
        .node
        .as_mut()
        .ok()
        .and_then(|n| n.single_leader_mut())
    {
        n.incarnation = 555;
    }
    match decide(&v, NOW).action {
        Action::SetVoters { voters, why, .. } => {
            assert_eq!(voters, set_voters(&[0, 1]));
            assert!(why.contains("lost its data"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let mut v = led(4, 4, &[0, 1, 2], &[1, 2, 3]);
    if let Some(lead) = v.members[0]
        .node
        .as_mut()
        .ok()
        .and_then(|n| n.single_leader_mut())
    {
        if let Some(c) = lead.config.as_mut() {
            c.committed = false;
        }
    }
    let decision = decide(&v, NOW);
    assert_eq!(decision.action, Action::Nothing);
    assert_eq!(
        decision.voters_pending.as_deref(),
        Some("the voter set at log index 9 is committing")
    );
}
