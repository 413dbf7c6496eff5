//! (client) The rollout step: plans the next pod restart of a rolling update (pure,
//! [`crate::rollout::plan`]) and performs it with an eviction, so a PodDisruptionBudget is
//! honoured as for any voluntary disruption (a one-member cluster, whose PDB allows none, has
//! its pod deleted: the spec change asked for the restart). The SingleLeader hand-over before the leader's pod
//! goes is the leader step's (a switchover it runs when [`switchover_wanted`] says so).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, EvictParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use tracing::info;

use super::observe::Observed;
use super::validate::ValidatedCluster;
use super::{Context, Error};
use crate::crd::{reason, ReplicatedCluster};
use crate::rollout::{plan, RolloutMember, Step};

/// The StatefulSet's update revision, once its controller has seen the current template.
fn update_revision(observed: &Observed) -> Option<&str> {
    let sts = observed.statefulset.as_ref()?;
    let status = sts.status.as_ref()?;
    if status.observed_generation < sts.metadata.generation {
        return None;
    }
    status.update_revision.as_deref()
}

/// (pure) The rollout plan from what was observed.
pub fn plan_of(valid: &ValidatedCluster, observed: &Observed) -> Step {
    let members: Vec<RolloutMember> = valid
        .members
        .iter()
        .map(|peer| {
            let pod = observed.pods.iter().find(|p| p.name == peer.id);
            RolloutMember {
                name: &peer.id,
                ready: pod.is_some_and(|p| p.ready && !p.terminating),
                revision: pod.and_then(|p| p.revision.as_deref()),
                node: observed.nodes.get(&peer.id).and_then(|r| r.as_ref().ok()),
            }
        })
        .collect();
    plan(
        valid.mode,
        &members,
        update_revision(observed),
        valid.paused,
    )
}

/// SingleLeader: the members a rollout's switchover must avoid, when the plan asks for one.
pub fn switchover_wanted(step: &Step) -> Option<Vec<String>> {
    match step {
        Step::Switchover { avoid, .. } => Some(avoid.clone()),
        _ => None,
    }
}

/// What the status records of the rollout (`status::compute_status` writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutOutcome {
    pub step: Step,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    pub members: usize,
    /// Why the planned restart did not happen (a PDB, an API error).
    pub held: Option<String>,
}

/// Plans again from `observed` (as the leader step left it) and evicts the next pod if the plan
/// says so.
#[tracing::instrument(name = "rollout", skip_all)]
pub async fn run(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &Observed,
) -> Result<RolloutOutcome, Error> {
    let step = plan_of(valid, observed);
    let sts_status = observed
        .statefulset
        .as_ref()
        .and_then(|s| s.status.as_ref());
    let mut outcome = RolloutOutcome {
        current_revision: sts_status.and_then(|s| s.current_revision.clone()),
        update_revision: sts_status.and_then(|s| s.update_revision.clone()),
        members: valid.members.len(),
        held: None,
        step,
    };
    let Step::Restart { pod, why, .. } = &outcome.step else {
        return Ok(outcome);
    };
    let uid = observed
        .pods
        .iter()
        .find(|p| &p.name == pod)
        .and_then(|p| p.uid.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            // The pod we planned for, not a replacement created meanwhile.
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    // A one-member cluster's PDB allows no eviction (it would stop the cluster), so a rollout
    // there could never proceed: the spec change itself asks for the restart, so delete it.
    let result = if valid.members.len() == 1 {
        pods.delete(
            pod,
            params
                .delete_options
                .as_ref()
                .unwrap_or(&DeleteParams::default()),
        )
        .await
        .map(|_| ())
    } else {
        pods.evict(pod, &params).await.map(|_| ())
    };
    match result {
        Ok(_) => {
            info!(cluster = %valid.name, %pod, "rolling update: evicted");
            ctx.publish_about(
                &cluster.object_ref(&()),
                Some(pod),
                EventType::Normal,
                reason::ROLLING_OUT,
                format!("{why}: evicted {pod}"),
            )
            .await;
            Ok(outcome)
        }
        // 429: the PodDisruptionBudget allows no disruption now; 409: the pod changed.
        Err(kube::Error::Api(e)) if e.code == 429 || e.code == 409 || e.code == 404 => {
            outcome.held = Some(format!("evicting {pod}: {}", e.message));
            Ok(outcome)
        }
        Err(source) => Err(Error::Rollout(source)),
    }
}
