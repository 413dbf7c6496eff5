//! Durable storage: the write-ahead log (one writer thread, group commit) and snapshots.
//!
//! Does I/O. The replication core decides *what* to persist; this module only makes it durable
//! and tells the core how far durability has reached (a sequence number per submitted batch).

pub mod compaction;
pub mod snapshot;
pub mod unlink;
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
    Batch(Vec<Op>),
    /// Single-leader membership: the voter set from this entry on (in force once appended, as
    /// in Raft; the key-value state ignores it).
    Config(Vec<Voter>),
}

impl Command {
    /// Key writes in this entry, at least one: what a snapshot interval counts (a batch of
    /// 1,000 puts grows the log as much as 1,000 single puts).
    pub fn writes(&self) -> u64 {
        match self {
            Command::Batch(ops) => (ops.len() as u64).max(1),
            _ => 1,
        }
    }
}

/// One operation of a batch, as the log stores it. Not the API's [`BatchOp`]: that one is
/// internally tagged (`{"op": "put", ...}`) for its JSON clients, which a binary format such as
/// the log's and the peer stream's (postcard) cannot read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put { key: String, value: String },
    Delete { key: String },
}

impl From<BatchOp> for Op {
    fn from(op: BatchOp) -> Op {
        match op {
            BatchOp::Put { key, value } => Op::Put { key, value },
            BatchOp::Delete { key } => Op::Delete { key },
        }
    }
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
        state: std::sync::Arc<crate::leaderless::dvv::KeyState>,
    },
    /// Leaderless: the installed ring.
    Ring(rc_api::Ring),
    /// Leaderless: a write held for a member that was down (hinted handoff).
    Hint(Hint),
    /// Leaderless: hint `id` was delivered.
    HintDone {
        id: u64,
    },
    /// Leaderless: `key` is gone from this node (a purged tombstone, or a key handed to its
    /// owners). Replayed in order, so a restart never brings it back. (Last: postcard numbers
    /// variants, and logs written before it existed decode as they did.)
    KeyRemoved {
        key: String,
    },
}

/// A write for `target` that could not be delivered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub id: u64,
    pub target: String,
    pub key: String,
    /// Shared with the store and the outboxes: a state is written once, never deep-copied.
    pub state: std::sync::Arc<crate::leaderless::dvv::KeyState>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rc_api::{Member, MemberState, Ring};

    use super::*;
    use crate::leaderless::dvv::{KeyState, Sibling};

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            ("[a-z]{1,8}", ".{0,16}").prop_map(|(key, value)| Op::Put { key, value }),
            "[a-z]{1,8}".prop_map(|key| Op::Delete { key }),
        ]
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Noop),
            ("[a-z]{1,8}", ".{0,16}").prop_map(|(key, value)| Command::Put { key, value }),
            "[a-z]{1,8}".prop_map(|key| Command::Delete { key }),
            prop::collection::vec(op(), 1..8).prop_map(Command::Batch),
            prop::collection::vec(("[a-z]{1,4}", any::<u64>()), 0..4).prop_map(|v| {
                Command::Config(
                    v.into_iter()
                        .map(|(id, incarnation)| Voter { id, incarnation })
                        .collect(),
                )
            }),
        ]
    }

    fn record() -> impl Strategy<Value = WalRecord> {
        let state = (any::<u64>(), prop::option::of(".{0,8}")).prop_map(|(ts, value)| KeyState {
            siblings: vec![Sibling {
                node: "n0~1".into(),
                counter: 1,
                ts,
                value,
            }],
            clock: [("n0~1".to_string(), 1)].into_iter().collect(),
        });
        prop_oneof![
            (any::<u64>(), any::<u64>(), command()).prop_map(|(index, epoch, command)| {
                WalRecord::Entry(Entry {
                    index,
                    epoch,
                    command,
                })
            }),
            any::<u64>().prop_map(|from| WalRecord::Truncate { from }),
            (any::<u64>(), any::<u64>()).prop_map(|(epoch, incarnation)| {
                WalRecord::Meta(Meta {
                    epoch,
                    leader: Some(Peer {
                        id: "n0".into(),
                        address: "127.0.0.1:7400".into(),
                    }),
                    incarnation,
                })
            }),
            ("[a-z]{1,8}", state.clone()).prop_map(|(key, state)| WalRecord::KeyState {
                key,
                state: state.into()
            }),
            any::<u64>().prop_map(|version| WalRecord::Ring(Ring {
                version,
                members: vec![Member {
                    id: "n0".into(),
                    address: "127.0.0.1:7400".into(),
                    state: MemberState::Joining,
                }],
            })),
            (any::<u64>(), "[a-z]{1,8}", state).prop_map(|(id, key, state)| {
                WalRecord::Hint(Hint {
                    id,
                    target: "n1".into(),
                    key,
                    state: state.into(),
                })
            }),
            any::<u64>().prop_map(|id| WalRecord::HintDone { id }),
        ]
    }

    #[test]
    fn the_api_batch_op_cannot_go_into_the_log_which_is_why_op_exists() -> Result<(), String> {
        let api = BatchOp::Put {
            key: "k".into(),
            value: "v".into(),
        };
        let bytes = postcard::to_allocvec(&api).map_err(|e| e.to_string())?;
        assert!(postcard::from_bytes::<BatchOp>(&bytes).is_err());
        let stored = Op::from(api);
        let bytes = postcard::to_allocvec(&stored).map_err(|e| e.to_string())?;
        assert_eq!(postcard::from_bytes::<Op>(&bytes).ok(), Some(stored));
        Ok(())
    }

    proptest! {
        /// The law the log and the peer stream rest on: whatever is written reads back the
        /// same. (A batch entry once could not: its ops were internally tagged, which postcard
        /// cannot decode, so followers refused it and a restart could not replay it.)
        #[test]
        fn every_record_reads_back_as_written(rec in record()) {
            let bytes = postcard::to_allocvec(&rec).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: WalRecord =
                postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, rec);
        }
    }
}
