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
use crate::crd::{
    condition, reason, ClusterMode, Phase, ReplicatedCluster, ReplicatedClusterStatus, RingRecord,
};
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
        let Some(message) = &self.changing else {
            return;
        };
        if status.phase == Some(Phase::Running) {
            status.phase = Some(Phase::Scaling);
        }
        let since = previous
            .into_iter()
            .flat_map(|p| p.conditions.iter())
            .find(|c| c.type_ == condition::PROGRESSING && c.status == "True")
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        if let Some(progressing) = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition::PROGRESSING)
        {
            if progressing.status != "True" {
                progressing.status = "True".to_owned();
                progressing.last_transition_time = since;
            }
            progressing.reason = reason::RING_CHANGING.to_owned();
            progressing.message = message.clone();
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
    for note in &report.notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(&reference, type_, note.reason, note.message.clone())
            .await;
    }
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
