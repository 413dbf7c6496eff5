//! The `ReplicatedCluster` custom resource: spec types, defaults and the CEL rules the API server
//! enforces. Pure data, no I/O.
//!
//! Every `///` comment on a type or field in this file is user-facing: it becomes the field's
//! description in the generated CRD and in `kubectl explain`. Implementation notes go in `//`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::ReplicatedClusterStatus;
// The enums the node, the operator and this resource share: one definition, in rc-api.
pub use rc_api::{ConflictResolution, Forwarding, Mode, Replication};

/// Default node image when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = "ghcr.io/replicated-dev/rc-node:0.1.0";
/// Default number of nodes.
pub const DEFAULT_REPLICAS: i32 = 3;
/// Default time followers may go without hearing from the leader before it counts as lost.
pub const DEFAULT_LEADER_LOSS_TIMEOUT_MS: i32 = 1000;
/// Default interval of the leader's heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: i32 = 100;
/// Default least time between two failovers decided on reachability.
pub const DEFAULT_MIN_FAILOVER_INTERVAL_SECONDS: i32 = 5;
/// Default size of each node's volume.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";
/// Default leaderless replication factor (N); write and read quorums default to a majority of it.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 3;

/// A replicated key-value store cluster of rc-node processes, run as a StatefulSet. In
/// `SingleLeader` mode one node accepts writes and the operator chooses it and fails over when it
/// is lost; in `Leaderless` mode every node coordinates reads and writes with quorums.
// Each printcolumn repeats `type_`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "replicated.dev",
    version = "v1alpha1",
    kind = "ReplicatedCluster",
    plural = "replicatedclusters",
    singular = "replicatedcluster",
    shortname = "rcl",
    category = "replicated",
    namespaced,
    status = "ReplicatedClusterStatus",
    derive = "PartialEq",
    doc = "A replicated key-value store cluster managed by the rc-operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Replication architecture"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Nodes that are ready"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Current leader (SingleLeader mode)"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        description = "Current leader epoch (SingleLeader mode)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary of the cluster's state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // Pod names (`<name>-<ordinal>`), the StatefulSet's revision label and the Service names
    // (`<name>-replicas`) must stay within 63-character DNS-1035 labels.
    validation = Rule::new("self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 40 characters of lowercase letters, digits and '-', starting with a letter")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(validation = Rule::new("self.mode == 'SingleLeader' || !has(self.singleLeader)")
    .message("spec.singleLeader may only be set when spec.mode is SingleLeader")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("self.mode == 'Leaderless' || !has(self.leaderless)")
    .message("spec.leaderless may only be set when spec.mode is Leaderless")
    .reason(Reason::FieldValueForbidden))]
