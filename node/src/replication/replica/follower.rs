//! Follower side of the replica: accepting a leader's frames (epoch and leader checks, the
//! (prevIndex, prevEpoch) check, truncation of a divergent suffix) and snapshots. Pure.

use super::*;
use crate::replication::log::PrevCheck;

impl Replica {
    // ---- follower: incoming frames ---------------------------------------------------------

    /// Check a frame's epoch and leader; adopt a newer epoch. Errors become `Rejected`.
    pub(super) fn accept_leader(
        &mut self,
        epoch: u64,
        leader: &Peer,
        now: Instant,
    ) -> Result<(), PeerReply> {
        if epoch < self.meta.epoch {
            return Err(PeerReply::Rejected {
                epoch: self.meta.epoch,
                reason: format!("epoch {epoch} is older than {}", self.meta.epoch),
            });
        }
        if leader.id == self.cfg.id {
            return Err(PeerReply::Rejected {
                epoch: self.meta.epoch,
                reason: "frame from myself".into(),
            });
        }
        self.bind_leader(
            epoch,
            leader.clone(),
            "replication stream from a leader of this or a newer epoch",
        )
        .map_err(|e| PeerReply::Rejected {
            epoch: self.meta.epoch,
            reason: e.to_string(),
        })?;
        self.leader_contact = Some(now);
        Ok(())
    }

    /// An append frame from `leader`. The runtime sends the reply once every record pushed so
    /// far is durable.
    #[allow(clippy::too_many_arguments)]
    pub fn on_append(
        &mut self,
        epoch: u64,
        leader: &Peer,
        prev: LogPosition,
        entries: Vec<Entry>,
        leader_commit: u64,
        round: u64,
        load: u32,
        now: Instant,
    ) -> PeerReply {
        if let Err(reply) = self.accept_leader(epoch, leader, now) {
            return reply;
        }
        match self.log.check_prev(prev) {
            PrevCheck::Match => {}
            PrevCheck::Missing { last_index } => {
                return PeerReply::Mismatch {
                    hint: last_index,
                    round,
                }
            }
            PrevCheck::Conflict { .. } => {
                // Our committed prefix agrees with every leader's log; resend after it.
                return PeerReply::Mismatch {
                    hint: self.commit.max(self.log.base().index),
                    round,
                };
            }
        }
        let new_match = prev.index + entries.len() as u64;
        for e in entries {
            if e.index <= self.log.base().index {
                continue;
            }
            match self.log.epoch_at(e.index) {
                Some(ep) if ep == e.epoch => continue,
                Some(ep) => {
                    if e.index <= self.commit {
                        tracing::error!(
                            index = e.index,
                            "leader sent a conflicting committed entry; refusing"
                        );
                        return PeerReply::Rejected {
                            epoch: self.meta.epoch,
                            reason: "conflict below the commit index".into(),
                        };
                    }
                    let dropped = self.log.truncate_from(e.index);
                    tracing::warn!(
                        from = e.index,
                        dropped,
                        our_epoch = ep,
                        leader_epoch = e.epoch,
                        "truncating a divergent log suffix the new leader does not have"
                    );
                    self.records.push(WalRecord::Truncate { from: e.index });
                    self.durable = self.durable.min(e.index - 1);
                }
                None => {}
            }
            self.records.push(WalRecord::Entry(e.clone()));
            self.log.append(e);
        }
        self.commit = self.commit.max(leader_commit.min(new_match));
        PeerReply::Ok {
            match_index: new_match,
            round,
            load,
        }
    }

    /// A snapshot frame: replace state if it is ahead of what we have.
    pub fn on_snapshot(
        &mut self,
        epoch: u64,
        leader: &Peer,
        snap: Snapshot,
        round: u64,
        load: u32,
        now: Instant,
    ) -> PeerReply {
        if let Err(reply) = self.accept_leader(epoch, leader, now) {
            return reply;
        }
        let last = snap.last;
        if last.index > self.commit {
            tracing::info!(
                snapshot_index = last.index,
                "installing a snapshot from the leader"
            );
            self.kv = KvStore::from_snapshot(&snap);
            self.log.reset(last);
            self.commit = last.index;
            self.applied = last.index;
            self.durable = self.durable.min(last.index);
            let tail = vec![WalRecord::Meta(self.meta.clone())];
            self.pending_compaction = Some((snap, tail));
        }
        PeerReply::Ok {
            match_index: last.index.max(self.commit.min(self.log.last().index)),
            round,
            load,
        }
    }
}
