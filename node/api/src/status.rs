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

/// `GET /admin/status`: the part every node reports, and its mode's part. On the wire the mode's
/// fields sit beside the common ones, tagged by `"mode"`:
/// `{"node_id", "stats", "mode": "SingleLeader", "role", "epoch", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub stats: RequestStats,
    /// Which credentials the node uses now, as fingerprints (never the secrets themselves).
    #[serde(default)]
    pub credentials: Credentials,
    #[serde(flatten)]
    pub detail: ModeStatus,
}

/// A node's mode and what only that mode has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode")]
pub enum ModeStatus {
    SingleLeader(SingleLeaderStatus),
    /// Ring, membership, hints and streaming as this node sees them.
    Leaderless(LeaderlessStatus),
}

/// A single-leader node's replication state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SingleLeaderStatus {
    /// The incarnation of this node's data directory (see [`crate::Voter`]).
    pub incarnation: u64,
    /// The voter set in force on this node, if its log has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<VoterConfig>,
    /// `Leader` or `Follower`.
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
}

impl NodeStatus {
    pub fn mode(&self) -> Mode {
        match self.detail {
            ModeStatus::SingleLeader(_) => Mode::SingleLeader,
            ModeStatus::Leaderless(_) => Mode::Leaderless,
        }
    }

    /// `Leader` or `Follower` in single-leader mode; `Peer` in leaderless mode.
    pub fn role(&self) -> Role {
        match &self.detail {
            ModeStatus::SingleLeader(s) => s.role,
            ModeStatus::Leaderless(_) => Role::Peer,
        }
    }

    pub fn single_leader(&self) -> Option<&SingleLeaderStatus> {
        match &self.detail {
            ModeStatus::SingleLeader(s) => Some(s),
            ModeStatus::Leaderless(_) => None,
        }
    }

    pub fn single_leader_mut(&mut self) -> Option<&mut SingleLeaderStatus> {
        match &mut self.detail {
            ModeStatus::SingleLeader(s) => Some(s),
            ModeStatus::Leaderless(_) => None,
        }
    }

    pub fn leaderless_mut(&mut self) -> Option<&mut LeaderlessStatus> {
        match &mut self.detail {
            ModeStatus::Leaderless(s) => Some(s),
            ModeStatus::SingleLeader(_) => None,
        }
    }

    pub fn leaderless(&self) -> Option<&LeaderlessStatus> {
        match &self.detail {
            ModeStatus::Leaderless(s) => Some(s),
            ModeStatus::SingleLeader(_) => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LeaderlessStatus, StreamState};

    fn single_leader() -> NodeStatus {
        NodeStatus {
            node_id: "n0".into(),
            stats: RequestStats::default(),
            credentials: Credentials::default(),
            detail: ModeStatus::SingleLeader(SingleLeaderStatus {
                incarnation: 7,
                config: None,
                role: Role::Leader,
                epoch: 3,
                leader: Some("n0".into()),
                last_log: LogPosition { epoch: 3, index: 9 },
                commit_index: 9,
                applied_index: 9,
                snapshot_index: 0,
                followers: Vec::new(),
                ms_since_leader_contact: None,
                self_fenced: false,
                replication: Replication::Quorum,
            }),
        }
    }

    #[test]
    fn a_mode_s_fields_sit_beside_the_common_ones_tagged_by_mode() -> Result<(), serde_json::Error>
    {
        let json = serde_json::to_value(single_leader())?;
        assert_eq!(json["mode"], "SingleLeader");
        assert_eq!(json["epoch"], 3);
        assert_eq!(json["node_id"], "n0");
        let back: NodeStatus = serde_json::from_value(json)?;
        assert_eq!(back, single_leader());
        assert_eq!(
            (back.mode(), back.role()),
            (Mode::SingleLeader, Role::Leader)
        );
        Ok(())
    }

    #[test]
    fn a_leaderless_node_is_a_peer_with_no_single_leader_part() -> Result<(), serde_json::Error> {
        let status = NodeStatus {
            node_id: "n1".into(),
            stats: RequestStats::default(),
            credentials: Credentials::default(),
            detail: ModeStatus::Leaderless(LeaderlessStatus {
                ring_version: 2,
                members: Vec::new(),
                replication_factor: 3,
                write_quorum: 2,
                read_quorum: 2,
                keys: 0,
                hints_queued: 0,
                stream: StreamState::Idle,
                keys_streamed: 0,
                anti_entropy_rounds: 0,
                keys_repaired: 0,
                restoring: false,
                hints_for: Default::default(),
            }),
        };
        let back: NodeStatus = serde_json::from_value(serde_json::to_value(&status)?)?;
        assert_eq!(back.role(), Role::Peer);
        assert!(back.single_leader().is_none());
        assert_eq!(back.leaderless().map(|l| l.ring_version), Some(2));
        Ok(())
    }
}

/// A node's credentials as fingerprints: the first 16 hex digits of a SHA-256, enough to tell
/// which of two tokens or certificates is in use without revealing either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The admin token this node sends to its peers.
    #[serde(default)]
    pub token: String,
    /// Every token this node accepts (the one above, and during a rotation the next or the
    /// previous one).
    #[serde(default)]
    pub accepted_tokens: Vec<String>,
    /// The certificate this node serves; empty without TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate: String,
}
