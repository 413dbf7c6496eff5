//! The replica: epoch fencing, leader/follower log handling, commit and apply. Pure: no sockets,
//! no clocks (callers pass `now`), no disk. Every durable change is pushed to `records`, which
//! the runtime drains into the write-ahead log under the same lock, in the same order.
//!
//! This file holds the state, recovery, durability tracking and the admin calls (epochs, roles);
//! `replica/leader.rs` the leader's side, `replica/follower.rs` the follower's, `replica/voters.rs`
//! the voter set: who counts, and changing it one member at a time; `replica/roles.rs` epochs
//! and roles (the operator's fence, promote and follow).
//!
//! Safety rules enforced here (docs/design.md §5):
//! - the epoch only moves up, and is durable before any answer that depends on it;
//! - a node accepts at most one leader per epoch (the first `promote`/`follow`/stream wins);
//! - a follower accepts entries only from its epoch's leader and only when (prevIndex, prevEpoch)
//!   matches; committed entries are never truncated;
//! - a leader commits only entries of its own epoch by counting (earlier ones ride along);
//! - a leader that has not heard from a majority within the fence timeout refuses writes;
//! - majorities are counted over the voter set of the newest configuration entry in the log,
//!   and a member counts only while it reports the incarnation recorded there (learners and
//!   members that lost their data never count); the set changes one voter at a time, only after
//!   the leader's no-op and every earlier configuration are committed;
//! - a leader sends nothing before its promotion record is durable, and a restarted leader is
//!   never promoted again in its own epoch (it may have lost entries it had not synced).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rc_api::{FollowerStatus, LogPosition, Peer, Replication, Role, Voter};

mod follower;
pub use follower::Frame;
pub mod leader;
mod recovery;
mod roles;
mod voters;

use super::log::Log;
use super::quorum;
use crate::clock::Instant;
use crate::single_leader::kv::{Applied, KvStore};
use crate::storage::compaction::snapshot_interval;
use crate::storage::snapshot::Snapshot;
use crate::storage::wal::Compaction;
use crate::storage::{Command, Entry, Meta, Op, WalRecord};

/// Leader-side replication progress of one follower.
#[derive(Debug, Clone)]
pub struct Progress {
    pub peer: Peer,
    pub match_index: u64,
    pub next_index: u64,
    /// Send time of the newest frame this follower accepted: proof it was with us then.
    pub contact: Option<Instant>,
    pub acked_round: u64,
    /// The incarnation the follower reported in its last answer of this epoch.
    pub incarnation: Option<u64>,
    /// The follower's in-flight client requests, as it last reported.
    pub load: u32,
    /// Commit index and read round carried by the last frame sent, to know if a new one is due.
    pub sent_commit: u64,
    pub sent_round: u64,
}

/// What the runtime must do after a replica step: see [`Replica::effects`].
#[derive(Debug, Default)]
pub struct Effects {
    /// (index, epoch, outcome) of every entry applied: answer the writes waiting on them.
    pub applied: Vec<(u64, u64, Applied)>,
    /// Records to append to the write-ahead log, then report the sequence with
    /// [`Replica::note_submitted`].
    pub persist: Vec<WalRecord>,
    /// A snapshot and the log tail to compact to, then [`Replica::note_submitted`].
    pub compact: Option<Compaction>,
    /// Leading: what the senders have to look at. `None`: not leading.
    pub leading: Option<SenderWork>,
}

/// What a leader's senders have to send; they are woken only when it changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderWork {
    pub last_index: u64,
    pub commit: u64,
    pub read_round: u64,
    pub promotion_durable: bool,
}

/// Why the node refuses a client write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRefusal {
    NotLeader {
        leader: Option<Peer>,
    },
    /// Leader without a majority within the fence timeout.
    SelfFenced,
    /// Leader handing its leadership over (a switchover): the write was not taken; retry (the
    /// new leader takes it in a moment).
    HandingOver,
}

impl WriteRefusal {
    fn not_leader(meta: &Meta, me: &str) -> WriteRefusal {
        // A restarted leader still records itself as its epoch's leader: never send clients to
        // ourselves.
        WriteRefusal::NotLeader {
            leader: meta.leader.clone().filter(|l| l.id != me),
        }
    }
}

/// Why an admin call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    #[error("epoch {requested} is older than this node's epoch {current}")]
    StaleEpoch { requested: u64, current: u64 },
    #[error("epoch {epoch} already has leader {leader}; a node accepts one leader per epoch")]
    LeaderTaken { epoch: u64, leader: String },
    #[error("this node led epoch {epoch} before it restarted and may have lost entries it had not synced; fence a new epoch and elect again")]
    RestartedLeader { epoch: u64 },
    #[error("this node is not the leader of epoch {epoch}")]
    NotLeader { epoch: u64 },
    /// Not now; the same call may succeed later (a configuration still uncommitted).
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
}

