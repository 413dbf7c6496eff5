//! Wire types of the node's HTTP APIs, shared by the node (server) and the operator (client).
//!
//! Pure data: serde types and path constants, no I/O. Every struct that crosses the wire between
//! the operator and a node is defined here once.

use serde::{Deserialize, Serialize};

/// Paths of the admin API (bearer-token protected, except the probes and metrics).
pub mod paths {
    pub const STATUS: &str = "/admin/status";
    pub const EPOCH: &str = "/admin/epoch";
    pub const PROMOTE: &str = "/admin/promote";
    pub const FOLLOW: &str = "/admin/follow";
    /// Single-leader, on the leader: stop taking writes until a follower holds the whole log
    /// (a switchover's first step).
    pub const HANDOVER: &str = "/admin/handover";
    /// Single-leader: change the voter set by one member (the leader only).
    pub const VOTERS: &str = "/admin/voters";
    pub const RING: &str = "/admin/ring";
    pub const DECOMMISSION: &str = "/admin/decommission";
    /// Leaderless: start an anti-entropy round now.
    pub const REPAIR: &str = "/admin/repair";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    /// Client key-value API: `GET|PUT|DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=&limit=`.
    pub const KV: &str = "/v1/kv";
    /// Client batch write: `POST /v1/batch`.
    pub const BATCH: &str = "/v1/batch";
}

/// The two architectures one node binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    SingleLeader,
    Leaderless,
}

/// When the leader acknowledges a write to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Replication {
    /// After the leader's own durable append. Writes not yet on a follower can be lost on failover.
    Async,
    /// After a majority of the cluster (leader included) holds the write durably.
    #[default]
    Quorum,
    /// After every follower the leader was told about holds the write durably.
    All,
}

/// A node's role in single-leader mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Accepts writes for `epoch` and replicates them.
    Leader,
    /// Replicates from the leader of its epoch (which may not be known yet).
    Follower,
    /// Leaderless mode: every node coordinates.
    Peer,
}

/// A position in the replicated log. Ordered by epoch first, then index: the "more up to date"
/// order used to pick a new leader.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    pub epoch: u64,
    pub index: u64,
}

/// Another node, named by a stable id and an address the receiver can dial (`host:port` of its
/// HTTP server; DNS names are fine).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub id: String,
    pub address: String,
}

/// A voting member of a single-leader cluster: its id and the incarnation of its data directory.
///
/// A node draws a fresh random incarnation whenever it starts with an empty data directory (a
/// lost or replaced volume) or throws its state away. A voter is counted (for a commit, a read
/// confirmation or an election) only while the node still reports the incarnation recorded here:
/// a node that lost what it acknowledged can never be counted for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Voter {
    pub id: String,
    pub incarnation: u64,
}

/// The voter set in force on a node: the newest configuration entry in its log (in force from
/// the moment it is appended, as in Raft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterConfig {
    /// Log index of the configuration entry.
    pub index: u64,
    pub voters: Vec<Voter>,
    /// True once the node knows the entry is committed.
    pub committed: bool,
}

impl VoterConfig {
    /// Is (`id`, `incarnation`) a voter here?
    pub fn counts(&self, id: &str, incarnation: u64) -> bool {
        self.voters
            .iter()
            .any(|v| v.id == id && v.incarnation == incarnation)
    }

    pub fn has_id(&self, id: &str) -> bool {
        self.voters.iter().any(|v| v.id == id)
    }
}

/// `POST /admin/handover`: as leader of `epoch`, take no new writes and wait at most
/// `wait_ms` until `target` holds the whole log; the answer is the last log position then.
/// Writes resume by themselves a little after, if no fence comes (or at once when the target
/// did not catch up: 409 `busy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverRequest {
    pub epoch: u64,
    pub target: String,
    pub wait_ms: u64,
}

/// `POST /admin/epoch`: fence the node at `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRequest {
    pub epoch: u64,
}

/// Answer to `POST /admin/epoch`: the node's epoch after the call and its last log position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochResponse {
    pub epoch: u64,
    pub last_log: LogPosition,
    /// The incarnation of the node's data directory (see [`Voter`]).
    #[serde(default)]
    pub incarnation: u64,
    /// The voter set in force on the node, if its log has one.
    #[serde(default)]
    pub config: Option<VoterConfig>,
}

/// `POST /admin/promote`: become leader of `epoch`, replicating to `followers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteRequest {
    pub epoch: u64,
    pub followers: Vec<Peer>,
    /// The first voter set, written to the log right after the leader's no-op when its log has
    /// none yet (a new cluster). Ignored when the log already has a configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<Voter>,
}

