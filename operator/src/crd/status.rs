//! The `ReplicatedCluster` status: what the operator observed, never what was asked for. Pure
//! data, no I/O; `controller::status` computes it.
//!
//! `///` comments here are user-facing (`kubectl explain replicatedcluster.status`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub use rc_api::{MemberState, Role};

/// Transport security and credentials of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityStatus {
    /// `true` when client, peer and admin traffic is TLS (`spec.tls.enabled`).
    pub tls: bool,
    /// Without TLS: what that exposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The ConfigMap whose `ca.crt` clients verify the nodes with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<String>,
    /// `true` when the client API needs a client token (`spec.clientAuth`).
    #[serde(default)]
    pub client_auth: bool,
    /// When the node certificate expires (it is renewed with a third of its life left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<Time>,
    /// An admin-token rotation under way: its step, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_rotation: Option<String>,
}

/// Observed state of a ReplicatedCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedClusterStatus {
    /// The `metadata.generation` of the spec this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// One-word summary: `Pending` (nodes starting, no quorum yet), `Running` (every node ready
    /// and, in SingleLeader mode, a leader serving), `Degraded` (serving, but some nodes are not
    /// ready or unreachable), `FailingOver` (a new leader is being chosen), `Scaling` (nodes being
    /// added or removed) or `Invalid` (the spec cannot be applied; see the Degraded condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Number of node pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Number of node pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Number of node pods that run the latest pod template (`updateRevision`).
    #[serde(default)]
    pub updated_replicas: i32,

    /// The StatefulSet revision every pod ran before the rollout under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,

    /// The StatefulSet revision of the latest pod template: a rolling update restarts pods one
    /// at a time until every pod runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,

    /// Label selector of the cluster's pods (used by the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// SingleLeader mode: the node currently accepting writes, as reported by the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,

    /// SingleLeader mode: the highest leader epoch reported by any node. Each failover starts a
    /// new epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,

    /// SingleLeader mode: the members that vote (count toward commits and elections), as the
    /// nodes' logs record them. Other members are learners: they receive the log and serve stale
    /// reads. A new or replaced member becomes a voter once it has caught up, one member at a
    /// time; a member leaving (scale-down) stops voting before its pod is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voters: Option<Vec<String>>,

    /// Leaderless mode: the newest membership ring version any node reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_version: Option<i64>,

    /// Leaderless mode: the membership ring the operator last installed on the nodes, with each
    /// member's state. Nodes hand newer rings to each other; a member is `Joining` while it
    /// copies the data it will own, `Normal` once it serves, and `Leaving` while it hands its
    /// data to the members that stay (scale-down). The StatefulSet keeps a pod for every member
    /// until the member has left the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingRecord>,

    /// One entry per node pod, by ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,

    /// SingleLeader mode: the most recent failover (or the first election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,

    /// Transport security and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityStatus>,

    /// SingleLeader mode: since when the operator has seen no leader serving (its pod deleted or
    /// not ready, its admin API unreachable, or none elected yet). Unset while a leader serves.
    /// The operator fails over once this is older than `spec.singleLeader.failoverDelaySeconds`
    /// and the followers confirm they lost the leader too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_leader_since: Option<MicroTime>,

    /// How evenly client requests are served across the nodes, from each node's mean response
    /// time (T_i): `meanResponseMs` is T_avg, the mean over nodes; each member's `loadRatio` is
    /// L_i = T_i / T_avg; `balanceCoefficient` is B = T_avg / max(T_i), 1.0 when perfectly
    /// balanced and smaller the more one node lags behind the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFigures>,

    /// Standard conditions: `Available` (clients can read and write), `Progressing` (the
    /// operator is bringing the cluster to its spec) and `Degraded` (something is wrong; see the
    /// reason and message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// One-word summary of a cluster's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Degraded,
    FailingOver,
    Scaling,
    Invalid,
}

