//! (client) The leader step of the pipeline, SingleLeader mode only: builds the failover view
//! from what `observe` found (pure, [`build_view`]), lets the failover executor bring the nodes
//! to one serving leader, then does the Kubernetes side: moves the `replicated.dev/role` labels
//! (server-side apply on the pods), publishes Events, and hands back what the status records.
//!
//! It runs first, before `apply`, and refreshes `observed.nodes` with what the nodes report
//! after the failover steps, so the status shows the new leader and epoch at once.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::apply::FIELD_MANAGER;
use super::observe::Observed;
use super::validate::ValidatedCluster;
use super::{Context, Error};
use crate::crd::{FailoverRecord, Mode, ReplicatedCluster, ReplicatedClusterStatus};
use crate::failover::execute::{self, reason, Promotion, Report};
use crate::failover::{Action, Member, PodState, SwitchoverRequest, SwitchoverState, View};
use crate::feed::Target;
use crate::labels::{ROLE_LABEL, SWITCHOVER_ANNOTATION};
use crate::node_client::NodeAccess;

/// What the status must record after the leader step (`status::compute_status` writes it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaderOutcome {
    pub no_leader_since: Option<MicroTime>,
    /// A new record for `status.lastFailover`, when a leader was elected.
    pub last_failover: Option<FailoverRecord>,
    /// The failover delay ran out and no leader serves yet (phase `FailingOver`).
    pub failing_over: bool,
    /// Reconcile again this soon (the rest of the failover delay, or a retry).
    pub recheck: Option<Duration>,
    /// A voter-set change under way and what it waits for.
    pub voters_pending: Option<String>,
    /// No leader serves and a failover is held back: why (condition `Available`).
    pub held: Option<String>,
    /// A requested switchover ended: done (true) or refused (false), and the message
    /// (condition `Switchover`).
    pub switchover: Option<(bool, String)>,
}

/// Runs the leader step: what the status must record (`None` in Leaderless mode or while the
/// admin credentials are unknown), and an error to return once the status is written: when moving the
/// labels fails after the nodes changed, the status must still say what the nodes did.
pub async fn run(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &mut Observed,
    rollout_avoid: Option<Vec<String>>,
) -> (Option<LeaderOutcome>, Result<(), Error>) {
    if valid.mode != Mode::SingleLeader {
        return (None, Ok(()));
    }
    let Some(auth) = observed.auth.clone() else {
        return (None, Ok(()));
    };
    let previous = cluster.status.clone().unwrap_or_default();
    let mut view = build_view(valid, observed, &previous);
    let clock = || Timestamp::now().as_millisecond();
    let asked = cluster.annotations().get(SWITCHOVER_ANNOTATION).cloned();
    let since_ms = ctx.switchover_seen(cluster, asked.as_deref(), clock());
    view.switchover = switchover_request(observed, asked.as_deref(), since_ms, rollout_avoid);
    let report = execute::drive(ctx.nodes.as_ref(), &auth, &mut view, &clock).await;
    let ended = asked
        .as_deref()
        .and_then(|value| ended_switchover(&report, value));
    if let Some((done, message)) = &ended {
        if let Err(e) = end_switchover_request(ctx, cluster, *done, message, clock()).await {
            return (None, Err(e));
        }
    }

    // The status is computed from what the nodes say now, not from before the failover.
    for member in &view.members {
        if matches!(member.pod, PodState::Ready | PodState::NotReady) {
            observed
                .nodes
                .insert(member.name.clone(), member.node.clone());
        }
    }
    follow_health(ctx, valid, &auth, &view);
    let labelled = match &report.decision.action {
        Action::Relabel { pods } => relabel(ctx, &valid.namespace, pods)
            .await
            .map(|()| show_role_labels(observed, pods)),
        _ => Ok(()),
    };
    publish(ctx, cluster, &report).await;
    warn_deprecated_delay(ctx, cluster, valid, &previous).await;
    let mut outcome = outcome(&report, &previous, clock());
    outcome.switchover = ended;
    if let (Some(_), Some(record)) = (&report.promoted, &outcome.last_failover) {
        ctx.metrics.observe_failover(record);
    }
    (Some(outcome), labelled)
}

