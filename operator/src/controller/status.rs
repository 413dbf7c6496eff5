//! (pure) `compute_status(observed, previous)`: the status from what pods and nodes report,
//! never from what was asked for. The reconciler writes it with one server-side apply, and only
//! when it differs from the previous one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rc_api::{NodeStatus, Role};

use super::observe::Observed;
use super::validate::{SpecError, ValidatedCluster};
use crate::crd::{
    condition, reason, ClusterMode, LoadFigures, MemberRole, MemberStatus, Phase,
    ReplicatedClusterStatus,
};

/// What the status is computed from.
pub struct StatusInput<'a> {
    /// `metadata.generation` of the cluster.
    pub generation: Option<i64>,
    /// The validated spec, or why it is invalid.
    pub spec: Result<&'a ValidatedCluster, &'a SpecError>,
    pub observed: &'a Observed,
    pub previous: Option<&'a ReplicatedClusterStatus>,
    pub now: Time,
}

pub fn compute_status(input: &StatusInput<'_>) -> ReplicatedClusterStatus {
    let observed = input.observed;
    let previous = input.previous.cloned().unwrap_or_default();
    let live_pods: Vec<_> = observed.pods.iter().filter(|p| !p.terminating).collect();
    let ready_replicas = count(live_pods.iter().filter(|p| p.ready).count());
    let mut members: Vec<MemberStatus> = live_pods
        .iter()
        .map(|pod| member(pod.name.clone(), pod.ready, observed.nodes.get(&pod.name)))
        .collect();
    let reachable: Vec<&NodeStatus> = observed
        .nodes
        .values()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    add_follower_lag(&mut members, &reachable);
    let load = load_figures(&mut members);
    let unreachable = members.iter().filter(|m| !m.reachable).count();

    let mut status = ReplicatedClusterStatus {
        observed_generation: input.generation,
        replicas: count(live_pods.len()),
        ready_replicas,
        members,
        load,
        last_failover: previous.last_failover.clone(),
        ring: previous.ring.clone(),
        ..ReplicatedClusterStatus::default()
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
                previous_or(&previous.conditions, condition::AVAILABLE, &conditions),
                previous_or(&previous.conditions, condition::PROGRESSING, &conditions),
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

    // Available: a quorum of nodes is ready, and in SingleLeader mode a node leads.
    let has_quorum = ready_replicas >= cluster.quorum;
    let (available, available_reason, available_message) = match cluster.mode {
        ClusterMode::SingleLeader => {
            let leader = current_leader(&reachable);
            status.leader = leader.map(|l| l.node_id.clone());
            record_voters(&mut status, &reachable, &previous);
            status.epoch = reachable.iter().map(|n| n.epoch).max().map(to_i64);
            match leader {
                Some(l) if has_quorum => (
                    true,
                    reason::LEADER_SERVING,
                    format!("{} leads epoch {}", l.node_id, l.epoch),
                ),
                Some(_) => (
                    false,
                    reason::NO_QUORUM,
                    quorum_message(ready_replicas, cluster.quorum),
                ),
                None => (
                    false,
                    reason::NO_LEADER,
                    "no node reports itself leader".to_owned(),
                ),
            }
        }
        ClusterMode::Leaderless => {
            // Nodes answer /readyz before they have a ring, but serve nothing without one.
            let ring_version = reachable
                .iter()
                .filter_map(|n| n.leaderless.as_ref())
                .map(|l| l.ring_version)
                .max()
                .filter(|v| *v > 0);
            status.ring_version = ring_version.map(to_i64);
            match ring_version {
                None => (
                    false,
                    reason::NO_RING,
                    "no node has a membership ring yet".to_owned(),
                ),
                Some(_) if has_quorum => (
                    true,
                    reason::QUORUM_READY,
                    quorum_message(ready_replicas, cluster.quorum),
                ),
                Some(_) => (
                    false,
                    reason::NO_QUORUM,
                    quorum_message(ready_replicas, cluster.quorum),
                ),
            }
        }
    };

    // Progressing: the StatefulSet has not caught up with the spec yet.
    let rollout = rollout_message(observed, cluster.statefulset_replicas);
    let scaling = status.replicas != cluster.replicas;

    // Degraded: nodes that should serve do not, or (single-leader) the leader cannot replicate
    // to a follower: quorum writes still succeed, but one more failure would lose the quorum.
    let stalled = match cluster.mode {
        ClusterMode::SingleLeader => stalled_followers(current_leader(&reachable)),
        ClusterMode::Leaderless => Vec::new(),
    };
    let not_ready = cluster.replicas - ready_replicas;
    let (degraded, degraded_reason, degraded_message) = if not_ready > 0 {
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

    let was_running = matches!(
        previous.phase,
        Some(Phase::Running | Phase::Degraded | Phase::Scaling | Phase::FailingOver)
    );
    status.phase = Some(match (available, degraded) {
        (false, _) if was_running => Phase::Degraded,
        (false, _) => Phase::Pending,
        (true, _) if scaling => Phase::Scaling,
        (true, true) => Phase::Degraded,
        (true, false) => Phase::Running,
    });
    status.conditions = vec![
        conditions.set(
            condition::AVAILABLE,
            available,
            available_reason,
            &available_message,
        ),
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
        conditions.set(
            condition::DEGRADED,
            degraded,
            degraded_reason,
            &degraded_message,
        ),
    ];
    status
}

/// Builds conditions that keep `lastTransitionTime` while their status does not change.
struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a Time,
}

impl Conditions<'_> {
    fn set(&self, type_: &str, value: bool, reason: &str, message: &str) -> Condition {
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
}

/// The previous condition of `type_`, or `Unknown` when there was none.
fn previous_or(previous: &[Condition], type_: &str, conditions: &Conditions<'_>) -> Condition {
    previous
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or_else(|| Condition {
            type_: type_.to_owned(),
            status: "Unknown".to_owned(),
            reason: reason::INVALID_SPEC.to_owned(),
            message: "the spec is invalid".to_owned(),
            observed_generation: conditions.generation,
            last_transition_time: conditions.now.clone(),
        })
}

/// The node that leads: reports `Leader`, is not self-fenced, and has the highest epoch.
fn current_leader<'a>(nodes: &[&'a NodeStatus]) -> Option<&'a NodeStatus> {
    nodes
        .iter()
        .filter(|n| n.role == Role::Leader && !n.self_fenced)
        .max_by_key(|n| n.epoch)
        .copied()
}

