//! (client) The ring step of the pipeline, Leaderless mode only: builds the membership view from
//! what `observe` found (pure, [`build_view`]), lets the membership executor bring the nodes'
//! ring to the spec one step at a time, publishes Events, and hands back what the status
//! records (`status.ring`, the `Progressing` condition while members join or leave).
//!
//! It runs after `apply` (so the StatefulSet already has a pod for every wanted member, and
//! still has one for every member that has not left) and before `status`, and refreshes
//! `observed.nodes` with what the nodes report after the steps.

use std::time::Duration;

use kube::runtime::events::EventType;
use kube::Resource;

use super::observe::Observed;
use super::validate::ValidatedCluster;
use super::Context;
use crate::crd::{Mode, ReplicatedCluster, ReplicatedClusterStatus, RingRecord};
use crate::membership::execute::{self, reason as event, Report};
use crate::membership::{from_record, to_record, Pod, View};

/// What the status must record after the ring step (`status::compute_status` writes it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RingOutcome {
    /// `status.ring`: the newest ring a node accepted or reports.
    pub ring: Option<RingRecord>,
    /// Members are joining or leaving, or the ring differs from the spec: what is going on.
    pub changing: Option<String>,
    /// Reconcile again this soon.
    pub recheck: Option<Duration>,
}

/// Runs the ring step: what the status must record (`None` in SingleLeader mode or while the
/// admin token is unknown).
pub async fn run(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &mut Observed,
) -> Option<RingOutcome> {
    if valid.mode != Mode::Leaderless {
        return None;
    }
    let auth = observed.auth.clone()?;
    let previous = cluster.status.clone().unwrap_or_default();
    let mut view = build_view(valid, observed, &previous);
    let report = execute::drive(ctx.nodes.as_ref(), &auth, &mut view).await;
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

    #[test]
    fn a_pod_being_deleted_gives_the_view_no_address_and_no_node() {
        let valid = validate(&cluster(Mode::Leaderless), &ObservedFacts::default()).unwrap();
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
}