/// (pure) A switchover asked for by annotation (`value`) that ended in this pass: done (true)
/// or refused (false), and the message.
fn ended_switchover(report: &Report, value: &str) -> Option<(bool, String)> {
    match (&report.decision.switchover, &report.promoted) {
        (_, Some(p)) if p.cause.as_ref().is_some_and(|c| c.kind == "switchover") => Some((
            true,
            format!(
                "switchover to {} done at epoch {} (asked: {value})",
                p.to, p.epoch
            ),
        )),
        (Some(SwitchoverState::Done(message)), _) => {
            Some((true, format!("{message} (asked: {value})")))
        }
        (Some(SwitchoverState::Refused(message)), _) => Some((false, message.clone())),
        _ => None,
    }
}

/// A requested switchover ended: a Warning Event when it was refused, then the request is
/// removed and its first-seen time forgotten.
async fn end_switchover_request(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    done: bool,
    message: &str,
    now_ms: i64,
) -> Result<(), Error> {
    if !done {
        ctx.publish(
            &cluster.object_ref(&()),
            EventType::Warning,
            crate::crd::reason::SWITCHOVER_REFUSED,
            message.to_owned(),
        )
        .await;
    }
    clear_switchover_request(ctx, cluster).await?;
    ctx.switchover_seen(cluster, None, now_ms);
    Ok(())
}