fn member(name: String, ready: bool, node: Option<&Result<NodeStatus, String>>) -> MemberStatus {
    match node {
        Some(Ok(node)) => MemberStatus {
            name,
            ready,
            reachable: true,
            role: Some(match node.role {
                Role::Leader => MemberRole::Leader,
                Role::Follower => MemberRole::Follower,
                Role::Peer => MemberRole::Peer,
            }),
            epoch: Some(to_i64(node.epoch)),
            applied_index: Some(to_i64(node.applied_index)),
            lag_ms: node.ms_since_leader_contact.map(to_i64),
            mean_response_ms: (node.stats.count > 0).then_some(round(node.stats.mean_ms)),
            ..MemberStatus::default()
        },
        Some(Err(message)) => MemberStatus {
            name,
            ready,
            message: Some(message.clone()),
            ..MemberStatus::default()
        },
        None => MemberStatus {
            name,
            ready,
            message: Some("admin token not available".to_owned()),
            ..MemberStatus::default()
        },
    }
}

/// Followers' lag in entries comes from their leader's view of them.
fn add_follower_lag(members: &mut [MemberStatus], nodes: &[&NodeStatus]) {
    let Some(leader) = current_leader(nodes) else {
        return;
    };
    for m in members.iter_mut() {
        if let Some(f) = leader.followers.iter().find(|f| f.id == m.name) {
            m.lag_entries = Some(to_i64(f.lag_entries));
        }
    }
}

/// The seed's figures: T_avg over nodes that served requests, L_i = T_i / T_avg, and
/// B = T_avg / max(T_i). None until some node has served a request.
pub fn load_figures(members: &mut [MemberStatus]) -> Option<LoadFigures> {
    let times: Vec<f64> = members.iter().filter_map(|m| m.mean_response_ms).collect();
    if times.is_empty() {
        return None;
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let max = times.iter().copied().fold(0.0_f64, f64::max);
    for m in members.iter_mut() {
        m.load_ratio = m
            .mean_response_ms
            .filter(|_| mean > 0.0)
            .map(|t| round(t / mean));
    }
    Some(LoadFigures {
        mean_response_ms: round(mean),
        max_response_ms: round(max),
        balance_coefficient: if max > 0.0 { round(mean / max) } else { 1.0 },
        nodes: count(times.len()),
    })
}

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

/// Three decimals: enough for the figures, and fewer status writes from noise.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
#[path = "status_tests.rs"]
pub(crate) mod tests;

/// A follower the leader has not heard from for this long is reported (Degraded).
pub const REPLICATION_STALLED_MS: u64 = 5_000;

/// Followers the leader reports no recent acknowledgement from.
fn stalled_followers(leader: Option<&NodeStatus>) -> Vec<String> {
    leader
        .map(|l| {
            l.followers
                .iter()
                .filter(|f| f.last_ack_ms.is_none_or(|ms| ms > REPLICATION_STALLED_MS))
                .map(|f| f.id.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A membership change is under way: phase `Scaling` (unless something worse is shown) and
/// `Progressing` true with `reason` and `message`.
pub fn mark_scaling(
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

/// `Degraded` true with `reason` and `message` (a step of this pass failed: an apply, an
/// eviction), keeping its transition time while it stays true.
pub fn mark_degraded(
    status: &mut ReplicatedClusterStatus,
    previous: Option<&ReplicatedClusterStatus>,
    now: &Time,
    reason: &str,
    message: &str,
) {
    mark_true(status, previous, now, condition::DEGRADED, reason, message);
}

/// `Progressing` true with `reason` and `message`, keeping its transition time while it stays
/// true.
pub fn mark_progressing(
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
fn mark_true(
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

/// SingleLeader: the voter set in force (from the node with the newest epoch and configuration
/// entry; the last recorded one while no node answers) and whether each member counts in it.
fn record_voters(
    status: &mut ReplicatedClusterStatus,
    nodes: &[&NodeStatus],
    previous: &ReplicatedClusterStatus,
) {
    let newest = nodes
        .iter()
        .filter_map(|n| Some((n.epoch, n.config.as_ref()?)))
        .max_by_key(|(epoch, config)| (*epoch, config.index))
        .map(|(_, config)| config);
    let Some(config) = newest else {
        status.voters = previous.voters.clone();
        return;
    };
    status.voters = Some(config.voters.iter().map(|v| v.id.clone()).collect());
    for member in &mut status.members {
        if let Some(node) = nodes.iter().find(|n| n.node_id == member.name) {
            member.voter = Some(config.counts(&member.name, node.incarnation));
        }
    }
}

/// The `Ready` condition tools read (kstatus, Flux, Argo CD): true when the cluster serves
/// (`Available`), nothing is wrong (`Degraded` false) and nothing is changing (`Progressing`
/// false); otherwise false with the reason and message of the first of those that is not so.
/// Computed last, from the other three.
pub fn mark_ready(
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
