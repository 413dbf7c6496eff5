//! `GET /admin/status`: what a node reports about itself, and the health-feed query.

use serde::{Deserialize, Serialize};

use crate::{FollowerStatus, LeaderlessStatus, LogPosition, Mode, Replication, Role, VoterConfig};

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
