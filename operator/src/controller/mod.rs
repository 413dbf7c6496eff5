//! The reconciler. One pass, top to bottom:
//!
//! ```text
//! observe   (client) admin Secret, StatefulSet, Pods, each node's /admin/status
//! validate  (pure)   spec + observations -> ValidatedCluster, or a SpecError
//! leader    (client) SingleLeader: bootstrap, failover and switchover (pure decision in
//!                    `crate::failover`), role labels on pods, Events; first, so a failover
//!                    waits for no apply
//! build     (pure)   ValidatedCluster -> every owned object
//! apply     (client) server-side apply, fixed order
//! ring      (client) Leaderless: the membership ring (pure decision in `crate::membership`),
//!                    Events
//! rollout   (client) the next pod restart of a rolling update (pure plan in `crate::rollout`),
//!                    an eviction
//! status    (pure)   compute_status from the observations and every step's outcome -> one
//!                    server-side apply of status, only when changed
//! ```
//!
//! An invalid spec is not an error: it becomes the `Degraded` condition with reason
//! `InvalidSpec` and a Warning Event, and the operator waits for the spec to change. Errors are
//! transient (API server, network) and retried with per-object exponential backoff.

pub mod apply;
pub mod build;
mod context;
pub mod credentials;
mod error;
pub mod leader;
pub mod observe;
pub mod ring;
pub mod rollout;
pub mod status;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod reconcile_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{predicates, reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

pub use context::Context;
pub use error::Error;
use validate::SpecError;

use crate::crd::{Phase, ReplicatedCluster, ReplicatedClusterStatus};
use crate::labels::{CLUSTER_LABEL, RESTARTED_AT_ANNOTATION, SWITCHOVER_ANNOTATION};

/// Re-read nodes this often while the cluster is healthy (their figures change)...
const REFRESH_HEALTHY: Duration = Duration::from_secs(30);
/// ...and this often while it is not, to report recovery promptly.
const REFRESH_UNHEALTHY: Duration = Duration::from_secs(5);
/// Added to the rest of a failover delay before looking again, so that it has run out.
const FAILOVER_RECHECK_MARGIN: Duration = Duration::from_millis(100);
/// While a rolling update runs, look again this often (a follower catching up, a pod starting).
const ROLLOUT_RECHECK: Duration = Duration::from_millis(500);
/// While an admin-token rotation runs: each step waits for the nodes to re-read their Secret
/// volume (seconds), so look again soon.
const ROTATION_RECHECK: Duration = Duration::from_secs(1);
/// A named admin Secret is not watched; look for it again this often.
const RECHECK_SECRET: Duration = Duration::from_secs(30);

/// Reconciles one ReplicatedCluster. See the module documentation for the steps.
pub async fn reconcile(
    object: Arc<DeserializeGuard<ReplicatedCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let cluster = match &object.0 {
        Ok(cluster) => cluster,
        Err(invalid) => {
            // The object does not even parse (schema bypassed or an old CRD): say so on the
            // object and wait for an edit instead of failing the watch.
            let meta = &invalid.metadata;
            let reference = ObjectReference {
                api_version: Some(ReplicatedCluster::api_version(&()).into_owned()),
                kind: Some(ReplicatedCluster::kind(&()).into_owned()),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                ..ObjectReference::default()
            };
            ctx.metrics.invalid_specs.inc();
            ctx.publish(
                &reference,
                EventType::Warning,
                "MalformedSpec",
                invalid.error.clone(),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    if cluster.metadata.deletion_timestamp.is_some() {
        // Owner references delete every owned object; nothing to do but forget the metrics
        // and stop following its nodes.
        ctx.metrics.forget_cluster(&namespace, &name);
        ctx.feed
            .forget(&crate::feed::cluster_ref(&name, &namespace));
        ctx.forget_token(cluster);
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    // The controller hands over its cached copy, which may not show our own status write of a
    // moment ago yet (a node's health feed can wake us that fast). A status computed from it
    // would undo that write (an older lastFailover, epoch, ring): read the object afresh.
    let api: Api<ReplicatedCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = match api.get_opt(&name).await {
        Ok(Some(fresh)) => fresh,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::Observe {
                kind: "ReplicatedCluster",
                source,
            })
        }
    };
    let result = reconcile_cluster(&fresh, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.record_outcome(&format!("{namespace}/{name}"), false);
    }
    result
}

#[tracing::instrument(name = "reconcile", skip_all, fields(
    cluster = %cluster.name_any(),
    namespace = cluster.namespace().as_deref().unwrap_or_default(),
    generation = cluster.metadata.generation,
    epoch = cluster.status.as_ref().and_then(|s| s.epoch),
))]
async fn reconcile_cluster(cluster: &ReplicatedCluster, ctx: &Context) -> Result<Action, Error> {
    let reference = cluster.object_ref(&());
    let mut observed = match observe::observe(ctx, cluster).await {
        Ok(observed) => observed,
        Err(e) => {
            // Nothing observed, so no status to compute: the Warning Event says why.
            let note = format!("{e} (retried with backoff)");
            ctx.publish(
                &reference,
                EventType::Warning,
                crate::crd::reason::RECONCILE_FAILED,
                note,
            )
            .await;
            return Err(e);
        }
    }; // client
    if let Some(admin) = &observed.admin {
        ctx.remember_tokens(cluster, admin);
    }
    let validated = validate::validate(cluster, &observed.facts()); // pure
    let (steps, action) = match &validated {
        Ok(valid) => (run_steps(ctx, cluster, valid, &mut observed).await, None), // client
        Err(error) => (
            Outcomes::default(),
            Some(report_invalid(ctx, &reference, error).await),
        ),
    };
    let now = now();
    if let Some(e) = &steps.error {
        ctx.publish(
            &reference,
            EventType::Warning,
            crate::crd::reason::RECONCILE_FAILED,
            e.to_string(),
        )
        .await;
    }
    let status = status::compute_status(&status::StatusInput {
        generation: cluster.metadata.generation,
        spec: validated.as_ref(),
        observed: &observed,
        previous: cluster.status.as_ref(),
        now,
        steps: status::StepOutcomes {
            leader: steps.leader.as_ref(),
            ring: steps.ring.as_ref(),
            rollout: steps.rollout.as_ref(),
            credentials: steps.credentials.as_ref(),
            error: steps
                .error
                .as_ref()
                .map(|e| format!("{e} (retried with backoff)")),
        },
    }); // pure
    write_status(ctx, cluster, &status).await?; // client
    if let Some(e) = steps.error {
        return Err(e);
    }
    if let Some(e) = steps.leader_error {
        return Err(e);
    }
    ctx.metrics.observe_cluster(
        &cluster.namespace().unwrap_or_default(),
        &cluster.name_any(),
        &status,
    );
    Ok(action.unwrap_or_else(|| Action::requeue(look_again(&status, &steps))))
}