/// The pods as relabelled, so the status computed next sees their new roles.
fn show_role_labels(observed: &mut Observed, pods: &[(String, &'static str)]) {
    for pod in observed.pods.iter_mut() {
        if let Some((_, role)) = pods.iter().find(|(name, _)| *name == pod.name) {
            pod.role_label = Some((*role).to_owned());
        }
    }
}

/// `spec.singleLeader.failoverDelaySeconds` is ignored: a Warning Event says so, once per spec
/// change, not on every pass.
async fn warn_deprecated_delay(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    previous: &ReplicatedClusterStatus,
) {
    let Some(seconds) = valid.failover.deprecated_delay else {
        return;
    };
    if previous.observed_generation == cluster.metadata.generation {
        return;
    }
    let note = format!("spec.singleLeader.failoverDelaySeconds ({seconds}) is deprecated and ignored: the operator fails over as soon as a majority of members lost the leader for leaderLossTimeoutMs ({} ms); remove the field", valid.failover.leader_loss.as_millis());
    ctx.publish(
        &cluster.object_ref(&()),
        EventType::Warning,
        "DeprecatedField",
        note,
    )
    .await;
}

/// Keeps one health-feed request open to every member with an address (crate::feed), so a
/// change of what a failover decision reads wakes the next reconcile at once.
fn follow_health(ctx: &Context, valid: &ValidatedCluster, auth: &NodeAccess, view: &View) {
    let loss_ms = u64::try_from(valid.failover.leader_loss.as_millis()).unwrap_or(u64::MAX);
    let targets = health_targets(view, loss_ms);
    ctx.feed.watch(
        &crate::feed::cluster_ref(&valid.name, &valid.namespace),
        auth,
        loss_ms,
        &targets,
    );
}

/// (pure) The health-feed targets of a view: every member with an address, and the health the
/// operator last read from it.
pub fn health_targets(view: &View, loss_ms: u64) -> Vec<Target> {
    view.members
        .iter()
        .filter_map(|m| {
            Some(Target {
                name: m.name.clone(),
                address: m.address.clone()?,
                seen: m
                    .status()
                    .ok()
                    .map(|n| rc_api::Health::of(n, loss_ms).token()),
            })
        })
        .collect()
}

/// (pure) The failover view: one member per kept ordinal (`spec.replicas`, plus voters beyond
/// it that are still leaving).
pub fn build_view(
    valid: &ValidatedCluster,
    observed: &Observed,
    previous: &ReplicatedClusterStatus,
) -> View {
    let members = valid
        .members
        .iter()
        .map(|peer| {
            let pod = observed.pods.iter().find(|p| p.name == peer.id);
            let state = match pod {
                None => PodState::Missing,
                Some(p) if p.terminating => PodState::Terminating,
                Some(p) if p.ready => PodState::Ready,
                Some(_) => PodState::NotReady,
            };
            let node = match (pod, observed.nodes.get(&peer.id)) {
                (_, Some(result)) => result.clone(),
                (None, None) => Err("pod does not exist".to_owned()),
                (Some(p), None) if p.terminating => Err("pod is being deleted".to_owned()),
                (Some(_), None) => Err("not observed".to_owned()),
            };
            Member {
                name: peer.id.clone(),
                address: pod.and_then(|p| p.address.clone()),
                stable_address: peer.address.clone(),
                pod: state,
                role_label: pod.and_then(|p| p.role_label.clone()),
                node,
            }
        })
        .collect();
    View {
        members,
        desired: usize::try_from(valid.replicas).unwrap_or(0),
        had_voters: previous.voters.as_ref().is_some_and(|v| !v.is_empty()),
        timing: valid.failover,
        last_failover_ms: previous
            .last_failover
            .as_ref()
            .map(|r| r.time.0.as_millisecond()),
        known_epoch: previous
            .epoch
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(0),
        no_leader_since_ms: previous
            .no_leader_since
            .as_ref()
            .map(|t| t.0.as_millisecond()),
        statuses_read_ms: observed.nodes_read_ms,
        switchover: None,
    }
}

/// (pure) What the status records: the "no leader since" time, and a failover record when a
/// leader was elected in this pass, or when one serves in a newer epoch than the last record
/// after a period without a leader (an operator stopped between promote and status write).
fn outcome(report: &Report, previous: &ReplicatedClusterStatus, now_ms: i64) -> LeaderOutcome {
    let decision = &report.decision;
    let record =
        |to: String, from: Option<String>, epoch: u64, at_ms: i64, since_ms: i64| FailoverRecord {
            time: Time(seconds(at_ms)),
            from,
            to,
            epoch: i64::try_from(epoch).unwrap_or(i64::MAX),
            duration_ms: at_ms.saturating_sub(since_ms).max(0),
            unavailable_ms: None,
            detect_ms: None,
            fence_ms: None,
            promote_ms: None,
            reason: None,
        };
    let last_failover = match (&report.promoted, &decision.leader) {
        (Some(p), _) => Some(FailoverRecord {
            unavailable_ms: p
                .from
                .as_ref()
                .map(|_| p.at_ms.saturating_sub(p.last_served_ms).max(0)),
            detect_ms: p
                .from
                .as_ref()
                .map(|_| p.decided_ms.saturating_sub(p.last_served_ms).max(0)),
            fence_ms: Some(p.fenced_ms.saturating_sub(p.decided_ms).max(0)),
            promote_ms: Some(p.at_ms.saturating_sub(p.fenced_ms).max(0)),
            reason: reason_of(p),
            ..record(
                p.to.clone(),
                p.from.clone(),
                p.epoch,
                p.at_ms,
                p.no_leader_since_ms,
            )
        }),
        (None, Some(leader)) => {
            // Only a leader of an epoch the status has not shown yet: a leader that comes back
            // in its own epoch (a readiness blip) is no failover.
            let recorded = previous.last_failover.as_ref().map_or(0, |r| r.epoch);
            let shown = previous.epoch.unwrap_or(0).max(recorded);
            let newer = i64::try_from(decision.epoch).unwrap_or(i64::MAX) > shown;
            match &previous.no_leader_since {
                Some(since) if newer => Some(record(
                    leader.clone(),
                    None,
                    decision.epoch,
                    now_ms,
                    since.0.as_millisecond(),
                )),
                _ => None,
            }
        }
        (None, None) => None,
    };
    LeaderOutcome {
        no_leader_since: decision
            .no_leader_since_ms
            .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .map(MicroTime),
        last_failover,
        failing_over: decision.failing_over && decision.leader.is_none(),
        recheck: decision.recheck,
        voters_pending: decision.voters_pending.clone(),
        held: decision
            .blocked
            .as_ref()
            .filter(|_| decision.leader.is_none())
            .map(|b| b.reason.clone()),
        switchover: None,
    }
}

/// How long a requested switchover's target may take to catch up before it is refused.
pub const SWITCHOVER_BOUND: Duration = Duration::from_secs(10);

/// (pure) The switchover the leader step works towards, if any: one asked for by annotation
/// (`value`: a pod name or `any`, first seen at `since_ms`), else the one a rollout wants
/// before it restarts the leader, else one away from a leader fenced for maintenance. Fenced
/// pods are never the target.
pub fn switchover_request(
    observed: &Observed,
    value: Option<&str>,
    since_ms: Option<i64>,
    rollout_avoid: Option<Vec<String>>,
) -> Option<SwitchoverRequest> {
    let fenced: Vec<String> = observed
        .pods
        .iter()
        .filter(|p| p.fenced)
        .map(|p| p.name.clone())
        .collect();
    let anytime = |avoid: Vec<String>| SwitchoverRequest {
        target: None,
        since_ms: i64::MAX,
        bound: Duration::MAX,
        avoid,
    };
    let leader = observed
        .nodes
        .iter()
        .filter_map(|(name, n)| Some((name, n.as_ref().ok()?.single_leader()?)))
        .filter(|(_, n)| n.role == rc_api::Role::Leader && !n.self_fenced)
        .max_by_key(|(_, n)| n.epoch)
        .map(|(name, _)| name.clone());
    if let Some(value) = value {
        let target = value.trim();
        let target = (!target.is_empty() && target != "any").then(|| target.to_owned());
        let mut avoid = fenced;
        // `any`: away from the leader seen now (done once another leads).
        if target.is_none() {
            avoid.extend(leader);
        }
        return Some(SwitchoverRequest {
            target,
            since_ms: since_ms.unwrap_or(i64::MAX),
            bound: SWITCHOVER_BOUND,
            avoid,
        });
    }
    if let Some(mut avoid) = rollout_avoid {
        avoid.extend(fenced);
        return Some(anytime(avoid));
    }
    let fenced_leader = leader.is_some_and(|l| fenced.contains(&l));
    fenced_leader.then(|| anytime(fenced))
}

/// Removes the switchover request annotation from the object as it was read (its
/// resourceVersion): if anything changed since, such as a new request, the removal is refused
/// and the next pass looks again.
pub(super) async fn clear_switchover_request(
    ctx: &Context,
    cluster: &ReplicatedCluster,
) -> Result<(), Error> {
    let api: Api<ReplicatedCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": {
            "resourceVersion": cluster.resource_version(),
            "annotations": { SWITCHOVER_ANNOTATION: null },
        }
    });
    match api
        .patch(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(Error::Annotate(e)),
    }
}

