//! Durable storage: the write-ahead log (one writer thread, group commit) and snapshots.
//!
//! Does I/O. The replication core decides *what* to persist; this module only makes it durable
//! and tells the core how far durability has reached (a sequence number per submitted batch).

pub mod snapshot;
pub mod wal;

use serde::{Deserialize, Serialize};

use rc_api::{BatchOp, LogPosition, Peer, Voter};

/// A state-machine command carried by a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Appended by a new leader before it serves: committing it commits every earlier entry.
    Noop,
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Applied atomically, in order.
    Batch(Vec<BatchOp>),
    /// Single-leader membership: the voter set from this entry on (in force once appended, as
    /// in Raft; the key-value state ignores it).
    Config(Vec<Voter>),
}

/// One replicated log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub epoch: u64,
    pub command: Command,
}

impl Entry {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            epoch: self.epoch,
            index: self.index,
        }
    }
}

/// The fencing state that must survive a restart: the highest epoch adopted, the one leader
/// this node accepted for it (a node follows at most one leader per epoch), and the incarnation
/// of this data directory (0: none yet; see `rc_api::Voter`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub epoch: u64,
    pub leader: Option<Peer>,
    pub incarnation: u64,
}

/// A record in the write-ahead log. Replaying the records in order rebuilds the log and `Meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    Entry(Entry),
    /// Drop every entry with index >= `from` (a divergent suffix).
    Truncate {
        from: u64,
    },
    Meta(Meta),
    /// Leaderless: a key's whole merged state (replaces the previous one on replay).
    KeyState {
        key: String,
        state: crate::leaderless::dvv::KeyState,
    },
    /// Leaderless: the installed ring.
    Ring(rc_api::Ring),
    /// Leaderless: a write held for a member that was down (hinted handoff).
    Hint(Hint),
    /// Leaderless: hint `id` was delivered.
    HintDone {
        id: u64,
    },
}

/// A write for `target` that could not be delivered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub id: u64,
    pub target: String,
    pub key: String,
    pub state: crate::leaderless::dvv::KeyState,
}
