//! Single-leader wire types: log positions, voters, the operator's admin requests (fence,
//! promote, follow, voter changes, hand-over), follower progress, and the health a failover
//! decision reads.

use serde::{Deserialize, Serialize};

use crate::{Role, SingleLeaderStatus};

/// Members needed for a majority of `voters`: what a commit, a read confirmation or a failover
/// needs to hear from (the node and the operator count the same way).
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
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

    pub fn of(status: &SingleLeaderStatus, leader_loss_ms: u64) -> Self {
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
}
