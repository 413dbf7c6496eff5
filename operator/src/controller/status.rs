//! (pure) The one writer of the status: [`compute_status`] builds it from what pods and nodes
//! report, never from what was asked for, and from what this pass's steps did. The reconciler
//! writes it with one server-side apply, and only when it differs from the previous one.
//!
//! It is built in this order, each part free to refine what the ones before set:
//!
//! ```text
//! observed    members, load figures, leader, epoch and voters (SingleLeader) or ring version
//!             (Leaderless), phase, and the Available, Progressing and Degraded conditions;
//!             an invalid spec gives phase Invalid and Degraded (members.rs, conditions.rs)
//! leader      no-leader-since, a failover record, a voter change (Scaling), FailingOver, the
//!             Switchover condition, a held failover on Available (steps.rs)
//! ring        status.ring, a ring change (Scaling, Progressing)
//! rollout     revisions, updated replicas, Progressing
//! step error  Degraded with reason ReconcileFailed
//! Ready       last, from Available, Degraded and Progressing
//! ```

mod conditions;
mod members;
mod steps;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rc_api::NodeStatus;

use super::leader::LeaderOutcome;
use super::observe::Observed;
use super::ring::RingOutcome;
use super::rollout::RolloutOutcome;
use super::validate::{SpecError, ValidatedCluster};
use crate::crd::{condition, reason, Mode, Phase, ReplicatedClusterStatus, SecurityStatus};
use conditions::{mark_ready, mark_true, Conditions, Verdict};
pub use members::load_figures;
use members::{current_leader, members_and_load, record_voters, to_i64};
use steps::{record_leader, record_ring, record_rollout};

/// What the status is computed from.
pub struct StatusInput<'a> {
    /// `metadata.generation` of the cluster.
    pub generation: Option<i64>,
    /// The validated spec, or why it is invalid.
    pub spec: Result<&'a ValidatedCluster, &'a SpecError>,
    pub observed: &'a Observed,
    pub previous: Option<&'a ReplicatedClusterStatus>,
    pub now: Time,
    /// What this pass's steps did.
    pub steps: StepOutcomes<'a>,
}

/// The outcomes of this pass's steps; `None` for a step that did not run.
#[derive(Default)]
pub struct StepOutcomes<'a> {
    pub leader: Option<&'a LeaderOutcome>,
    pub ring: Option<&'a RingOutcome>,
    pub rollout: Option<&'a RolloutOutcome>,
    pub credentials: Option<&'a super::credentials::CredentialsOutcome>,
    /// A step failed (an apply, an eviction): the `Degraded` message.
    pub error: Option<String>,
}

/// The whole status, in the order of the module documentation.
pub fn compute_status(input: &StatusInput<'_>) -> ReplicatedClusterStatus {
    let (previous, now, steps) = (input.previous, &input.now, &input.steps);
    let mut status = observed_status(input);
    if let Some(leader) = steps.leader {
        record_leader(&mut status, leader, previous, now);
    }
    if let Some(ring) = steps.ring {
        record_ring(&mut status, ring, previous, now);
    }
    if let Some(rollout) = steps.rollout {
        record_rollout(&mut status, rollout, previous, now);
    }
    if let Ok(cluster) = input.spec {
        status.security = Some(security(cluster, input.observed, steps.credentials));
    }
    if let Some(message) = &steps.error {
        mark_true(
            &mut status,
            previous,
            now,
            condition::DEGRADED,
            reason::RECONCILE_FAILED,
            message,
        );
    }
    mark_ready(&mut status, previous, now);
    status
}

/// TLS on or off, where clients find the CA, when the certificate expires, and a token
/// rotation under way.
fn security(
    cluster: &ValidatedCluster,
    observed: &Observed,
    credentials: Option<&super::credentials::CredentialsOutcome>,
) -> SecurityStatus {
    let rotation = credentials.and_then(|c| c.token_rotation.clone());
    let client_auth = cluster.client_tokens_secret.is_some();
    let Some(tls) = &cluster.tls else {
        return SecurityStatus {
            tls: false,
            client_auth,
            warning: Some(
                "TLS is disabled (spec.tls.enabled: false): client data, replication and the \
                 admin token cross the pod network in plain text"
                    .to_owned(),
            ),
            admin_token_rotation: rotation,
            ..SecurityStatus::default()
        };
    };
    SecurityStatus {
        tls: true,
        client_auth,
        warning: None,
        ca_config_map: Some(tls.ca_config_map.clone()),
        certificate_expires: observed
            .node_cert
            .as_ref()
            .and_then(|n| k8s_openapi::jiff::Timestamp::from_second(n.not_after_s).ok())
            .map(Time),
        admin_token_rotation: rotation,
    }
}