/// What the steps of a pass with a valid spec did.
#[derive(Default)]
struct Outcomes {
    leader: Option<leader::LeaderOutcome>,
    /// The leader step's error, returned once the status says what the nodes did.
    leader_error: Option<Error>,
    ring: Option<ring::RingOutcome>,
    rollout: Option<rollout::RolloutOutcome>,
    credentials: Option<credentials::CredentialsOutcome>,
    /// The first other step that failed.
    error: Option<Error>,
}

/// The steps for a valid spec, in the order of the module documentation. A failed step is
/// transient: it shows as Degraded (ReconcileFailed) with a Warning Event, the status still
/// records what the other steps did, and the pass is retried with backoff.
async fn run_steps(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &validate::ValidatedCluster,
    observed: &mut observe::Observed,
) -> Outcomes {
    // The leader step goes first: a failover needs nothing the applies change, and must not
    // wait for half a dozen API round trips.
    let rollout_avoid = rollout::switchover_wanted(&rollout::plan_of(valid, observed)); // pure
    let (leader, leader_result) = leader::run(ctx, cluster, valid, observed, rollout_avoid).await; // client
    let mut steps = Outcomes {
        leader,
        leader_error: leader_result.err(),
        ..Outcomes::default()
    };
    // Certificates and Secrets before the objects that mount them.
    match credentials::run(ctx, cluster, valid, observed).await {
        Ok(outcome) => steps.credentials = Some(outcome),
        Err(e) => steps.error = Some(e),
    }
    if let Err(e) = apply::apply_objects(ctx, cluster, valid, observed).await {
        steps.error = steps.error.or(Some(e));
    }
    steps.ring = ring::run(ctx, cluster, valid, observed).await; // client
    if valid.mode == crate::crd::Mode::Leaderless {
        if let Err(e) = refuse_leaderless_switchover(ctx, cluster).await {
            steps.error = steps.error.or(Some(e));
        }
    }
    if steps.error.is_none() {
        match rollout::run(ctx, cluster, valid, observed).await {
            Ok(outcome) => steps.rollout = Some(outcome),
            Err(e) => steps.error = Some(e),
        }
    }
    steps
}

/// An invalid spec: a Warning Event, then wait for the spec to change (a named admin Secret is
/// not watched: look for it again).
async fn report_invalid(ctx: &Context, reference: &ObjectReference, error: &SpecError) -> Action {
    ctx.metrics.invalid_specs.inc();
    ctx.publish(
        reference,
        EventType::Warning,
        error.reason(),
        error.to_string(),
    )
    .await;
    match error {
        SpecError::AdminSecret(_)
        | SpecError::AdminSecretNotDedicated { .. }
        | SpecError::ClientTokensSecret(_)
        | SpecError::ClientTokensSecretNotDedicated { .. } => Action::requeue(RECHECK_SECRET),
        _ => Action::await_change(),
    }
}

