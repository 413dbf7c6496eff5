//! Follower side of the replica: accepting a leader's frames (epoch and leader checks, the
//! (prevIndex, prevEpoch) check, truncation of a divergent suffix) and snapshots. Pure.

use super::*;
use crate::single_leader::kv::ReceivedSnapshot;
use crate::single_leader::log::PrevCheck;

/// What every frame from a leader carries, and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub epoch: u64,
    pub leader: &'a Peer,
    /// The leader's read round, echoed in the reply.
    pub round: u64,
    /// This node's requests in flight, reported to the leader.
    pub load: u32,
    pub now: Instant,
}

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
    pub fn on_append(
        &mut self,
        frame: Frame<'_>,
        prev: LogPosition,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) -> PeerReply {
        if let Err(reply) = self.accept_leader(frame.epoch, frame.leader, frame.now) {
            return reply;
        }
        let (round, load) = (frame.round, frame.load);
        let incarnation = self.meta.incarnation;
        if self.contradicts_committed(prev, &entries) {
            // Only an `Async` leader commits what a majority does not hold: its unreplicated
            // writes are the documented loss. Start over from the leader's log.
            self.discard_state("the leader's log contradicts entries this node committed");
            return PeerReply::Mismatch {
                hint: 0,
                round,
                incarnation: self.meta.incarnation,
            };
        }
        match self.log.check_prev(prev) {
            PrevCheck::Match => {}
            PrevCheck::Missing { last_index } => {
                return PeerReply::Mismatch {
                    hint: last_index,
                    round,
                    incarnation,
                }
            }
            PrevCheck::Conflict { .. } => {
                // Below our commit index it would have been caught above: resend after it.
                return PeerReply::Mismatch {
                    hint: self.commit.max(self.log.base().index),
                    round,
                    incarnation,
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
                    let dropped = self.log_truncate(e.index);
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
            self.log_append(e);
        }
        self.commit = self.commit.max(leader_commit.min(new_match));
        PeerReply::Ok {
            match_index: new_match,
            round,
            load,
            incarnation,
        }
    }

    /// Does a frame (prev, entries) from the leader contradict an entry this node counts as
    /// committed (or compacted into its snapshot)? Epochs never decrease along a log, so an
    /// entry of a newer epoch at or below our base also contradicts it.
    fn contradicts_committed(&self, prev: LogPosition, entries: &[Entry]) -> bool {
        let base = self.log.base();
        let committed = self.commit.max(base.index);
        let differs = |p: LogPosition| {
            if p.index == 0 || p.index > committed {
                return false;
            }
            if p.index <= base.index {
                return (p.index == base.index && p.epoch != base.epoch) || p.epoch > base.epoch;
            }
            self.log.epoch_at(p.index).is_some_and(|e| e != p.epoch)
        };
        differs(prev) || entries.iter().any(|e| differs(e.position()))
    }

    /// A snapshot frame: replace state if it is ahead of what we have.
    pub fn on_snapshot(&mut self, frame: Frame<'_>, snap: ReceivedSnapshot) -> PeerReply {
        if let Err(reply) = self.accept_leader(frame.epoch, frame.leader, frame.now) {
            return reply;
        }
        let (round, load) = (frame.round, frame.load);
        let last = snap.last;
        if self.contradicts_committed(last, &[]) {
            self.discard_state("the leader's snapshot contradicts entries this node committed");
        }
        if last.index > self.commit {
            tracing::info!(
                snapshot_index = last.index,
                "installing a snapshot from the leader"
            );
            self.kv = snap.kv;
            self.log.reset(last);
            self.configs = snap.config.into_iter().collect();
            self.commit = last.index;
            self.applied = last.index;
            self.durable = self.durable.min(last.index);
            let tail = vec![WalRecord::Meta(self.meta.clone())];
            self.snapshot_in_flight = None;
            self.snapshot_started();
            self.pending_compaction = Some(Compaction {
                snapshot: Box::new(snap.file),
                tail,
                background: false,
            });
        }
        PeerReply::Ok {
            match_index: last.index.max(self.commit.min(self.log.last().index)),
            round,
            load,
            incarnation: self.meta.incarnation,
        }
    }
}
