//! (pure) What the leader, ring and rollout steps of this pass add to the observed status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::conditions::{mark_progressing, mark_scaling};
use crate::controller::leader::LeaderOutcome;
use crate::controller::ring::RingOutcome;
use crate::controller::rollout::RolloutOutcome;
use crate::crd::{condition, reason, Phase, ReplicatedClusterStatus};
use crate::rollout::Step;

/// The leader step: the "no leader since" time, a new failover record, a voter-set change under
/// way, phase `FailingOver`, the `Switchover` condition, and why a failover is held back.
pub(super) fn record_leader(
    status: &mut ReplicatedClusterStatus,
    outcome: &LeaderOutcome,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
) {
    status.no_leader_since = outcome.no_leader_since.clone();
    if let Some(record) = &outcome.last_failover {
        status.last_failover = Some(record.clone());
    }
    if let Some(message) = &outcome.voters_pending {
        mark_scaling(status, previous, now, reason::VOTERS_CHANGING, message);
    }
    if outcome.failing_over {
        status.phase = Some(Phase::FailingOver);
    }
    let previous_switchover = previous.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == condition::SWITCHOVER)
    });
    match &outcome.switchover {
        Some((done, message)) => {
            let (status_word, reason) = if *done {
                ("True", reason::SWITCHOVER_DONE)
            } else {
                ("False", reason::SWITCHOVER_REFUSED)
            };
            status.conditions.push(Condition {
                type_: condition::SWITCHOVER.to_owned(),
                status: status_word.to_owned(),
                reason: reason.to_owned(),
                message: message.clone(),
                observed_generation: status.observed_generation,
                last_transition_time: now.clone(),
            });
        }
        None => status.conditions.extend(previous_switchover.cloned()),
    }
    if let Some(why) = &outcome.held {
        let unavailable = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition::AVAILABLE && c.status == "False");
        if let Some(condition) = unavailable {
            reason::FAILOVER_HELD.clone_into(&mut condition.reason);
            condition.message.clone_from(why);
        }
    }
}

/// The ring step: `status.ring`, and a ring change as `Scaling` with `Progressing` true (its
/// `lastTransitionTime` kept while the change goes on).
pub(super) fn record_ring(
    status: &mut ReplicatedClusterStatus,
    outcome: &RingOutcome,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
) {
    if outcome.ring.is_some() {
        status.ring = outcome.ring.clone();
    }
    if let Some(message) = &outcome.changing {
        mark_scaling(status, previous, now, reason::RING_CHANGING, message);
    }
}

/// The rollout step: revisions, updated replicas, and `Progressing` while the rollout is not
/// done.
pub(super) fn record_rollout(
    status: &mut ReplicatedClusterStatus,
    outcome: &RolloutOutcome,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
) {
    status.updated_replicas = i32::try_from(outcome.step.updated(outcome.members)).unwrap_or(0);
    status
        .current_revision
        .clone_from(&outcome.current_revision);
    status.update_revision.clone_from(&outcome.update_revision);
    let progress = format!(
        "{} of {} nodes run the latest pod template",
        status.updated_replicas, outcome.members
    );
    let (reason, message) = match (&outcome.step, &outcome.held) {
        (Step::Done, _) => return,
        (Step::Paused { .. }, _) => (
            reason::ROLLOUT_PAUSED,
            format!("{progress}; spec.paused holds the rollout"),
        ),
        (_, Some(held)) => (reason::ROLLOUT_WAITING, format!("{progress}; {held}")),
        (Step::Wait { why, .. }, None) => {
            (reason::ROLLOUT_WAITING, format!("{progress}; waiting: {why}"))
        }
        (Step::Restart { why, .. }, None) => (reason::ROLLING_OUT, format!("{progress}; {why}")),
        (Step::Switchover { .. }, None) => (
            reason::ROLLOUT_SWITCHOVER,
            format!("{progress}; handing the leadership to an updated follower before the leader's pod restarts"),
        ),
    };
    mark_progressing(status, previous, now, reason, &message);
}
