//! (pure) The members of the status (one per live pod, with what its node reports), the load
//! figures over them, and the voter set in force.

use rc_api::{NodeStatus, Role};

use crate::controller::observe::Observed;
use crate::crd::{LoadFigures, MemberStatus, ReplicatedClusterStatus};

/// `replicas`, `readyReplicas`, `members` and `load` from the live pods and their nodes.
pub(super) fn members_and_load(
    observed: &Observed,
    reachable: &[&NodeStatus],
) -> ReplicatedClusterStatus {
    let live_pods: Vec<_> = observed.pods.iter().filter(|p| !p.terminating).collect();
    let mut members: Vec<MemberStatus> = live_pods
        .iter()
        .map(|pod| member(pod.name.clone(), pod.ready, observed.nodes.get(&pod.name)))
        .collect();
    add_follower_lag(&mut members, reachable);
    let load = load_figures(&mut members);
    ReplicatedClusterStatus {
        replicas: count(live_pods.len()),
        ready_replicas: count(live_pods.iter().filter(|p| p.ready).count()),
        members,
        load,
        ..ReplicatedClusterStatus::default()
    }
}

/// The node that leads: reports `Leader`, is not self-fenced, and has the highest epoch.
pub(super) fn current_leader<'a>(nodes: &[&'a NodeStatus]) -> Option<&'a NodeStatus> {
    nodes
        .iter()
        .filter_map(|n| Some((*n, n.single_leader()?)))
        .filter(|(_, s)| s.role == Role::Leader && !s.self_fenced)
        .max_by_key(|(_, s)| s.epoch)
        .map(|(n, _)| n)
}

fn member(name: String, ready: bool, node: Option<&Result<NodeStatus, String>>) -> MemberStatus {
    match node {
        Some(Ok(node)) => {
            let replication = node.single_leader();
            MemberStatus {
                name,
                ready,
                reachable: true,
                role: Some(node.role()),
                epoch: Some(replication.map_or(0, |s| to_i64(s.epoch))),
                applied_index: Some(replication.map_or(0, |s| to_i64(s.applied_index))),
                lag_ms: replication
                    .and_then(|s| s.ms_since_leader_contact)
                    .map(to_i64),
                mean_response_ms: (node.stats.count > 0).then_some(round(node.stats.mean_ms)),
                ..MemberStatus::default()
            }
        }
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
    let Some(leader) = current_leader(nodes).and_then(|l| l.single_leader()) else {
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

/// SingleLeader: the voter set in force (from the node with the newest epoch and configuration
/// entry; the last recorded one while no node answers) and whether each member counts in it.
pub(super) fn record_voters(
    status: &mut ReplicatedClusterStatus,
    nodes: &[&NodeStatus],
    previous: &ReplicatedClusterStatus,
) {
    let newest = nodes
        .iter()
        .filter_map(|n| n.single_leader())
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
            let incarnation = node.single_leader().map_or(0, |s| s.incarnation);
            member.voter = Some(config.counts(&member.name, incarnation));
        }
    }
}

/// Three decimals: enough for the figures, and fewer status writes from noise.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(super) fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