/// What one node reports about itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name, which is also the node's id.
    pub name: String,

    /// `Leader`, `Follower` or `Peer` (Leaderless mode), as reported by the node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,

    /// Whether the pod is ready (its `/readyz` answers).
    pub ready: bool,

    /// Whether the operator reached the node's admin API at the last observation.
    pub reachable: bool,

    /// SingleLeader mode: true when the node votes, false for a learner (still catching up, or
    /// beyond `spec.replicas` and leaving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter: Option<bool>,

    /// SingleLeader mode: the epoch the node has adopted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,

    /// SingleLeader mode: highest log index applied to the node's key-value state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<i64>,

    /// SingleLeader mode, followers: entries behind the leader's last index, as the leader
    /// reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<i64>,

    /// SingleLeader mode, followers: milliseconds since the node last heard from its leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,

    /// The node's mean client response time in milliseconds (T_i).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_response_ms: Option<f64>,

    /// The node's load ratio L_i = T_i / T_avg: above 1 means slower than the cluster average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ratio: Option<f64>,

    /// Why the node could not be observed, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A completed failover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// When the new leader was promoted.
    pub time: Time,
    /// The previous leader, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new leader.
    pub to: String,
    /// The epoch the new leader leads.
    pub epoch: i64,
    /// Milliseconds from when the operator first saw the leader lost (or, for the first
    /// election, no leader) to the promotion.
    pub duration_ms: i64,
    /// What the clients saw: milliseconds from the last moment the old leader was known to
    /// serve (its followers' last contact with it) to the new leader's promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_ms: Option<i64>,
    /// Of those: until the operator decided to fail over...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_ms: Option<i64>,
    /// ...fencing a majority at the new epoch...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_ms: Option<i64>,
    /// ...and promoting the most up-to-date member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_ms: Option<i64>,
    /// Why: `gone` (pod deleted or node restarted), `self-fenced`, `unreachable` (corroborated
    /// by a majority), `no-leader`, or `switchover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Leaderless mode: a versioned ring of members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingRecord {
    /// Ring version: every membership change installs a higher one.
    pub version: i64,
    /// The members, in ring order.
    #[serde(default)]
    pub members: Vec<RingMemberRecord>,
}

/// One member of the ring.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingMemberRecord {
    /// Pod name, which is also the node's id.
    pub name: String,
    /// Where the other nodes reach it (`host:port`).
    pub address: String,
    /// `Joining`, `Normal` or `Leaving`.
    pub state: MemberState,
}

/// The cluster's load figures (design model: T_avg, L_i, B).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadFigures {
    /// Mean over reachable nodes of their mean response time, in milliseconds (T_avg).
    pub mean_response_ms: f64,
    /// Slowest node's mean response time, in milliseconds (max T_i).
    pub max_response_ms: f64,
    /// Load-balance coefficient B = T_avg / max(T_i), from 0 to 1; 1 is perfectly balanced.
    pub balance_coefficient: f64,
    /// Number of nodes the figures were computed from.
    pub nodes: i32,
}

/// Condition types.
pub mod condition {
    /// Clients can read and write: a quorum of nodes is ready (and a leader serves, SingleLeader).
    pub const AVAILABLE: &str = "Available";
    /// The operator is changing the cluster towards its spec (creating, scaling, updating).
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong: nodes down or unreachable, or an invalid spec.
    pub const DEGRADED: &str = "Degraded";
    /// SingleLeader: how the last requested switchover ended (present once one was asked for).
    pub const SWITCHOVER: &str = "Switchover";
    /// kstatus-style summary for tools (Flux, Argo CD): `True` when the spec is applied, every
    /// pod runs the latest template and is ready, and the cluster serves.
    pub const READY: &str = "Ready";
}

/// Condition reasons (CamelCase, stable: users and alerts match on them).
pub mod reason {
    pub const QUORUM_READY: &str = "QuorumReady";
    pub const NO_QUORUM: &str = "NoQuorum";
    pub const NO_LEADER: &str = "NoLeader";
    /// SingleLeader: the leader is lost but a failover waits (corroboration, too few members,
    /// or `minFailoverIntervalSeconds`); the message says which.
    pub const FAILOVER_HELD: &str = "FailoverHeld";
    pub const LEADER_SERVING: &str = "LeaderServing";
    /// A rolling update restarts a pod (the message says which and why).
    pub const ROLLING_OUT: &str = "RollingOut";
    /// A rolling update waits for the cluster to be whole (a member down or catching up, hints).
    pub const ROLLOUT_WAITING: &str = "RolloutWaiting";
    /// `spec.paused` holds a rolling update.
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    /// A rolling update hands the leadership to an updated follower before the leader restarts.
    pub const ROLLOUT_SWITCHOVER: &str = "RolloutSwitchover";
    pub const UP_TO_DATE: &str = "UpToDate";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    pub const NODES_UNREACHABLE: &str = "NodesUnreachable";
    /// The leader has not heard from a follower recently (single-leader).
    pub const REPLICATION_STALLED: &str = "ReplicationStalled";
    pub const ALL_NODES_HEALTHY: &str = "AllNodesHealthy";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Leaderless: no node has a membership ring yet (a new cluster waiting for its pods).
    pub const NO_RING: &str = "NoRing";
    /// Leaderless: members are joining or leaving the ring.
    pub const RING_CHANGING: &str = "RingChanging";
    /// SingleLeader: a member is being added to or removed from the voters.
    pub const VOTERS_CHANGING: &str = "VotersChanging";
    /// Leaderless: `spec.replicas` is below the replication factor; the members stay.
    pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
    /// A step of the last reconcile failed (applying an owned object, an eviction); the message
    /// has the API server's answer. Retried with backoff.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// SingleLeader: the requested switchover happened (or the target already led).
    pub const SWITCHOVER_DONE: &str = "SwitchoverDone";
    /// SingleLeader: the requested switchover was refused; the message says why.
    pub const SWITCHOVER_REFUSED: &str = "SwitchoverRefused";
}
