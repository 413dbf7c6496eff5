//! (client) The ring step of the pipeline, Leaderless mode only: builds the membership view from
//! what `observe` found (pure, [`build_view`]), lets the membership executor bring the nodes'
//! ring to the spec one step at a time, publishes Events, and hands back what the status
//! records (`status.ring`, the `Progressing` condition while members join or leave).
//!
//! It runs after `apply` (so the StatefulSet already has a pod for every wanted member, and
//! still has one for every member that has not left) and before `status`, and refreshes
//! `observed.nodes` with what the nodes report after the steps.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::Resource;

use super::observe::Observed;
use super::validate::ValidatedCluster;
use super::Context;
use crate::crd::{reason, ClusterMode, ReplicatedCluster, ReplicatedClusterStatus, RingRecord};
use crate::membership::execute::{self, reason as event, Report};
use crate::membership::{from_record, to_record, Pod, View};

/// What the status must record after the ring step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RingOutcome {
    /// `status.ring`: the newest ring a node accepted or reports.
    pub ring: Option<RingRecord>,
    /// Members are joining or leaving, or the ring differs from the spec: what is going on.
    pub changing: Option<String>,
    /// Reconcile again this soon.
    pub recheck: Option<Duration>,
}

impl RingOutcome {
    /// Writes the outcome into a freshly computed status; `previous` and `now` keep the
    /// `Progressing` condition's `lastTransitionTime` honest when this step flips it.
    pub fn record(
        &self,
        status: &mut ReplicatedClusterStatus,
        previous: Option<&ReplicatedClusterStatus>,
        now: &Time,
    ) {
        if self.ring.is_some() {
            status.ring = self.ring.clone();
        }
        if let Some(message) = &self.changing {
            super::status::mark_scaling(status, previous, now, reason::RING_CHANGING, message);
        }
    }
}

/// Runs the ring step: what the status must record (`None` in SingleLeader mode or while the
/// admin token is unknown).
pub async fn run(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &mut Observed,
) -> Option<RingOutcome> {
    if valid.mode != ClusterMode::Leaderless {
        return None;
    }
    let token = observed.admin_token.clone()?;
    let previous = cluster.status.clone().unwrap_or_default();
    let mut view = build_view(valid, observed, &previous);
    let report = execute::drive(ctx.nodes.as_ref(), &token, &mut view).await;
    // The status is computed from what the nodes say now, not from before the steps.
    for pod in &view.pods {
        if pod.address.is_some() {
            observed.nodes.insert(pod.name.clone(), pod.node.clone());
        }
    }
    publish(ctx, cluster, &report).await;
    let decision = &report.decision;
    let changing = decision.changing.then(|| match &decision.wait {
        Some(wait) => wait.reason.clone(),
        None => "changing the membership ring".to_owned(),
    });
    Some(RingOutcome {
        ring: report.ring.as_ref().map(to_record),
        changing,
        recheck: decision.recheck,
    })
}

/// (pure) The membership view: every live pod, the wanted members and the recorded ring.
pub fn build_view(
    valid: &ValidatedCluster,
    observed: &Observed,
    previous: &ReplicatedClusterStatus,
) -> View {
    let pods = observed
        .pods
        .iter()
        .map(|p| Pod {
            name: p.name.clone(),
            // A pod being deleted is no place to send a ring or take an address from.
            address: p.address.clone().filter(|_| !p.terminating),
            node: match observed.nodes.get(&p.name) {
                Some(result) if !p.terminating => result.clone(),
                Some(_) => Err("pod is being deleted".to_owned()),
                None => Err("not observed".to_owned()),
            },
        })
        .collect();
    View {
        desired: valid.peers.iter().map(|p| p.id.clone()).collect(),
        replication_factor: usize::try_from(valid.replication_factor).unwrap_or(0),
        recorded: previous.ring.as_ref().and_then(from_record),
        pods,
    }
}

async fn publish(ctx: &Context, cluster: &ReplicatedCluster, report: &Report) {
    let reference = cluster.object_ref(&());
    ctx.publish_notes(&reference, &report.notes).await;
    if let Some(wait) = report.decision.wait.as_ref().filter(|w| w.warn) {
        let reason = if wait.scale_down {
            event::SCALE_DOWN_BLOCKED
        } else {
            event::RING_UPDATE_FAILED
        };
        ctx.publish(&reference, EventType::Warning, reason, wait.reason.clone())
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::controller::fixtures::cluster;
    use crate::controller::observe::ObservedPod;
    use crate::controller::validate::{validate, ObservedFacts};
    use crate::crd::{condition, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn a_pod_being_deleted_gives_the_view_no_address_and_no_node() {
        let valid = validate(&cluster(ClusterMode::Leaderless), &ObservedFacts::default()).unwrap();
        let mut observed = Observed::default();
        for (i, terminating) in [(0, false), (3, true)] {
            observed.pods.push(ObservedPod {
                name: format!("orders-{i}"),
                ordinal: Some(i),
                ready: true,
                terminating,
                address: Some(format!("10.0.0.{i}:7400")),
                role_label: None,
                revision: None,
                uid: None,
                fenced: false,
            });
            observed
                .nodes
                .insert(format!("orders-{i}"), Err("down".to_owned()));
        }
        let view = build_view(&valid, &observed, &ReplicatedClusterStatus::default());
        assert_eq!(view.desired, ["orders-0", "orders-1", "orders-2"]);
        assert_eq!(view.replication_factor, 3);
        assert_eq!(view.pods[0].address.as_deref(), Some("10.0.0.0:7400"));
        assert_eq!(view.pods[1].address, None);
        assert_eq!(view.pods[1].node, Err("pod is being deleted".to_owned()));
    }

    #[test]
    fn a_ring_change_shows_as_scaling_and_progressing_since_it_began() {
        let progressing = |status: &str, second: i64| Condition {
            type_: condition::PROGRESSING.to_owned(),
            status: status.to_owned(),
            reason: reason::UP_TO_DATE.to_owned(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: at(second),
        };
        let outcome = RingOutcome {
            ring: Some(RingRecord {
                version: 4,
                members: Vec::new(),
            }),
            changing: Some("orders-3 handing data to the next owners".to_owned()),
            recheck: None,
        };
        let mut status = ReplicatedClusterStatus {
            phase: Some(Phase::Running),
            conditions: vec![progressing("False", 10)],
            ..ReplicatedClusterStatus::default()
        };
        outcome.record(&mut status, None, &at(50));
        assert_eq!(status.phase, Some(Phase::Scaling));
        assert_eq!(status.ring.as_ref().map(|r| r.version), Some(4));
        let c = &status.conditions[0];
        assert_eq!(
            (
                c.status.as_str(),
                c.reason.as_str(),
                c.last_transition_time.clone()
            ),
            ("True", reason::RING_CHANGING, at(50))
        );
        // Still changing on the next pass: the transition time stays.
        let previous = status.clone();
        let mut next = ReplicatedClusterStatus {
            phase: Some(Phase::Running),
            conditions: vec![progressing("False", 10)],
            ..ReplicatedClusterStatus::default()
        };
        outcome.record(&mut next, Some(&previous), &at(90));
        assert_eq!(next.conditions[0].last_transition_time, at(50));
    }
}