/// The status from what pods and nodes report, before the steps add theirs.
fn observed_status(input: &StatusInput<'_>) -> ReplicatedClusterStatus {
    let observed = input.observed;
    let previous = input.previous.cloned().unwrap_or_default();
    let reachable: Vec<&NodeStatus> = observed
        .nodes
        .values()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    let mut status = ReplicatedClusterStatus {
        observed_generation: input.generation,
        last_failover: previous.last_failover.clone(),
        ring: previous.ring.clone(),
        ..members_and_load(observed, &reachable)
    };
    let conditions = Conditions {
        previous: &previous.conditions,
        generation: input.generation,
        now: &input.now,
    };
    let cluster = match input.spec {
        Ok(cluster) => cluster,
        Err(error) => {
            status.phase = Some(Phase::Invalid);
            status.selector = previous.selector.clone();
            status.conditions = vec![
                conditions.previous_or_unknown(condition::AVAILABLE),
                conditions.previous_or_unknown(condition::PROGRESSING),
                conditions.set(
                    condition::DEGRADED,
                    true,
                    error.reason(),
                    &error.to_string(),
                ),
            ];
            return status;
        }
    };
    status.selector = Some(cluster.selector_string());
    let available = match cluster.mode {
        Mode::SingleLeader => {
            let leader = current_leader(&reachable);
            status.leader = leader.map(|l| l.node_id.clone());
            record_voters(&mut status, &reachable, &previous);
            status.epoch = reachable
                .iter()
                .filter_map(|n| Some(n.single_leader()?.epoch))
                .max()
                .map(to_i64);
            leader_available(leader, status.ready_replicas, cluster.quorum)
        }
        Mode::Leaderless => {
            let ring_version = ring_version(&reachable);
            status.ring_version = ring_version.map(to_i64);
            quorum_available(ring_version, status.ready_replicas, cluster.quorum)
        }
    };
    let rollout = rollout_message(observed, cluster.statefulset_replicas);
    let degraded = degraded(cluster, &status, &reachable);
    let scaling = status.replicas != cluster.replicas;
    status.phase = Some(phase(previous.phase, &available, &degraded, scaling));
    status.conditions = vec![
        conditions.verdict(condition::AVAILABLE, &available),
        match &rollout {
            Some(message) => {
                conditions.set(condition::PROGRESSING, true, reason::ROLLING_OUT, message)
            }
            None => conditions.set(
                condition::PROGRESSING,
                false,
                reason::UP_TO_DATE,
                "the StatefulSet matches the spec",
            ),
        },
        conditions.verdict(condition::DEGRADED, &degraded),
    ];
    status
}

/// SingleLeader `Available`: a quorum of nodes is ready and a node leads.
fn leader_available(leader: Option<&NodeStatus>, ready: i32, quorum: i32) -> Verdict {
    match leader {
        Some(l) if ready >= quorum => Verdict {
            value: true,
            reason: reason::LEADER_SERVING,
            message: format!(
                "{} leads epoch {}",
                l.node_id,
                l.single_leader().map_or(0, |s| s.epoch)
            ),
        },
        Some(_) => Verdict {
            value: false,
            reason: reason::NO_QUORUM,
            message: quorum_message(ready, quorum),
        },
        None => Verdict {
            value: false,
            reason: reason::NO_LEADER,
            message: "no node reports itself leader".to_owned(),
        },
    }
}

/// Leaderless: the newest ring a node has. Nodes answer /readyz before they have a ring, but
/// serve nothing without one.
fn ring_version(reachable: &[&NodeStatus]) -> Option<u64> {
    reachable
        .iter()
        .filter_map(|n| n.leaderless())
        .map(|l| l.ring_version)
        .max()
        .filter(|v| *v > 0)
}