/// A follower's answer to an append or snapshot frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PeerReply {
    Ok {
        match_index: u64,
        round: u64,
        load: u32,
        incarnation: u64,
    },
    /// The log does not contain prev; retry from `hint + 1`.
    Mismatch {
        hint: u64,
        round: u64,
        incarnation: u64,
    },
    /// Refused: the follower is at `epoch` (newer), or bound to another leader in this epoch.
    Rejected { epoch: u64, reason: String },
}

/// What a leader sends a follower next.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Append {
        prev: LogPosition,
        entries: Vec<Arc<Entry>>,
        commit: u64,
        round: u64,
    },
    /// The follower needs entries that were compacted: ship the snapshot file.
    Snapshot { round: u64 },
}

pub struct ReplicaConfig {
    pub id: String,
    pub address: String,
    pub replication: Replication,
    pub fence_timeout: Duration,
    /// Writes between snapshots; `None`: as many as the state holds keys (at least 100,000).
    pub snapshot_every: Option<u64>,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
    /// Randomness from the runtime: the incarnation of a fresh data directory, and the seed of
    /// the next ones (when this node throws its state away).
    pub seed: u64,
}

pub struct Replica {
    cfg: ReplicaConfig,
    meta: Meta,
    role: Role,
    log: Log,
    kv: KvStore,
    commit: u64,
    applied: u64,
    durable: u64,
    /// (WAL sequence number, last log index once that submission is on disk).
    submitted: VecDeque<(u64, u64)>,
    records: Vec<WalRecord>,
    followers: Vec<Progress>,
    leader_contact: Option<Instant>,
    /// Leader: the newest read round requested (read-index confirmations).
    round: u64,
    /// Leader: index of its no-op; linearizable reads wait until it is committed.
    epoch_start: u64,
    /// A compaction the runtime should hand to the WAL.
    pending_compaction: Option<Compaction>,
    /// The background snapshot being written. The log keeps what it covers until it is durable
    /// (`snapshot_written`): the snapshot file sent to a follower is never behind the base.
    snapshot_in_flight: Option<LogPosition>,
    /// Writes applied since the last snapshot started, and how many start the next one.
    writes_since_snapshot: u64,
    snapshot_interval: u64,
    /// Configuration entries: the one in force at the log's base and every one after it, in
    /// log order. The last one is in force.
    configs: Vec<(u64, Vec<Voter>)>,
    /// `meta` changed and is not in a WAL submission yet / is in this one, not yet durable.
    meta_unsubmitted: bool,
    meta_in_flight: Option<u64>,
    rng: u64,
    /// Leader handing over (a switchover): no new writes until then, so the target can catch
    /// up with a log that no longer grows.
    hand_over_until: Option<Instant>,
}

impl Replica {
    /// 64 random bits: splitmix64 over the runtime's seed.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A new random incarnation (never 0).
    fn fresh_incarnation(&mut self) -> u64 {
        self.random().max(1)
    }

    /// The snapshot interval for the state's size, drawn afresh after every snapshot.
    fn draw_snapshot_interval(&mut self) -> u64 {
        let random = self.random();
        snapshot_interval(self.cfg.snapshot_every, self.kv.key_count(), random)
    }

    /// A snapshot of the whole state was started (or installed): count writes toward the next
    /// one from zero, against an interval drawn for the state's size now.
    fn snapshot_started(&mut self) {
        self.writes_since_snapshot = 0;
        self.snapshot_interval = self.draw_snapshot_interval();
    }

    /// Append to the log, tracking configuration entries.
    pub(super) fn log_append(&mut self, e: Entry) {
        if let Command::Config(voters) = &e.command {
            self.configs.push((e.index, voters.clone()));
        }
        self.log.append(e);
    }

    /// Truncate the log from `from`; a configuration entry dropped with it stops being in force.
    pub(super) fn log_truncate(&mut self, from: u64) -> usize {
        let base = self.log.base().index;
        self.configs.retain(|(i, _)| *i < from || *i <= base);
        self.log.truncate_from(from)
    }

