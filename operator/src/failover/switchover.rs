//! (pure) A switchover on request: move leadership from a serving leader to a chosen member
//! (`replicated.dev/switchover: <pod>` on the cluster) or to the most caught-up follower
//! (`any`; a rollout asks this way before it restarts the leader's pod).
//!
//! ```text
//! the target leads already, or (no target) the
//!   leader is not one to avoid                  -> done
//! target unknown, not a voter, or fenced        -> refused at once
//! target not reachable or far behind            -> wait, at most the bound, then refused
//! otherwise                                     -> Switchover { fence at E + 1, prefer target }
//! ```
//!
//! The executor then asks the leader to hand over (`POST /admin/handover`): it takes no new
//! writes until the target holds its whole log (at most a second; if not, writes resume and the
//! switchover waits). Then every member is fenced at a new epoch and the target, now as
//! up to date as anyone, is promoted. Safety is the failover's: only an electable member (a
//! majority's logs no newer than its own) is ever promoted; should the target not be electable
//! after all, the most up-to-date member leads and an Event says so.

use std::time::Duration;

use rc_api::SingleLeaderStatus;

use super::choose::fence_targets;
use super::{Action, PodState, View};

/// A request to move the leader while it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The member to lead, or `None` for the most caught-up follower: then the request is
    /// done once the leader is not in `avoid` (put the leader to move away from there).
    pub target: Option<String>,
    /// When the operator first saw the request, ms since the Unix epoch.
    pub since_ms: i64,
    /// How long the target may take to catch up before the request is refused.
    pub bound: Duration,
    /// Members that must not lead (fenced for maintenance, or not yet updated by a rollout).
    pub avoid: Vec<String>,
}

/// Where a switchover request stands after a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverState {
    /// Waiting for the target to catch up; why.
    Waiting(String),
    /// Will not happen; why (a Warning Event and the `Available` condition's message).
    Refused(String),
    /// The requested member leads (nothing to do).
    Done(String),
    /// The switchover starts now.
    Started(String),
}

/// Look again this soon while a target catches up.
pub const RECHECK: Duration = Duration::from_millis(200);
/// A target this close (entries behind, and acknowledging) is worth a hand-over: the leader
/// stops writes and it catches up in milliseconds. Requiring lag 0 would starve under load,
/// where replication is always a few entries in flight.
pub const MAX_LAG: u64 = 1024;

/// The step for `request` while `leader` serves `status`. `None` when there is nothing to do.
pub(super) fn next_step(
    view: &View,
    leader: &str,
    status: &SingleLeaderStatus,
    request: &SwitchoverRequest,
    now_ms: i64,
) -> (SwitchoverState, Option<Action>) {
    let voters: Vec<&str> = status
        .config
        .as_ref()
        .map(|c| c.voters.iter().map(|v| v.id.as_str()).collect())
        .unwrap_or_default();
    if let Some(settled) = done_or_refused(view, leader, status, request, &voters) {
        return (settled, None);
    }
    let candidates = candidates(view, status, request, &voters);
    let caught_up = candidates
        .iter()
        .filter(|(_, lag)| *lag <= MAX_LAG)
        .min_by_key(|(_, lag)| *lag)
        .map(|(id, _)| *id);
    let Some(target) = caught_up else {
        return (not_caught_up(request, &candidates, now_ms), None);
    };
    let action = Action::Switchover {
        new_epoch: status.epoch + 1,
        fence: fence_targets(view),
        from: leader.to_owned(),
        exclude: std::iter::once(leader.to_owned())
            .chain(request.avoid.iter().cloned())
            .collect(),
        prefer: Some(target.to_owned()),
    };
    (
        SwitchoverState::Started(format!(
            "switchover from {leader} to {target} at epoch {}",
            status.epoch + 1
        )),
        Some(action),
    )
}

/// The outcome when it needs no wait: the target leads already, or (no target) the leader is
/// not one to avoid; or the target can never lead.
fn done_or_refused(
    view: &View,
    leader: &str,
    status: &SingleLeaderStatus,
    request: &SwitchoverRequest,
    voters: &[&str],
) -> Option<SwitchoverState> {
    let Some(target) = &request.target else {
        let stays = !request.avoid.iter().any(|a| a == leader);
        return stays
            .then(|| SwitchoverState::Done(format!("{leader} leads epoch {}", status.epoch)));
    };
    if target == leader {
        return Some(SwitchoverState::Done(format!(
            "{target} leads epoch {}",
            status.epoch
        )));
    }
    let refused = if !view.members.iter().any(|m| &m.name == target) {
        format!(
            "switchover target {target} is not a member of this cluster (members: {})",
            view.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if !voters.contains(&target.as_str()) {
        format!(
            "switchover target {target} is not a voter (a learner still catching up, or beyond spec.replicas)"
        )
    } else if request.avoid.contains(target) {
        format!(
            "switchover target {target} is fenced for maintenance (annotation replicated.dev/fenced); unfence it first"
        )
    } else {
        return None;
    };
    Some(SwitchoverState::Refused(refused))
}

/// The voters that may lead, ready and acknowledging the leader within the last second, with
/// their lag in entries: the target only, when there is one.
fn candidates<'a>(
    view: &View,
    status: &'a SingleLeaderStatus,
    request: &SwitchoverRequest,
    voters: &[&str],
) -> Vec<(&'a str, u64)> {
    status
        .followers
        .iter()
        .filter(|f| voters.contains(&f.id.as_str()) && f.voter)
        .filter(|f| !request.avoid.contains(&f.id))
        .filter(|f| request.target.as_ref().is_none_or(|t| *t == f.id))
        .filter(|f| {
            view.members
                .iter()
                .any(|m| m.name == f.id && m.pod == PodState::Ready && m.node.is_ok())
        })
        .filter(|f| f.last_ack_ms.is_some_and(|ms| ms <= 1000))
        .map(|f| (f.id.as_str(), f.lag_entries))
        .collect()
}

/// No candidate has caught up: wait, unless the request is older than its bound.
fn not_caught_up(
    request: &SwitchoverRequest,
    candidates: &[(&str, u64)],
    now_ms: i64,
) -> SwitchoverState {
    let what = match &request.target {
        Some(t) => match candidates.first() {
            Some((_, lag)) => format!("{t} is {lag} entries behind the leader"),
            None => format!("{t} is not ready or does not acknowledge the leader"),
        },
        None if candidates.is_empty() => "no follower that may lead is ready".to_owned(),
        None => "no follower that may lead has caught up".to_owned(),
    };
    let waited =
        Duration::from_millis(u64::try_from(now_ms.saturating_sub(request.since_ms)).unwrap_or(0));
    if waited >= request.bound {
        return SwitchoverState::Refused(format!(
            "switchover refused: {what} after {} s (the bound); nothing changed",
            request.bound.as_secs()
        ));
    }
    SwitchoverState::Waiting(what)
}
