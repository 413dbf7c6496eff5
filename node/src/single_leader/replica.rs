//! The replica: epoch fencing, leader/follower log handling, commit and apply. Pure: no sockets,
//! no clocks (callers pass `now`), no disk. Every durable change is pushed to `records`, which
//! the runtime drains into the write-ahead log under the same lock, in the same order.
//!
//! This file holds the state, recovery, durability tracking and the admin calls (epochs, roles);
//! `replica/leader.rs` the leader's side, `replica/follower.rs` the follower's.
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

use rc_api::{FollowerStatus, LogPosition, Peer, Replication, Role, Voter, VoterConfig};

mod follower;
pub mod leader;

use super::log::Log;
use super::quorum::{self, Voting};
use crate::clock::Instant;
use crate::single_leader::kv::{Applied, KvStore};
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
    /// The incarnation the follower reported in its last answer of this epoch.
    pub incarnation: Option<u64>,
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
    pub snapshot_every: u64,
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
    pending_compaction: Option<(Snapshot, Vec<WalRecord>)>,
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
        let configs = snapshot
            .as_ref()
            .and_then(|s| s.config.clone())
            .into_iter()
            .collect();
        let rng = cfg.seed;
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
            configs,
            meta_unsubmitted: false,
            meta_in_flight: None,
            rng,
            hand_over_until: None,
        };
        for rec in records {
            match rec {
                WalRecord::Meta(m) => r.meta = m,
                WalRecord::Truncate { from } => {
                    r.log_truncate(from);
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
        if r.meta.incarnation == 0 {
            // A data directory without an identity: new, or lost. Anything this node once
            // acknowledged is gone, so it must never be counted as the voter it was.
            let incarnation = r.fresh_incarnation();
            tracing::info!(
                incarnation,
                "empty data directory: starting as a new incarnation (a learner until added as a voter)"
            );
            let meta = Meta {
                incarnation,
                ..r.meta.clone()
            };
            r.set_meta_record(meta);
        }
        r.durable = r.log.last().index;
        r
    }

    /// A new random incarnation (never 0).
    fn fresh_incarnation(&mut self) -> u64 {
        // splitmix64 over the runtime's seed.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
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

    fn replay_entry(&mut self, e: Entry) {
        if e.index <= self.log.base().index {
            return;
        }
        match self.log.epoch_at(e.index) {
            Some(epoch) if epoch == e.epoch => {}
            Some(_) => {
                self.log_truncate(e.index);
                self.log_append(e);
            }
            None if e.index == self.log.last().index + 1 => self.log_append(e),
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
    pub fn incarnation(&self) -> u64 {
        self.meta.incarnation
    }

    /// The voter set in force: the newest configuration entry in the log.
    pub fn config(&self) -> Option<VoterConfig> {
        self.configs.last().map(|(index, voters)| VoterConfig {
            index: *index,
            voters: voters.clone(),
            committed: *index <= self.commit,
        })
    }

    fn voters(&self) -> Option<&[Voter]> {
        self.configs.last().map(|(_, v)| v.as_slice())
    }

    /// Does follower `f` count toward majorities? Without any configuration (a log from before
    /// the first one) everyone does.
    pub(super) fn counts(&self, f: &Progress) -> bool {
        match self.voters() {
            None => true,
            Some(voters) => f.incarnation.is_some_and(|inc| {
                voters
                    .iter()
                    .any(|v| v.id == f.peer.id && v.incarnation == inc)
            }),
        }
    }

    /// A voter's id that has not answered this leader yet: its contact is the promotion time,
    /// so that a fresh leader is not fenced before its first round.
    pub(super) fn may_count(&self, f: &Progress) -> bool {
        f.incarnation.is_none()
            && self
                .voters()
                .is_some_and(|v| v.iter().any(|v| v.id == f.peer.id))
    }

    pub(super) fn voting(&self) -> Voting {
        match self.voters() {
            None => Voting::everyone(self.followers.len()),
            Some(voters) => Voting {
                voters: voters.len(),
                leader_votes: voters
                    .iter()
                    .any(|v| v.id == self.cfg.id && v.incarnation == self.meta.incarnation),
            },
        }
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
    pub fn take_compaction(&mut self) -> Option<(Snapshot, Vec<WalRecord>)> {
        self.pending_compaction.take()
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

    // ---- epochs and roles (admin API) ------------------------------------------------------

    fn set_meta(&mut self, epoch: u64, leader: Option<Peer>) {
        let meta = Meta {
            epoch,
            leader,
            incarnation: self.meta.incarnation,
        };
        self.set_meta_record(meta);
    }

    fn set_meta_record(&mut self, meta: Meta) {
        self.meta = meta;
        self.meta_unsubmitted = true;
        self.records.push(WalRecord::Meta(self.meta.clone()));
    }

    /// Throw the whole state away and start over as a new incarnation: the log holds entries a
    /// newer leader's log contradicts below this node's commit index (an `Async` leader's
    /// unreplicated writes). Keeps the epoch and its leader; the leader then resends everything.
    pub(super) fn discard_state(&mut self, why: &str) {
        let incarnation = self.fresh_incarnation();
        tracing::warn!(
            why,
            dropped_last_log = ?self.log.last(),
            commit = self.commit,
            incarnation,
            "discarding this node's state to resynchronize from the leader; it is a learner until added back as a voter"
        );
        if self.cfg.replication != Replication::Async {
            tracing::error!("a committed entry diverged outside Async mode; this is a bug");
        }
        self.kv = KvStore::default();
        self.log.reset(LogPosition::default());
        self.configs.clear();
        self.commit = 0;
        self.applied = 0;
        self.durable = 0;
        let meta = Meta {
            incarnation,
            ..self.meta.clone()
        };
        self.set_meta_record(meta);
        let empty = Snapshot {
            last: LogPosition::default(),
            items: Vec::new(),
            config: None,
        };
        self.pending_compaction = Some((empty, vec![WalRecord::Meta(self.meta.clone())]));
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
    ///
    /// In the node's current epoch only the serving leader accepts it (a new follower list);
    /// `voters` becomes the first configuration when the log has none.
    pub fn promote(
        &mut self,
        epoch: u64,
        followers: Vec<Peer>,
        voters: Vec<Voter>,
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
            if epoch == self.meta.epoch && self.role != Role::Leader {
                return Err(AdminRefusal::RestartedLeader { epoch });
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
        self.hand_over_until = None;
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
        if self.configs.is_empty() && !voters.is_empty() {
            let mut voters = voters;
            voters.sort();
            voters.dedup();
            tracing::info!(voters = ?voters, "writing the first voter set");
            self.append(Command::Config(voters));
        }
        tracing::info!(epoch, last_log = ?self.log.last(), followers = self.followers.len(), voters = ?self.voters(), "promoted to leader");
        Ok(())
    }

    /// `POST /admin/voters`: make `ids` the voter set, one member added or removed. Returns the
    /// index of the configuration entry to wait for (an existing one when `ids` is already the
    /// voter set in force).
    pub fn change_voters(
        &mut self,
        epoch: u64,
        ids: &[String],
        now: Instant,
    ) -> Result<u64, AdminRefusal> {
        if self.role != Role::Leader || epoch != self.meta.epoch {
            return Err(AdminRefusal::NotLeader { epoch });
        }
        let Some((index, current)) = self.configs.last().cloned() else {
            return Err(AdminRefusal::Invalid(
                "this log has no voter set yet".into(),
            ));
        };
        let mut wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut have: Vec<&str> = current.iter().map(|v| v.id.as_str()).collect();
        have.sort_unstable();
        if wanted == have {
            return Ok(index);
        }
        if self.commit < self.epoch_start {
            return Err(AdminRefusal::Busy(
                "the leader has not committed its first entry of this epoch yet".into(),
            ));
        }
        if index > self.commit {
            return Err(AdminRefusal::Busy(format!(
                "the voter set at index {index} is not committed yet"
            )));
        }
        let added: Vec<&str> = wanted
            .iter()
            .filter(|id| !have.contains(id))
            .copied()
            .collect();
        let removed: Vec<&str> = have
            .iter()
            .filter(|id| !wanted.contains(id))
            .copied()
            .collect();
        if added.len() + removed.len() != 1 {
            return Err(AdminRefusal::Invalid(format!(
                "the voter set changes one member at a time: {have:?} -> {wanted:?} adds {added:?} and removes {removed:?}"
            )));
        }
        let mut voters = current.clone();
        if let Some(id) = added.first() {
            let Some(f) = self.followers.iter().find(|f| f.peer.id == *id) else {
                return Err(AdminRefusal::Invalid(format!(
                    "{id} is not a member this leader replicates to; add it to the follower list first"
                )));
            };
            let Some(incarnation) = f.incarnation else {
                return Err(AdminRefusal::Busy(format!(
                    "{id} has not answered this leader yet"
                )));
            };
            if f.match_index < self.commit {
                return Err(AdminRefusal::Busy(format!(
                    "{id} is a learner still catching up: it holds index {} of {}",
                    f.match_index, self.commit
                )));
            }
            voters.push(Voter {
                id: (*id).to_owned(),
                incarnation,
            });
        }
        if let Some(id) = removed.first() {
            if *id == self.cfg.id {
                return Err(AdminRefusal::Invalid(
                    "the leader cannot remove itself: hand leadership to another voter first"
                        .into(),
                ));
            }
            voters.retain(|v| v.id != *id);
        }
        // The new voter set must have a live majority, or nothing could commit after it.
        let live = voters
            .iter()
            .filter(|v| {
                (v.id == self.cfg.id && v.incarnation == self.meta.incarnation)
                    || self.followers.iter().any(|f| {
                        f.peer.id == v.id
                            && f.incarnation == Some(v.incarnation)
                            && f.contact.is_some_and(|t| {
                                now.saturating_duration_since(t) <= self.cfg.fence_timeout
                            })
                    })
            })
            .count();
        if live < quorum::majority(voters.len()) {
            return Err(AdminRefusal::Busy(format!(
                "only {live} of the {} voters after this change are in contact; a majority is needed",
                voters.len()
            )));
        }
        voters.sort();
        tracing::info!(from = ?have, to = ?wanted, "changing the voter set");
        Ok(self.append(Command::Config(voters)).index)
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
                    incarnation: None,
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
                rc_api::BatchOp::Put { key, value } => 16 + key.len() + value.len(),
                rc_api::BatchOp::Delete { key } => 16 + key.len(),
            })
            .sum(),
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