// The default of leaderless.replicationFactor (3) is repeated here because the rule must also hold
// when the user omits spec.leaderless entirely.
#[x_kube(validation = Rule::new("self.mode != 'Leaderless' || (has(self.leaderless) && has(self.leaderless.replicationFactor) ? self.leaderless.replicationFactor : 3) <= self.replicas")
    .message("spec.leaderless.replicationFactor (default 3) must not exceed spec.replicas")
    .reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedClusterSpec {
    /// Replication architecture: `SingleLeader` (one leader accepts writes and replicates a log to
    /// followers; the operator chooses the leader and fails over) or `Leaderless` (every node
    /// coordinates reads and writes with quorums on a consistent-hash ring). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.mode is immutable").reason(Reason::FieldValueForbidden))]
    pub mode: Mode,

    /// Number of nodes (pods). Each node keeps its data on its own PersistentVolumeClaim.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.replicas must be at least 1"))]
    pub replicas: i32,

    /// Container image of the rc-node binary.
    #[serde(default = "default_image")]
    #[x_kube(validation = Rule::new("self != ''").message("spec.image must not be empty"))]
    pub image: String,

    /// Pull policy of the node image: `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Persistent storage of each node.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Compute resources (requests and limits) of each node's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Settings of `SingleLeader` mode. Only allowed when `mode` is `SingleLeader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_leader: Option<SingleLeaderSpec>,

    /// Settings of `Leaderless` mode. Only allowed when `mode` is `Leaderless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderless: Option<LeaderlessSpec>,

    /// Secret holding the bearer token of the nodes' admin API under the key `token` (and,
    /// during a rotation, `token.next` or `token.previous`). It must be labelled
    /// `replicated.dev/admin-secret-for: <cluster>`. When not set, the operator creates
    /// `<cluster>-admin` with a random token, and rotates it when the cluster is annotated
    /// `replicated.dev/rotate-admin-token: <any new value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret_ref: Option<SecretReference>,

    /// Transport security of client, peer and admin traffic.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Client authentication. When set, the client API needs `Authorization: Bearer <token>`
    /// with a token listed in the named Secret (401 otherwise; 403 when a read-only token
    /// writes). Unset: any client that reaches the client port may read and write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthSpec>,

    /// Log output of the nodes.
    #[serde(default)]
    pub logging: LoggingSpec,

    /// Holds a rolling update at its next safe point: no further pod is restarted while true
    /// (a restart already under way completes). While paused, `spec.replicas` must not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// Image pull policy of the node container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Persistent storage of each node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each node's PersistentVolumeClaim, e.g. `1Gi`. Changing it later does not resize
    /// existing volumes.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the volumes. When not set, the cluster's default StorageClass is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Settings of `SingleLeader` mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.leaderLossTimeoutMs >= 5 * self.heartbeatIntervalMs")
    .message("singleLeader.leaderLossTimeoutMs must be at least five heartbeatIntervalMs, or a few late heartbeats would look like a lost leader")
    .reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.fenceTimeoutMs) || (self.fenceTimeoutMs <= self.leaderLossTimeoutMs && self.fenceTimeoutMs >= 3 * self.heartbeatIntervalMs)")
    .message("singleLeader.fenceTimeoutMs must be at least three heartbeatIntervalMs and at most leaderLossTimeoutMs, so that a cut-off leader stops accepting writes no later than its followers give up on it")
    .reason(Reason::FieldValueInvalid))]
pub struct SingleLeaderSpec {
    /// When the leader acknowledges a write: `Async` (after its own durable append; writes not
    /// yet replicated can be lost on failover), `Quorum` (after a majority of nodes hold it
    /// durably; no acknowledged write is lost) or `All` (after every follower holds it).
    #[serde(default)]
    pub replication: Replication,

    /// How long, in milliseconds, followers may go without hearing from the leader before it
    /// counts as lost; the operator promotes another node as soon as a majority of members
    /// agree (see docs/operator.md). The counterpart of etcd's election timeout. Default 1000.
    #[serde(default = "default_leader_loss_timeout_ms")]
    #[x_kube(validation = Rule::new("self >= 200 && self <= 60000").message("singleLeader.leaderLossTimeoutMs must be between 200 and 60000"))]
    pub leader_loss_timeout_ms: i32,

    /// Interval, in milliseconds, of the leader's heartbeats to its followers. Default 100.
    #[serde(default = "default_heartbeat_interval_ms")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 10000").message("singleLeader.heartbeatIntervalMs must be between 10 and 10000"))]
    pub heartbeat_interval_ms: i32,

    /// Least time, in seconds, between two failovers of this cluster that depose a leader the
    /// operator cannot reach or that fenced itself, so that a flapping network cannot cause a
    /// failover storm. A leader whose pod is gone or that restarted is replaced at once. 0
    /// disables it. Default 5.
    #[serde(default = "default_min_failover_interval_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("singleLeader.minFailoverIntervalSeconds must be between 0 and 3600"))]
    pub min_failover_interval_seconds: i32,

    /// How long, in milliseconds, a leader keeps accepting writes without hearing from a
    /// majority before it fences itself. At most `leaderLossTimeoutMs`, its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 30").message("singleLeader.fenceTimeoutMs must be at least 30"))]
    pub fence_timeout_ms: Option<i32>,

    /// What a follower does with a write or a linearizable read: `Redirect` (307 to the
    /// leader's address, as the operator gave it: the pod IP, or the pod DNS name with the
    /// operator's `--node-address dns`) or `Proxy` (it forwards the request to the leader and
    /// relays the answer, for clients that can reach only a Service). Default `Redirect`.
    #[serde(default)]
    pub client_forwarding: Forwarding,

