//! The replica: epoch fencing, leader/follower log handling, commit and apply. Pure: no sockets,
//! no clocks (callers pass `now`), no disk. Every durable change is pushed to `records`, which
//! the runtime drains into the write-ahead log under the same lock, in the same order.
//!
//! This file holds the state, recovery, durability tracking and the admin calls (epochs, roles);
//! `replica/leader.rs` the leader's side, `replica/follower.rs` the follower's.
//!
//! Safety rules enforced here (design.md §5):
//! - the epoch only moves up, and is durable before any answer that depends on it;
//! - a node accepts at most one leader per epoch (the first `promote`/`follow`/stream wins);
//! - a follower accepts entries only from its epoch's leader and only when (prevIndex, prevEpoch)
//!   matches; committed entries are never truncated;
//! - a leader commits only entries of its own epoch by counting (earlier ones ride along);
//! - a leader that has not heard from a majority within the fence timeout refuses writes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rc_api::{FollowerStatus, LogPosition, Peer, Replication, Role};

mod follower;
pub mod leader;

use super::log::Log;
use super::quorum;
use crate::kv::{Applied, KvStore};
use crate::storage::snapshot::Snapshot;
use crate::storage::{Command, Entry, Meta, WalRecord};

/// Leader-side replication progress of one follower.
#[derive(Debug, Clone)]
pub struct Progress {
    pub peer: Peer,
    pub match_index: u64,
    pub next_index: u64,
    /// Send time of the newest frame this follower accepted: proof it was with us then.
    pub contact: Option<Instant>,
    pub acked_round: u64,
    /// The follower's in-flight client requests, as it last reported.
    pub load: u32,
    /// Commit index and read round carried by the last frame sent, to know if a new one is due.
    pub sent_commit: u64,
    pub sent_round: u64,
}

/// Why the node refuses a client write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRefusal {
    NotLeader {
        leader: Option<Peer>,
    },
    /// Leader without a majority within the fence timeout.
    SelfFenced,
}

/// Why an admin call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    #[error("epoch {requested} is older than this node's epoch {current}")]
    StaleEpoch { requested: u64, current: u64 },
    #[error("epoch {epoch} already has leader {leader}; a node accepts one leader per epoch")]
    LeaderTaken { epoch: u64, leader: String },
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
    },
    /// The log does not contain prev; retry from `hint + 1`.
    Mismatch { hint: u64, round: u64 },
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
    pub snapshot_every: u64,
    pub max_batch_entries: usize,
    pub max_batch_bytes: usize,
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
    pending_compaction: Option<(Snapshot, Vec<WalRecord>)>,
}

impl Replica {
    /// Rebuild from what replay found. Starts as a follower: a restarted leader never resumes
    /// leading by itself (it may lack entries that a majority committed without its fsync).
    pub fn recover(
        cfg: ReplicaConfig,
        snapshot: Option<Snapshot>,
        records: Vec<WalRecord>,
    ) -> Replica {
        let (log, kv) = match &snapshot {
            Some(s) => (Log::with_base(s.last), KvStore::from_snapshot(s)),
            None => (Log::default(), KvStore::default()),
        };
        let base = log.base().index;
        let mut r = Replica {
            cfg,
            meta: Meta::default(),
            role: Role::Follower,
            log,
            kv,
            commit: base,
            applied: base,
            durable: 0,
            submitted: VecDeque::new(),
            records: Vec::new(),
            followers: Vec::new(),
            leader_contact: None,
            round: 0,
            epoch_start: 0,
            pending_compaction: None,
        };
        for rec in records {
            match rec {
                WalRecord::Meta(m) => r.meta = m,
                WalRecord::Truncate { from } => {
                    r.log.truncate_from(from);
                }
                WalRecord::Entry(e) => r.replay_entry(e),
                // Leaderless records never appear in a single-leader data directory.
                WalRecord::KeyState { .. }
                | WalRecord::Ring(_)
                | WalRecord::Hint(_)
                | WalRecord::HintDone { .. } => {}
            }
        }
        if r.meta.leader.as_ref().is_some_and(|l| l.id == r.cfg.id) {
            tracing::warn!(
                epoch = r.meta.epoch,
                "restarted while leading: staying a follower until the operator decides"
            );
        }
        r.durable = r.log.last().index;
        r
    }

