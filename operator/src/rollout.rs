//! (pure) Rolling updates: which pod to restart next so that a new pod template reaches every
//! member, one at a time, without taking down more than one member or the leader's majority.
//!
//! The StatefulSet uses `OnDelete`: the StatefulSet controller only creates missing pods (at
//! the update revision), and the operator decides when each old pod goes (an eviction, so the
//! PodDisruptionBudget is honoured too). Everything is derived from what exists (each pod's
//! `controller-revision-hash` against the StatefulSet's update revision), so a rollout resumes
//! where it was after an operator restart.
//!
//! ```text
//! every pod at the update revision                        -> Done
//! spec.paused                                             -> Paused (before the next restart)
//! a pod missing, terminating, not ready or unreachable    -> Wait (one member down at most)
//! SingleLeader: no leader serves, or a follower lags      -> Wait (each caught up: streaming
//!                                                            live, see CAUGHT_UP_LAG)
//! SingleLeader: an old follower                           -> Restart it (highest ordinal first)
//! SingleLeader: only the leader is old                    -> Switchover to an updated follower
//! Leaderless: ring changing, a member not alive to another,
//!   or hints queued                                       -> Wait
//! Leaderless: an old member                               -> Restart it (highest ordinal first)
//! ```

use rc_api::{MemberState, NodeStatus, Role};

/// A follower at most this many entries behind, and acknowledging within the last second, is
/// caught up: it streams the live log. (Lag 0 at the instant of a status read is rarely seen
/// under continuous writes, where some entries are always in flight; a follower back from a
/// restart with a backlog is thousands behind.)
pub const CAUGHT_UP_LAG: u64 = 64;

use crate::crd::Mode;

/// One member's pod and node, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutMember<'a> {
    pub name: &'a str,
    /// The pod exists, is not being deleted, and is Ready.
    pub ready: bool,
    /// The pod's `controller-revision-hash`, when it has a pod.
    pub revision: Option<&'a str>,
    pub node: Option<&'a NodeStatus>,
}

/// What the rollout does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the update revision (or there is none yet).
    Done,
    /// Old pods remain, but `spec.paused` holds the rollout.
    Paused { updated: usize },
    /// Nothing may be restarted now; why (the `Progressing` condition's message).
    Wait { updated: usize, why: String },
    /// Evict this pod; why.
    Restart {
        updated: usize,
        pod: String,
        why: String,
    },
    /// SingleLeader: every follower is updated; move the leadership to one of them (the leader
    /// step does it), avoiding these old members.
    Switchover { updated: usize, avoid: Vec<String> },
}

impl Step {
    /// Pods at the update revision.
    pub fn updated(&self, total: usize) -> usize {
        match self {
            Step::Done => total,
            Step::Paused { updated }
            | Step::Wait { updated, .. }
            | Step::Restart { updated, .. }
            | Step::Switchover { updated, .. } => *updated,
        }
    }
}

/// The next step for `members` (ordinal order) towards `update_revision`.
pub fn plan(
    mode: Mode,
    members: &[RolloutMember],
    update_revision: Option<&str>,
    paused: bool,
) -> Step {
    let Some(target) = update_revision else {
        return Step::Done;
    };
    let is_old = |m: &RolloutMember| m.revision != Some(target);
    let updated = members.iter().filter(|m| !is_old(m)).count();
    if updated == members.len() {
        return Step::Done;
    }
    if paused {
        return Step::Paused { updated };
    }
    let wait = |why: String| Step::Wait { updated, why };
    if let Some(m) = members.iter().find(|m| !m.ready) {
        return wait(format!("{} is not ready", m.name));
    }
    if let Some(m) = members.iter().find(|m| m.node.is_none()) {
        return wait(format!("{} does not answer", m.name));
    }
    match mode {
        Mode::SingleLeader => single_leader(members, updated, &is_old),
        Mode::Leaderless => leaderless(members, updated, &is_old),
    }
}

fn single_leader(
    members: &[RolloutMember],
    updated: usize,
    is_old: &dyn Fn(&RolloutMember) -> bool,
) -> Step {
    let wait = |why: String| Step::Wait { updated, why };
    let serving = members.iter().find_map(|m| {
        let s = m.node?.single_leader()?;
        (s.role == Role::Leader && !s.self_fenced).then_some((m, s))
    });
    let Some((leader, status)) = serving else {
        return wait("no leader serves".to_owned());
    };
    for m in members.iter().filter(|m| m.name != leader.name) {
        match status.followers.iter().find(|f| f.id == m.name) {
            None => return wait(format!("{} is not among the leader's followers", m.name)),
            Some(f)
                if f.lag_entries > CAUGHT_UP_LAG || f.last_ack_ms.is_none_or(|ms| ms > 1000) =>
            {
                return wait(format!(
                    "{} is catching up ({} entries behind)",
                    m.name, f.lag_entries
                ))
            }
            Some(_) => {}
        }
    }
    let old_follower = members
        .iter()
        .rev()
        .find(|m| m.name != leader.name && is_old(m));
    if let Some(m) = old_follower {
        return Step::Restart {
            updated,
            pod: m.name.to_owned(),
            why: format!(
                "restarting follower {} ({updated} of {} updated; the leader goes last)",
                m.name,
                members.len()
            ),
        };
    }
    if members.len() == 1 {
        return Step::Restart {
            updated,
            pod: leader.name.to_owned(),
            why: "restarting the only member (no follower to hand over to)".to_owned(),
        };
    }
    Step::Switchover {
        updated,
        avoid: members
            .iter()
            .filter(|m| is_old(m))
            .map(|m| m.name.to_owned())
            .collect(),
    }
}

fn leaderless(
    members: &[RolloutMember],
    updated: usize,
    is_old: &dyn Fn(&RolloutMember) -> bool,
) -> Step {
    let wait = |why: String| Step::Wait { updated, why };
    for m in members {
        let Some(ring) = m.node.and_then(|n| n.leaderless()) else {
            return wait(format!("{} reports no ring", m.name));
        };
        if let Some(other) = ring
            .members
            .iter()
            .find(|v| v.state != MemberState::Normal || !v.alive)
        {
            return wait(format!(
                "{} sees {} {}",
                m.name,
                other.id,
                if other.alive {
                    "joining or leaving the ring"
                } else {
                    "down"
                }
            ));
        }
        if ring.hints_queued > 0 {
            return wait(format!(
                "{} holds {} hints to deliver",
                m.name, ring.hints_queued
            ));
        }
        if ring.restoring {
            return wait(format!("{} is restoring its data", m.name));
        }
    }
    match members.iter().rev().find(|m| is_old(m)) {
        Some(m) => Step::Restart {
            updated,
            pod: m.name.to_owned(),
            why: format!(
                "restarting {} ({updated} of {} updated; one member at a time)",
                m.name,
                members.len()
            ),
        },
        None => Step::Done,
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