/// `POST /admin/voters`: the leader of `epoch` makes `voters` (ids) the voter set. Accepted only
/// when it differs from the voter set in force by exactly one member, every earlier
/// configuration is committed, and an added member is a caught-up learner; answered once the
/// new configuration is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotersRequest {
    pub epoch: u64,
    pub voters: Vec<String>,
}

/// `POST /admin/follow`: follow `leader` in `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowRequest {
    pub epoch: u64,
    pub leader: Peer,
}

/// Request statistics a node measures about itself, for the load figures of docs/design.md §8.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RequestStats {
    /// Client requests served since start.
    pub count: u64,
    /// Mean response time in milliseconds over the recent window.
    pub mean_ms: f64,
    /// 99th-percentile response time in milliseconds over the recent window.
    pub p99_ms: f64,
}

/// What the leader knows about one follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    pub id: String,
    pub address: String,
    /// Highest log index the follower holds durably, as last acknowledged.
    pub match_index: u64,
    /// Entries the follower is behind the leader's last index.
    pub lag_entries: u64,
    /// Milliseconds since the follower last answered, if it ever did.
    pub last_ack_ms: Option<u64>,
    /// The incarnation the follower last reported, if it answered in this epoch.
    #[serde(default)]
    pub incarnation: Option<u64>,
    /// True when the follower counts as a voter (id and incarnation in the voter set); false for
    /// a learner.
    #[serde(default)]
    pub voter: bool,
}

/// `GET /admin/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub mode: Mode,
    /// Single-leader: the incarnation of this node's data directory (see [`Voter`]).
    #[serde(default)]
    pub incarnation: u64,
    /// Single-leader: the voter set in force on this node, if its log has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<VoterConfig>,
    pub role: Role,
    pub epoch: u64,
    /// The leader this node follows (or itself when leading), if known.
    pub leader: Option<String>,
    pub last_log: LogPosition,
    pub commit_index: u64,
    pub applied_index: u64,
    /// Index covered by the latest snapshot; the log starts after it.
    pub snapshot_index: u64,
    /// Leader only: per-follower replication progress.
    pub followers: Vec<FollowerStatus>,
    /// Follower only: milliseconds since the leader was last heard from.
    pub ms_since_leader_contact: Option<u64>,
    /// Leader only: true while the leader has not heard from a majority within the fence timeout
    /// and therefore refuses writes.
    pub self_fenced: bool,
    pub replication: Replication,
    pub stats: RequestStats,
    /// Leaderless mode only: ring, membership, hints and streaming as this node sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderless: Option<LeaderlessStatus>,
}

/// `GET /admin/status?waitForChange=<token>&timeoutMs=<ms>&leaderLossMs=<ms>`: the operator's
/// health feed. The node answers as soon as its [`Health`] differs from `token` (at once if it
/// already does), or after `timeoutMs` with its status unchanged. One request in flight per node
/// keeps the operator informed of exactly what a failover decision reads, with no polling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_loss_ms: Option<u64>,
}

/// The part of a node's status a failover decision depends on. Its [`token`](Health::token) is
/// what the health feed compares: both sides compute it with this one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub role: Role,
    pub epoch: u64,
    pub leader: Option<String>,
    pub self_fenced: bool,
    /// A follower that has no leader, or has not heard from it for `leader_loss_ms` or longer.
    pub leader_contact_lost: bool,
}

impl Health {
    pub fn new(
        role: Role,
        epoch: u64,
        leader: Option<String>,
        self_fenced: bool,
        ms_since_leader_contact: Option<u64>,
        leader_loss_ms: u64,
    ) -> Self {
        let leader_contact_lost = role == Role::Follower
            && (leader.is_none() || ms_since_leader_contact.is_none_or(|ms| ms >= leader_loss_ms));
        Self {
            role,
            epoch,
            leader,
            self_fenced,
            leader_contact_lost,
        }
    }

    pub fn of(status: &NodeStatus, leader_loss_ms: u64) -> Self {
        Self::new(
            status.role,
            status.epoch,
            status.leader.clone(),
            status.self_fenced,
            status.ms_since_leader_contact,
            leader_loss_ms,
        )
    }

    /// A short, readable identity: `Follower/4/orders-1/serving/lost`.
    pub fn token(&self) -> String {
        format!(
            "{:?}/{}/{}/{}/{}",
            self.role,
            self.epoch,
            self.leader.as_deref().unwrap_or("-"),
            if self.self_fenced {
                "fenced"
            } else {
                "serving"
            },
            if self.leader_contact_lost {
                "lost"
            } else {
                "contact"
            },
        )
    }
}

