//! (pure) Conditions that keep `lastTransitionTime` while their status does not change, and the
//! `Ready` summary of the others.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{condition, reason, Phase, ReplicatedClusterStatus};

/// Builds conditions that keep `lastTransitionTime` while their status does not change.
pub(super) struct Conditions<'a> {
    pub previous: &'a [Condition],
    pub generation: Option<i64>,
    pub now: &'a Time,
}

/// What a condition says: true or false, why, and in words.
pub(super) struct Verdict {
    pub value: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Conditions<'_> {
    pub fn set(&self, type_: &str, value: bool, reason: &str, message: &str) -> Condition {
        let status = if value { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: self.generation,
            last_transition_time,
        }
    }

    pub fn verdict(&self, type_: &str, verdict: &Verdict) -> Condition {
        self.set(type_, verdict.value, verdict.reason, &verdict.message)
    }

    /// The previous condition of `type_`, or `Unknown` when there was none.
    pub fn previous_or_unknown(&self, type_: &str) -> Condition {
        self.previous
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
            .unwrap_or_else(|| Condition {
                type_: type_.to_owned(),
                status: "Unknown".to_owned(),
                reason: reason::INVALID_SPEC.to_owned(),
                message: "the spec is invalid".to_owned(),
                observed_generation: self.generation,
                last_transition_time: self.now.clone(),
            })
    }
}

/// A membership change is under way: phase `Scaling` (unless something worse is shown) and
/// `Progressing` true with `reason` and `message`.
pub(super) fn mark_scaling(
    status: &mut ReplicatedClusterStatus,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
    reason: &str,
    message: &str,
) {
    if status.phase == Some(Phase::Running) {
        status.phase = Some(Phase::Scaling);
    }
    mark_progressing(status, previous, now, reason, message);
}

/// `Progressing` true with `reason` and `message`, keeping its transition time while it stays
/// true.
pub(super) fn mark_progressing(
    status: &mut ReplicatedClusterStatus,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
    reason: &str,
    message: &str,
) {
    mark_true(
        status,
        previous,
        now,
        condition::PROGRESSING,
        reason,
        message,
    );
}

/// Condition `type_` true with `reason` and `message`; its transition time is the previous
/// status's if it was true there already, else now.
pub(super) fn mark_true(
    status: &mut ReplicatedClusterStatus,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let since = previous
        .into_iter()
        .flat_map(|p| p.conditions.iter())
        .find(|c| c.type_ == type_ && c.status == "True")
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != "True" {
            c.status = "True".to_owned();
            c.last_transition_time = since;
        }
        c.reason = reason.to_owned();
        c.message = message.to_owned();
    }
}

/// The `Ready` condition tools read (kstatus, Flux, Argo CD): true when the cluster serves
/// (`Available`), nothing is wrong (`Degraded` false) and nothing is changing (`Progressing`
/// false); otherwise false with the reason and message of the first of those that is not so.
/// Computed last, from the other three.
pub(super) fn mark_ready(
    status: &mut ReplicatedClusterStatus,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
) {
    status.conditions.retain(|c| c.type_ != condition::READY);
    let find = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let blocking = match (
        find(condition::AVAILABLE),
        find(condition::DEGRADED),
        find(condition::PROGRESSING),
    ) {
        (Some(a), _, _) if a.status != "True" => Some(a),
        (_, Some(d), _) if d.status == "True" => Some(d),
        (_, _, Some(p)) if p.status == "True" => Some(p),
        (None, _, _) => None,
        _ => None,
    };
    let (ready, reason, message) = match blocking {
        Some(c) => (
            false,
            c.reason.clone(),
            format!("{}: {}", c.type_, c.message),
        ),
        None if find(condition::AVAILABLE).is_none() => {
            (false, "Unknown".to_owned(), "not observed yet".to_owned())
        }
        None => (
            true,
            "Ready".to_owned(),
            "serving, every node ready and up to date".to_owned(),
        ),
    };
    let conditions = Conditions {
        previous: previous.map_or(&[][..], |p| p.conditions.as_slice()),
        generation: status.observed_generation,
        now,
    };
    let ready = conditions.set(condition::READY, ready, &reason, &message);
    status.conditions.insert(0, ready);
}