/// The `reason` of a failover record (and the metrics label): the cause the decision gave,
/// `switchover` for a planned hand-over without one, nothing for the first election.
pub fn reason_of(p: &Promotion) -> Option<String> {
    match (&p.cause, &p.from) {
        (Some(cause), _) => Some(cause.kind.to_owned()),
        (None, Some(_)) => Some("switchover".to_owned()),
        (None, None) => None,
    }
}

fn seconds(ms: i64) -> Timestamp {
    Timestamp::from_second(ms.div_euclid(1000)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Sets each pod's role label with a server-side apply of that one label (the operator's field
/// manager owns it; the StatefulSet never sets it). A pod gone meanwhile is skipped.
async fn relabel(
    ctx: &Context,
    namespace: &str,
    pods: &[(String, &'static str)],
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, role) in pods {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "labels": { ROLE_LABEL: role } },
        });
        match api.patch(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Pod".into(),
                    name: name.clone(),
                    source,
                })
            }
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, cluster: &ReplicatedCluster, report: &Report) {
    let reference = cluster.object_ref(&());
    ctx.publish_notes(&reference, &report.notes).await;
    // A decision that waits (no corroboration, no majority) says why, unless a note already did.
    if let Some(blocked) = &report.decision.blocked {
        let said = report.notes.iter().any(|n| n.message == blocked.reason);
        if blocked.warn && !said {
            ctx.publish(
                &reference,
                EventType::Warning,
                reason::FAILOVER_BLOCKED,
                blocked.reason.clone(),
            )
            .await;
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