/// When to look again: while a failover delay runs, when it ends (a little after, so it has);
/// while members join or leave, soon (they stream in the background); while a rollout runs,
/// soon; while a token rotation runs, soon; else after the phase's refresh interval.
fn look_again(status: &ReplicatedClusterStatus, steps: &Outcomes) -> Duration {
    let refresh = match status.phase {
        Some(Phase::Running) => REFRESH_HEALTHY,
        _ => REFRESH_UNHEALTHY,
    };
    let rolling = |r: &&rollout::RolloutOutcome| {
        !matches!(
            r.step,
            crate::rollout::Step::Done | crate::rollout::Step::Paused { .. }
        )
    };
    steps
        .leader
        .as_ref()
        .and_then(|l| l.recheck)
        .map(|d| (d + FAILOVER_RECHECK_MARGIN).min(refresh))
        .or(steps
            .ring
            .as_ref()
            .and_then(|r| r.recheck)
            .map(|d| d.min(refresh)))
        .or(steps
            .rollout
            .as_ref()
            .filter(rolling)
            .map(|_| ROLLOUT_RECHECK))
        .or(steps
            .credentials
            .as_ref()
            .and_then(|c| c.token_rotation.as_ref())
            .map(|_| ROTATION_RECHECK))
        .unwrap_or(refresh)
}

/// A switchover asked of a Leaderless cluster: refused (it has no leader), and the request
/// removed, so that it does not linger.
async fn refuse_leaderless_switchover(
    ctx: &Context,
    cluster: &ReplicatedCluster,
) -> Result<(), Error> {
    let Some(value) = cluster.annotations().get(SWITCHOVER_ANNOTATION) else {
        return Ok(());
    };
    let note = format!(
        "switchover to {value} refused: {} is a Leaderless cluster, every node takes writes; nothing changed",
        cluster.name_any()
    );
    ctx.publish(
        &cluster.object_ref(&()),
        EventType::Warning,
        crate::crd::reason::SWITCHOVER_REFUSED,
        note,
    )
    .await;
    leader::clear_switchover_request(ctx, cluster).await
}

/// One server-side apply of the whole status, skipped when nothing changed (a write would wake
/// every watcher of the object for nothing).
async fn write_status(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    status: &ReplicatedClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<ReplicatedCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": ReplicatedCluster::api_version(&()),
        "kind": ReplicatedCluster::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(apply::FIELD_MANAGER).force();
    api.patch_status(&cluster.name_any(), &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::PatchStatus)?;
    Ok(())
}

/// The predicate of the cluster watch: a hash of the generation and the request annotations.
fn spec_or_requests(cluster: &DeserializeGuard<ReplicatedCluster>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    predicates::generation(cluster).hash(&mut hasher);
    let annotations = cluster.annotations();
    for key in [SWITCHOVER_ANNOTATION, RESTARTED_AT_ANNOTATION] {
        annotations.get(key).hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Retries with exponential backoff per cluster: 5 s, 10 s, 20 s ... at most 5 minutes.
pub fn error_policy(
    object: Arc<DeserializeGuard<ReplicatedCluster>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let failures = ctx.record_outcome(&key, true);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            step: error.metric_label().to_owned(),
        })
        .inc();
    let delay = backoff(failures);
    warn!(cluster = %key, error = %error, failures, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs((5_u64 << exponent).min(300))
}

/// Now, to the second: the API server stores times to the second, and a status computed with
/// finer times would never compare equal to the stored one.
fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Runs the controller until `shutdown` resolves. `namespace`: watch one namespace, or all.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let clusters: Api<DeserializeGuard<ReplicatedCluster>> = scoped(&client, &namespace);
    // Only spec changes (generation) and the request annotations trigger a reconcile from the
    // cluster object itself: our own status writes must not wake us, or load figures would
    // keep the loop spinning.
    let (reader, writer) = reflector::store();
    let trigger = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_requests, Default::default());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=rc-operator");
    let pods = watcher::Config::default().labels(CLUSTER_LABEL);
    Controller::for_stream(trigger, reader)
        .owns(scoped::<StatefulSet>(&client, &namespace), owned.clone())
        .owns(scoped::<ConfigMap>(&client, &namespace), owned.clone())
        .owns(scoped::<Service>(&client, &namespace), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, &namespace), owned)
        .watches(scoped::<Pod>(&client, &namespace), pods, |pod| {
            let cluster = pod.labels().get(CLUSTER_LABEL)?;
            Some(ObjectRef::new(cluster).within(&pod.namespace()?))
        })
        // A node's health feed wakes its cluster's reconcile at once (crate::feed).
        .reconcile_on(ctx.feed.triggers(namespace.clone()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(cluster = %object, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
}