/// Leaderless `Available`: a quorum of nodes is ready and they have a ring.
fn quorum_available(ring_version: Option<u64>, ready: i32, quorum: i32) -> Verdict {
    match ring_version {
        None => Verdict {
            value: false,
            reason: reason::NO_RING,
            message: "no node has a membership ring yet".to_owned(),
        },
        Some(_) => Verdict {
            value: ready >= quorum,
            reason: if ready >= quorum {
                reason::QUORUM_READY
            } else {
                reason::NO_QUORUM
            },
            message: quorum_message(ready, quorum),
        },
    }
}

/// A follower the leader has not heard from for this long is reported (Degraded).
pub const REPLICATION_STALLED_MS: u64 = 5_000;

/// `Degraded`: nodes that should serve do not, or (single-leader) the leader cannot replicate to
/// a follower: quorum writes still succeed, but one more failure would lose the quorum.
fn degraded(
    cluster: &ValidatedCluster,
    status: &ReplicatedClusterStatus,
    reachable: &[&NodeStatus],
) -> Verdict {
    let stalled = match cluster.mode {
        Mode::SingleLeader => stalled_followers(current_leader(reachable)),
        Mode::Leaderless => Vec::new(),
    };
    let not_ready = cluster.replicas - status.ready_replicas;
    let unreachable = status.members.iter().filter(|m| !m.reachable).count();
    let (value, reason, message) = if not_ready > 0 {
        (
            true,
            reason::NODES_NOT_READY,
            format!("{not_ready} of {} nodes not ready", cluster.replicas),
        )
    } else if unreachable > 0 {
        (
            true,
            reason::NODES_UNREACHABLE,
            format!("{unreachable} nodes' admin API unreachable"),
        )
    } else if !stalled.is_empty() {
        (
            true,
            reason::REPLICATION_STALLED,
            format!(
                "the leader has not heard from {} for over {} ms",
                stalled.join(", "),
                REPLICATION_STALLED_MS
            ),
        )
    } else {
        (
            false,
            reason::ALL_NODES_HEALTHY,
            "all nodes ready and reachable".to_owned(),
        )
    };
    Verdict {
        value,
        reason,
        message,
    }
}

/// Followers the leader reports no recent acknowledgement from.
fn stalled_followers(leader: Option<&NodeStatus>) -> Vec<String> {
    leader
        .and_then(|l| l.single_leader())
        .map(|l| {
            l.followers
                .iter()
                .filter(|f| f.last_ack_ms.is_none_or(|ms| ms > REPLICATION_STALLED_MS))
                .map(|f| f.id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The phase: a cluster that served and no longer does is `Degraded`, one that never did is
/// `Pending`; a serving one is `Scaling` while its pod count differs from the spec.
fn phase(previous: Option<Phase>, available: &Verdict, degraded: &Verdict, scaling: bool) -> Phase {
    let was_running = matches!(
        previous,
        Some(Phase::Running | Phase::Degraded | Phase::Scaling | Phase::FailingOver)
    );
    match (available.value, degraded.value) {
        (false, _) if was_running => Phase::Degraded,
        (false, _) => Phase::Pending,
        (true, _) if scaling => Phase::Scaling,
        (true, true) => Phase::Degraded,
        (true, false) => Phase::Running,
    }
}

/// `Progressing`: why the StatefulSet has not caught up with the spec yet, if it has not.
fn rollout_message(observed: &Observed, replicas: i32) -> Option<String> {
    let Some(sts) = &observed.statefulset else {
        return Some("creating the StatefulSet".to_owned());
    };
    let Some(st) = &sts.status else {
        return Some("waiting for the StatefulSet controller".to_owned());
    };
    if st.observed_generation < sts.metadata.generation {
        return Some("waiting for the StatefulSet controller".to_owned());
    }
    if st.replicas != replicas || st.ready_replicas.unwrap_or(0) < replicas {
        return Some(format!(
            "{} of {replicas} nodes ready",
            st.ready_replicas.unwrap_or(0)
        ));
    }
    // Pods of an older revision: the rollout step says what it does about them.
    None
}

fn quorum_message(ready: i32, quorum: i32) -> String {
    format!("{ready} nodes ready, {quorum} needed")
}

#[cfg(test)]
#[path = "status_tests.rs"]
pub(crate) mod tests;
