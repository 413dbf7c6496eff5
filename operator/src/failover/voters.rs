//! (pure) The next voter-set change of a single-leader cluster whose leader serves.
//!
//! The voter set lives in the nodes' logs (a configuration entry the leader appends and
//! commits); this only chooses the next one-member step towards "the first `spec.replicas`
//! members vote, each with the data it acknowledged", in this order:
//!
//! ```text
//! a change is still committing                      -> wait
//! a voter answers as a new incarnation (lost data)  -> remove it (it rejoins as a learner)
//! a wanted member is a caught-up learner            -> add it (lowest ordinal first)
//! a voter is beyond spec.replicas                   -> remove it (highest ordinal first);
//!                                                      the leader is switched away first
//! a wanted learner is still catching up             -> wait
//! ```
//!
//! The node enforces the same rules (one change at a time, a caught-up learner, never the
//! leader, a live majority after the change), so a stale view can only be refused, never unsafe.

use rc_api::{FollowerStatus, Peer, SingleLeaderStatus, VoterConfig};

use super::{choose::fence_targets, Action, View};

/// What [`next_step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The voter set is what the spec wants.
    Done,
    /// Nothing can be done now; the reason, for the `Progressing` condition.
    Wait(String),
    Act(Action),
}

/// The next step, from the serving leader `leader`'s status.
pub(super) fn next_step(view: &View, leader: &Peer, status: &SingleLeaderStatus) -> Step {
    let Some(config) = &status.config else {
        return Step::Done;
    };
    if !config.committed {
        return Step::Wait(format!(
            "the voter set at log index {} is committing",
            config.index
        ));
    }
    let wanted: Vec<&str> = view
        .members
        .iter()
        .take(view.desired)
        .map(|m| m.name.as_str())
        .collect();
    let change = |voters: Vec<String>, why: String| {
        Step::Act(Action::SetVoters {
            leader: leader.clone(),
            epoch: status.epoch,
            voters,
            why,
        })
    };
    if let Some(lost) = lost_voter(view, &leader.id, config) {
        let why = format!(
            "{lost} lost its data (it answers as a new incarnation): removing it from the voters; it rejoins as a learner"
        );
        return change(without(config, lost), why);
    }
    if let Some((name, index)) = caught_up_learner(&wanted, config, status) {
        let why =
            format!("{name} caught up as a learner (log index {index}): adding it to the voters");
        return change(with(config, name), why);
    }
    if let Some(leaving) = extra_voter(&wanted, config) {
        if leaving != leader.id {
            let why = format!(
                "{leaving} is beyond spec.replicas ({}): removing it from the voters",
                view.desired
            );
            return change(without(config, leaving), why);
        }
        return hand_over_before_leaving(view, leader, status, &wanted);
    }
    catching_up(&wanted, config, status).map_or(Step::Done, Step::Wait)
}

/// The first wanted member that is a caught-up learner (lowest ordinal first), and its log
/// index.
fn caught_up_learner<'a>(
    wanted: &[&'a str],
    config: &VoterConfig,
    status: &SingleLeaderStatus,
) -> Option<(&'a str, u64)> {
    wanted
        .iter()
        .filter(|name| !config.has_id(name))
        .find_map(|name| {
            let f = status.followers.iter().find(|f| f.id == *name)?;
            caught_up(f, status).then_some((*name, f.match_index))
        })
}

/// Why the first wanted member that is not a voter is not a caught-up learner yet.
fn catching_up(
    wanted: &[&str],
    config: &VoterConfig,
    status: &SingleLeaderStatus,
) -> Option<String> {
    wanted
        .iter()
        .filter(|name| !config.has_id(name))
        .find_map(
            |name| match status.followers.iter().find(|f| f.id == *name) {
                Some(f) if caught_up(f, status) => None,
                Some(f) => Some(format!(
                    "{name} is a learner catching up (log index {} of {})",
                    f.match_index, status.commit_index
                )),
                None => Some(format!("{name} is not replicated to yet")),
            },
        )
}

/// A learner that reports its incarnation and holds every committed entry: ready to vote.
fn caught_up(f: &FollowerStatus, status: &SingleLeaderStatus) -> bool {
    f.incarnation.is_some() && f.match_index >= status.commit_index
}

/// The voter beyond spec.replicas to remove first: the highest ordinal.
fn extra_voter<'a>(wanted: &[&str], config: &'a VoterConfig) -> Option<&'a str> {
    let mut extra: Vec<&str> = config
        .voters
        .iter()
        .map(|v| v.id.as_str())
        .filter(|id| !wanted.contains(id))
        .collect();
    extra.sort_by_key(|id| std::cmp::Reverse(ordinal(id)));
    extra.first().copied()
}

/// The leader leaves last, after handing over to a caught-up voter that stays.
fn hand_over_before_leaving(
    view: &View,
    leader: &Peer,
    status: &SingleLeaderStatus,
    wanted: &[&str],
) -> Step {
    let ready = status.followers.iter().any(|f| {
        f.voter && wanted.contains(&f.id.as_str()) && f.match_index >= status.last_log.index
    });
    if !ready {
        return Step::Wait(format!(
            "leader {} is leaving the voters: waiting for a voter that stays to catch up before handing over",
            leader.id
        ));
    }
    Step::Act(Action::Switchover {
        new_epoch: status.epoch + 1,
        fence: fence_targets(view),
        from: leader.id.clone(),
        exclude: view
            .members
            .iter()
            .skip(view.desired)
            .map(|m| m.name.clone())
            .collect(),
        prefer: None,
    })
}

/// A voter (not the leader) whose node now reports another incarnation than the voter set.
fn lost_voter<'a>(view: &View, leader: &str, config: &'a VoterConfig) -> Option<&'a str> {
    config.voters.iter().find_map(|v| {
        let member = view.members.iter().find(|m| m.name == v.id)?;
        let node = member.status().ok()?;
        (v.id != leader && node.incarnation != 0 && node.incarnation != v.incarnation)
            .then_some(v.id.as_str())
    })
}

fn without(config: &VoterConfig, id: &str) -> Vec<String> {
    config
        .voters
        .iter()
        .filter(|v| v.id != id)
        .map(|v| v.id.clone())
        .collect()
}

fn with(config: &VoterConfig, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = config.voters.iter().map(|v| v.id.clone()).collect();
    ids.push(id.to_owned());
    ids
}

/// The StatefulSet ordinal at the end of a pod name (`orders-3` -> 3).
fn ordinal(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