    // ---- accessors -------------------------------------------------------------------------
    pub fn id(&self) -> &str {
        &self.cfg.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn epoch(&self) -> u64 {
        self.meta.epoch
    }
    pub fn leader(&self) -> Option<&Peer> {
        self.meta.leader.as_ref()
    }
    pub fn last_log(&self) -> LogPosition {
        self.log.last()
    }
    pub fn commit_index(&self) -> u64 {
        self.commit
    }
    pub fn applied_index(&self) -> u64 {
        self.applied
    }
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }
    pub fn followers(&self) -> &[Progress] {
        &self.followers
    }
    pub fn read_round(&self) -> u64 {
        self.round
    }
    pub fn replication(&self) -> Replication {
        self.cfg.replication
    }
    pub fn incarnation(&self) -> u64 {
        self.meta.incarnation
    }

    /// Has everything `meta` says reached the disk? A leader sends nothing before: a promotion
    /// it forgot in a crash could otherwise be made again, with other entries at the same
    /// (index, epoch).
    pub fn meta_durable(&self) -> bool {
        !self.meta_unsubmitted && self.meta_in_flight.is_none()
    }
    pub fn take_records(&mut self) -> Vec<WalRecord> {
        std::mem::take(&mut self.records)
    }
    pub fn take_compaction(&mut self) -> Option<Compaction> {
        self.pending_compaction.take()
    }

    /// The background snapshot at `at` is durable: forget the entries it covers, and return
    /// them to be freed off the lock. Ignored if the state was replaced meanwhile (a snapshot
    /// installed or the state discarded).
    #[must_use = "the entries are returned to be freed after the node's lock is released"]
    pub fn snapshot_written(&mut self, at: LogPosition) -> VecDeque<Arc<Entry>> {
        if self.snapshot_in_flight != Some(at) {
            return VecDeque::new();
        }
        self.snapshot_in_flight = None;
        if at.index > self.log.base().index && self.log.epoch_at(at.index) == Some(at.epoch) {
            return self.log.compact_to(at);
        }
        VecDeque::new()
    }

    /// Everything the last steps asked of the runtime, as one list it carries out in order
    /// (openraft's engine commands are the model): apply what is committed and answer its
    /// writers, append records, compact, then either feed the senders (leading) or fail every
    /// waiter (not leading: nobody here decides their fate any more).
    pub fn effects(&mut self) -> Effects {
        let applied = self.apply_committed();
        Effects {
            applied,
            persist: self.take_records(),
            compact: self.take_compaction(),
            leading: (self.role == Role::Leader).then(|| SenderWork {
                last_index: self.log.last().index,
                commit: self.commit,
                read_round: self.read_round(),
                promotion_durable: self.meta_durable(),
            }),
        }
    }

    // ---- durability ------------------------------------------------------------------------

    /// The runtime queued everything in `records` as WAL submission `seq`.
    pub fn note_submitted(&mut self, seq: u64) {
        self.submitted.push_back((seq, self.log.last().index));
        if self.meta_unsubmitted {
            self.meta_unsubmitted = false;
            self.meta_in_flight = Some(seq);
        }
    }

    /// The WAL reports every submission up to `seq` durable.
    pub fn on_durable(&mut self, seq: u64, now: Instant) {
        if self.meta_in_flight.is_some_and(|s| s <= seq) {
            self.meta_in_flight = None;
        }
        let mut upto = None;
        while self.submitted.front().is_some_and(|(s, _)| *s <= seq) {
            upto = self.submitted.pop_front().map(|(_, i)| i);
        }
        if let Some(i) = upto {
            self.durable = i.min(self.log.last().index);
            self.advance_commit(now);
        }
    }

    // ---- status ----------------------------------------------------------------------------

    pub fn ms_since_leader_contact(&self, now: Instant) -> Option<u64> {
        if self.role == Role::Leader {
            return Some(0);
        }
        self.leader_contact
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
    }

    pub fn follower_status(&self, now: Instant) -> Vec<FollowerStatus> {
        let last = self.log.last().index;
        self.followers
            .iter()
            .map(|f| FollowerStatus {
                id: f.peer.id.clone(),
                address: f.peer.address.clone(),
                match_index: f.match_index,
                lag_entries: last.saturating_sub(f.match_index),
                last_ack_ms: f
                    .contact
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                incarnation: f.incarnation,
                voter: self.counts(f),
            })
            .collect()
    }
}

/// Rough wire size of a command, for batch limits.
pub fn command_size(c: &Command) -> usize {
    match c {
        Command::Noop => 8,
        Command::Config(voters) => 16 + voters.iter().map(|v| 16 + v.id.len()).sum::<usize>(),
        Command::Put { key, value } => 16 + key.len() + value.len(),
        Command::Delete { key } => 16 + key.len(),
        Command::Batch(ops) => ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => 16 + key.len() + value.len(),
                Op::Delete { key } => 16 + key.len(),
            })
            .sum(),
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