    /// Deprecated and ignored: failover no longer waits a fixed delay. Detection is
    /// `leaderLossTimeoutMs`; flapping is bounded by `minFailoverIntervalSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_delay_seconds: Option<i32>,
}

impl Default for SingleLeaderSpec {
    fn default() -> Self {
        Self {
            replication: Replication::default(),
            leader_loss_timeout_ms: default_leader_loss_timeout_ms(),
            heartbeat_interval_ms: default_heartbeat_interval_ms(),
            min_failover_interval_seconds: default_min_failover_interval_seconds(),
            fence_timeout_ms: None,
            client_forwarding: Forwarding::default(),
            failover_delay_seconds: None,
        }
    }
}

/// Settings of `Leaderless` mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.writeQuorum) || (self.writeQuorum >= 1 && self.writeQuorum <= (has(self.replicationFactor) ? self.replicationFactor : 3))")
    .message("leaderless.writeQuorum must be between 1 and replicationFactor")
    .reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.readQuorum) || (self.readQuorum >= 1 && self.readQuorum <= (has(self.replicationFactor) ? self.replicationFactor : 3))")
    .message("leaderless.readQuorum must be between 1 and replicationFactor")
    .reason(Reason::FieldValueInvalid))]
pub struct LeaderlessSpec {
    /// Number of nodes that store each key (N). At most `spec.replicas`. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("leaderless.replicationFactor must be at least 1"))]
    pub replication_factor: Option<i32>,

    /// Replicas that must acknowledge a write before it succeeds (W), 1 to N. Default: a majority
    /// of N. With `writeQuorum + readQuorum > replicationFactor` every read sees the latest
    /// acknowledged write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<i32>,

    /// Replicas that must answer a read (R), 1 to N. Default: a majority of N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_quorum: Option<i32>,

    /// How concurrent writes to one key are reconciled: `LastWriteWins` (the write with the
    /// newest hybrid logical clock timestamp wins) or `Siblings` (concurrent values are all kept
    /// and returned to the client to merge).
    #[serde(default)]
    pub conflict_resolution: ConflictResolution,
}

/// A Secret in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct SecretReference {
    /// Name of the Secret. It must hold the admin token under the key `token`.
    #[x_kube(validation = Rule::new("self != ''").message("adminSecretRef.name must not be empty"))]
    pub name: String,
}

/// Client authentication by bearer tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientAuthSpec {
    /// A Secret of the cluster's namespace whose key `tokens` lists the client tokens, one per
    /// line: `<token>` (reads and writes) or `<token> read-only`; at least 16 characters each.
    /// It must be labelled `replicated.dev/client-tokens-for: <cluster>` (it is mounted into
    /// the pods). Nodes re-read it when it changes: add a token, roll clients over, remove the
    /// old one.
    #[x_kube(validation = Rule::new("self != ''").message("clientAuth.secretName must not be empty"))]
    pub secret_name: String,
}

/// TLS of the nodes: on by default, with a CA per cluster that the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Serve client, peer and admin traffic over TLS only. The operator creates the CA
    /// (Secret `<cluster>-ca`), the node certificate (Secret `<cluster>-tls`, renewed before it
    /// expires) and publishes the CA certificate for clients in ConfigMap `<cluster>-ca`. Fixed
    /// at creation: a running cluster cannot switch between TLS and plain text.
    #[serde(default = "enabled")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.tls.enabled is immutable").reason(Reason::FieldValueForbidden))]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

impl Default for TlsSpec {
    fn default() -> Self {
        TlsSpec { enabled: true }
    }
}

/// Log output of the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// Minimum level logged: `error`, `warn`, `info`, `debug` or `trace`.
    #[serde(default)]
    pub level: LogLevel,
    /// Log line format: `json` (one JSON object per line) or `text`.
    #[serde(default)]
    pub format: LogFormat,
}

/// Minimum log level of the nodes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

/// Log line format of the nodes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.to_owned())
}

fn default_leader_loss_timeout_ms() -> i32 {
    DEFAULT_LEADER_LOSS_TIMEOUT_MS
}

fn default_heartbeat_interval_ms() -> i32 {
    DEFAULT_HEARTBEAT_INTERVAL_MS
}

fn default_min_failover_interval_seconds() -> i32 {
    DEFAULT_MIN_FAILOVER_INTERVAL_SECONDS
}