    fn replay_entry(&mut self, e: Entry) {
        if e.index <= self.log.base().index {
            return;
        }
        match self.log.epoch_at(e.index) {
            Some(epoch) if epoch == e.epoch => {}
            Some(_) => {
                self.log.truncate_from(e.index);
                self.log.append(e);
            }
            None if e.index == self.log.last().index + 1 => self.log.append(e),
            None => tracing::warn!(
                index = e.index,
                "skipping a log record past a gap during replay"
            ),
        }
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
    pub fn take_records(&mut self) -> Vec<WalRecord> {
        std::mem::take(&mut self.records)
    }
    pub fn take_compaction(&mut self) -> Option<(Snapshot, Vec<WalRecord>)> {
        self.pending_compaction.take()
    }

    // ---- durability ------------------------------------------------------------------------

    /// The runtime queued everything in `records` as WAL submission `seq`.
    pub fn note_submitted(&mut self, seq: u64) {
        self.submitted.push_back((seq, self.log.last().index));
    }

    /// The WAL reports every submission up to `seq` durable.
    pub fn on_durable(&mut self, seq: u64, now: Instant) {
        let mut upto = None;
        while self.submitted.front().is_some_and(|(s, _)| *s <= seq) {
            upto = self.submitted.pop_front().map(|(_, i)| i);
        }
        if let Some(i) = upto {
            self.durable = i.min(self.log.last().index);
            self.advance_commit(now);
        }
    }

    // ---- epochs and roles (admin API) ------------------------------------------------------

    fn set_meta(&mut self, epoch: u64, leader: Option<Peer>) {
        self.meta = Meta { epoch, leader };
        self.records.push(WalRecord::Meta(self.meta.clone()));
    }

    fn step_down(&mut self, reason: &str) {
        if self.role == Role::Leader {
            tracing::warn!(
                epoch = self.meta.epoch,
                reason,
                "stepping down from leader to follower"
            );
        }
        self.role = Role::Follower;
        self.followers.clear();
        self.leader_contact = None;
    }

    /// `POST /admin/epoch`: adopt `epoch` if newer. Idempotent; never moves backwards.
    pub fn fence(&mut self, epoch: u64) {
        if epoch > self.meta.epoch {
            tracing::info!(
                from = self.meta.epoch,
                to = epoch,
                "fenced: adopted a newer epoch"
            );
            self.step_down("fenced by a newer epoch");
            self.set_meta(epoch, None);
        }
    }

    /// `POST /admin/promote`.
    pub fn promote(
        &mut self,
        epoch: u64,
        followers: Vec<Peer>,
        now: Instant,
    ) -> Result<(), AdminRefusal> {
        if epoch == 0 {
            return Err(AdminRefusal::Invalid("epoch must be at least 1".into()));
        }
        self.check_epoch(epoch)?;
        if let Some(l) = &self.meta.leader {
            if epoch == self.meta.epoch && l.id != self.cfg.id {
                return Err(AdminRefusal::LeaderTaken {
                    epoch,
                    leader: l.id.clone(),
                });
            }
        }
        let followers: Vec<Peer> = followers
            .into_iter()
            .filter(|p| p.id != self.cfg.id)
            .collect();
        if self.role == Role::Leader && epoch == self.meta.epoch {
            self.set_followers(followers);
            return Ok(());
        }
        let me = Peer {
            id: self.cfg.id.clone(),
            address: self.cfg.address.clone(),
        };
        self.set_meta(epoch, Some(me));
        self.role = Role::Leader;
        self.leader_contact = None;
        self.followers.clear();
        self.set_followers(followers);
        // Start counting contact from now so a fresh leader is not fenced before its first round.
        for f in &mut self.followers {
            f.contact = Some(now);
        }
        let index = self.log.last().index + 1;
        self.epoch_start = index;
        self.append(Command::Noop);
        tracing::info!(epoch, last_log = ?self.log.last(), followers = self.followers.len(), "promoted to leader");
        Ok(())
    }

    fn set_followers(&mut self, peers: Vec<Peer>) {
        let next = self.log.last().index + 1;
        let mut updated = Vec::with_capacity(peers.len());
        for peer in peers {
            match self.followers.iter().position(|f| f.peer.id == peer.id) {
                Some(i) => {
                    let mut p = self.followers[i].clone();
                    p.peer = peer;
                    updated.push(p);
                }
                None => updated.push(Progress {
                    peer,
                    match_index: 0,
                    next_index: next,
                    contact: None,
                    acked_round: 0,
                    load: 0,
                    sent_commit: 0,
                    sent_round: 0,
                }),
            }
        }
        self.followers = updated;
    }

    /// `POST /admin/follow`.
    pub fn follow(&mut self, epoch: u64, leader: Peer) -> Result<(), AdminRefusal> {
        if leader.id == self.cfg.id {
            return Err(AdminRefusal::Invalid(
                "a node cannot follow itself; use promote".into(),
            ));
        }
        self.check_epoch(epoch)?;
        self.bind_leader(epoch, leader, "told to follow by the operator")
    }

    fn check_epoch(&self, epoch: u64) -> Result<(), AdminRefusal> {
        if epoch < self.meta.epoch {
            return Err(AdminRefusal::StaleEpoch {
                requested: epoch,
                current: self.meta.epoch,
            });
        }
        Ok(())
    }

    /// Accept `leader` for `epoch` (>= ours): the first leader named for an epoch wins.
    fn bind_leader(&mut self, epoch: u64, leader: Peer, why: &str) -> Result<(), AdminRefusal> {
        if epoch == self.meta.epoch {
            if let Some(l) = &self.meta.leader {
                if l.id != leader.id {
                    return Err(AdminRefusal::LeaderTaken {
                        epoch,
                        leader: l.id.clone(),
                    });
                }
                if l.address != leader.address {
                    self.set_meta(epoch, Some(leader));
                }
                return Ok(());
            }
        }
        tracing::info!(epoch, leader = %leader.id, why, "following a leader");
        self.step_down(why);
        self.set_meta(epoch, Some(leader));
        Ok(())
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
            })
            .collect()
    }
}

/// Rough wire size of a command, for batch limits.
pub fn command_size(c: &Command) -> usize {
    match c {
        Command::Noop => 8,
        Command::Put { key, value } => 16 + key.len() + value.len(),
        Command::Delete { key } => 16 + key.len(),
        Command::Batch(ops) => ops
            .iter()
            .map(|op| match op {
                rc_api::BatchOp::Put { key, value } => 16 + key.len() + value.len(),
                rc_api::BatchOp::Delete { key } => 16 + key.len(),
            })
            .sum(),
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