/// A member's place in the leaderless ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Receives writes for the ranges it will own and streams them in; serves no reads yet.
    Joining,
    /// Owns its ranges.
    Normal,
    /// Still owns its ranges until it has streamed them to their next owners.
    Leaving,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub state: MemberState,
}

/// `PUT /admin/ring`: the membership, versioned; a node installs only newer versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub version: u64,
    pub members: Vec<Member>,
}

/// A member as one node sees it: ring state plus what failure detection says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub address: String,
    pub state: MemberState,
    pub alive: bool,
}

/// Progress of moving data on membership changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Idle,
    Streaming,
    /// A joining node has every range it will own.
    Joined,
    /// A leaving node has handed every range to its next owners.
    Decommissioned,
    /// Handing ranges over failed (a next owner stayed unreachable); `POST /admin/decommission`
    /// retries.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessStatus {
    pub ring_version: u64,
    pub members: Vec<MemberView>,
    pub replication_factor: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    pub keys: u64,
    pub hints_queued: u64,
    pub stream: StreamState,
    pub keys_streamed: u64,
    pub anti_entropy_rounds: u64,
    pub keys_repaired: u64,
    /// The node lost (or never had) its data and is streaming its ranges back in; it answers
    /// no reads as an owner until then.
    #[serde(default)]
    pub restoring: bool,
    /// Hints queued on this node, by the member they are for.
    #[serde(default)]
    pub hints_for: std::collections::BTreeMap<String, u64>,
}

/// Leaderless read: every concurrent value (one unless `Siblings` mode kept several) and the
/// causal context to pass back on the next write so it supersedes what was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessValue {
    pub key: String,
    /// Set when exactly one value is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub siblings: Vec<String>,
    pub context: String,
}

/// Body of every error answer: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_leader`, `key_too_large`.
    pub code: String,
    pub message: String,
    /// Set on `not_leader`: the leader's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// Client API: body of `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub value: String,
    /// Leaderless `Siblings` mode: the context of the read this write supersedes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Client API: a key's value as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Log index of the write that produced this value.
    pub mod_index: u64,
}

/// Client API: answer to a write (`PUT`, `DELETE`, batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// Log index the write was assigned.
    pub index: u64,
    pub epoch: u64,
    /// For `DELETE`: whether the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// Client API: answer to a prefix scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResult {
    pub items: Vec<KeyValue>,
    /// True when more keys matched than `limit`.
    pub more: bool,
}

/// One operation of `POST /v1/batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BatchOp {
    Put { key: String, value: String },
    Delete { key: String },
}

/// Body of `POST /v1/batch`: applied atomically, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub ops: Vec<BatchOp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_marks_a_follower_lost_at_the_timeout_and_a_leader_never() {
        let follower = |ms| Health::new(Role::Follower, 3, Some("n0".into()), false, ms, 1000);
        assert!(!follower(Some(999)).leader_contact_lost);
        assert!(follower(Some(1000)).leader_contact_lost);
        assert!(follower(None).leader_contact_lost);
        assert!(Health::new(Role::Follower, 3, None, false, Some(5), 1000).leader_contact_lost);
        assert!(
            !Health::new(Role::Leader, 3, Some("n0".into()), true, None, 1000).leader_contact_lost
        );
        assert_ne!(follower(Some(10)).token(), follower(Some(2000)).token());
        assert_eq!(follower(Some(10)).token(), follower(Some(900)).token());
        assert_eq!(follower(Some(10)).token(), "Follower/3/n0/serving/contact");
    }

    #[test]
    fn log_positions_order_by_epoch_before_index() {
        let old_long = LogPosition {
            epoch: 1,
            index: 100,
        };
        let new_short = LogPosition { epoch: 2, index: 3 };
        assert!(new_short > old_long);
        assert!(LogPosition { epoch: 2, index: 4 } > new_short);
    }

    #[test]
    fn batch_ops_use_a_lowercase_op_tag() -> Result<(), serde_json::Error> {
        let req: BatchRequest = serde_json::from_str(
            r#"{"ops":[{"op":"put","key":"a","value":"1"},{"op":"delete","key":"b"}]}"#,
        )?;
        assert_eq!(
            req.ops,
            vec![
                BatchOp::Put {
                    key: "a".into(),
                    value: "1".into()
                },
                BatchOp::Delete { key: "b".into() }
            ]
        );
        assert!(
            serde_json::from_str::<BatchRequest>(r#"{"ops":[{"op":"zap","key":"a"}]}"#).is_err()
        );
        Ok(())
    }
}
