//! Leader side of the replica: proposing writes, counting commits, read-index rounds,
//! self-fencing, and choosing what each follower needs next. Pure.

use super::*;

impl Replica {
    // ---- leader: writes, commit, reads -----------------------------------------------------

    pub(super) fn fenced(&self, now: Instant) -> bool {
        let contacts: Vec<Option<Instant>> = self
            .followers
            .iter()
            .filter(|f| self.counts(f) || self.may_count(f))
            .map(|f| f.contact)
            .collect();
        match quorum::quorum_contact(now, self.voting(), &contacts) {
            Some(t) => now.saturating_duration_since(t) > self.cfg.fence_timeout,
            None => true,
        }
    }

    pub fn self_fenced(&self, now: Instant) -> bool {
        self.role == Role::Leader && self.fenced(now)
    }

    pub(super) fn append(&mut self, command: Command) -> Entry {
        let entry = Entry {
            index: self.log.last().index + 1,
            epoch: self.meta.epoch,
            command,
        };
        self.records.push(WalRecord::Entry(entry.clone()));
        self.log_append(entry.clone());
        entry
    }

    /// Append a client write. The caller waits for the entry's index to be applied.
    pub fn propose(&mut self, command: Command, now: Instant) -> Result<LogPosition, WriteRefusal> {
        if self.role != Role::Leader {
            return Err(WriteRefusal::not_leader(&self.meta, &self.cfg.id));
        }
        if self.fenced(now) {
            return Err(WriteRefusal::SelfFenced);
        }
        if self.hand_over_until.is_some_and(|until| now < until) {
            return Err(WriteRefusal::HandingOver);
        }
        Ok(self.append(command).position())
    }

    /// A switchover to `target`: as leader of `epoch`, take no new writes until `until` (the
    /// operator fences every member before then; if it does not, writes resume by themselves).
    /// Entries already proposed keep replicating, so `target` can hold the whole log.
    pub fn begin_hand_over(
        &mut self,
        epoch: u64,
        target: &str,
        until: Instant,
    ) -> Result<(), AdminRefusal> {
        if self.role != Role::Leader || self.meta.epoch != epoch {
            return Err(AdminRefusal::NotLeader { epoch });
        }
        if !self.followers.iter().any(|f| f.peer.id == target) {
            return Err(AdminRefusal::Invalid(format!(
                "{target} is not a follower of this leader"
            )));
        }
        self.hand_over_until = Some(until);
        Ok(())
    }

    /// Takes writes again (a hand-over whose target did not catch up in time).
    pub fn end_hand_over(&mut self) {
        self.hand_over_until = None;
    }

    /// Whether follower `target` holds every entry of this leader's log.
    pub fn holds_whole_log(&self, target: &str) -> bool {
        let last = self.log.last().index;
        self.followers
            .iter()
            .any(|f| f.peer.id == target && f.match_index >= last)
    }

    pub(super) fn advance_commit(&mut self, now: Instant) {
        if self.role != Role::Leader {
            return;
        }
        let voters: Vec<&Progress> = self.followers.iter().filter(|f| self.counts(f)).collect();
        let matches: Vec<u64> = voters.iter().map(|f| f.match_index).collect();
        let in_sync: Vec<bool> = voters
            .iter()
            .map(|f| {
                f.contact
                    .is_some_and(|t| now.saturating_duration_since(t) <= self.cfg.fence_timeout)
            })
            .collect();
        let candidate = quorum::commit_candidate(
            self.cfg.replication,
            self.voting(),
            self.durable,
            &matches,
            &in_sync,
        );
        // Raft's rule: only an entry of our own epoch is committed by counting replicas.
        if candidate > self.commit && self.log.epoch_at(candidate) == Some(self.meta.epoch) {
            self.commit = candidate;
        }
    }

    /// Apply committed entries; returns (index, epoch, outcome) of each, for waiting clients.
    pub fn apply_committed(&mut self) -> Vec<(u64, u64, Applied)> {
        let upto = self.commit.min(self.log.last().index);
        let mut out = Vec::new();
        while self.applied < upto {
            let index = self.applied + 1;
            let Some(entry) = self.log.get(index).cloned() else {
                break;
            };
            let applied = self.kv.apply(index, &entry.command);
            out.push((index, entry.epoch, applied));
            self.applied = index;
            self.writes_since_snapshot += entry.command.writes();
        }
        self.maybe_compact();
        out
    }

    pub(super) fn maybe_compact(&mut self) {
        if self.snapshot_in_flight.is_some() || self.writes_since_snapshot < self.snapshot_interval
        {
            return;
        }
        let Some(epoch) = self.log.epoch_at(self.applied) else {
            return;
        };
        let last = LogPosition {
            epoch,
            index: self.applied,
        };
        // The configuration in force at `last` goes into the snapshot; older ones are gone.
        let config = self
            .configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= last.index)
            .cloned();
        if let Some((at, _)) = &config {
            let at = *at;
            self.configs.retain(|(i, _)| *i >= at);
        }
        let snapshot = Box::new(self.kv.snapshot(last, config));
        let mut tail = vec![WalRecord::Meta(self.meta.clone())];
        tail.extend(
            self.log
                .entries_after(last.index)
                .map(|e| WalRecord::Entry((**e).clone())),
        );
        self.snapshot_in_flight = Some(last);
        self.snapshot_started();
        self.pending_compaction = Some(Compaction {
            snapshot,
            tail,
            background: true,
        });
    }

    /// Start a read-index confirmation round. Returns (read index, round) once this leader has
    /// committed its no-op; the read may be served when `round_confirmed(round)` and the state
    /// machine has applied the read index.
    pub fn begin_read(&mut self) -> Result<(u64, u64), WriteRefusal> {
        if self.role != Role::Leader {
            return Err(WriteRefusal::not_leader(&self.meta, &self.cfg.id));
        }
        if self.commit < self.epoch_start {
            // Not yet sure what is committed: the no-op of this epoch has not committed.
            return Err(WriteRefusal::SelfFenced);
        }
        self.round += 1;
        Ok((self.commit, self.round))
    }

    /// True when a majority (this leader included) accepted a frame carrying `round` or later,
    /// i.e. this node was still the leader after the read arrived.
    pub fn round_confirmed(&self, round: u64) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let voting = self.voting();
        let acked = self
            .followers
            .iter()
            .filter(|f| f.acked_round >= round && self.counts(f))
            .count()
            + usize::from(voting.leader_votes);
        acked >= quorum::majority(voting.voters)
    }

    // ---- leader: what to send, and the answers ---------------------------------------------

    /// The frame follower `i` needs next, or `None` when it is up to date and no heartbeat is
    /// due (`force` asks for a heartbeat anyway).
    pub fn outgoing(&mut self, i: usize, force: bool) -> Option<Outgoing> {
        if self.role != Role::Leader || !self.meta_durable() {
            return None;
        }
        let last = self.log.last().index;
        let (commit, round, max_entries, max_bytes) = (
            self.commit,
            self.round,
            self.cfg.max_batch_entries,
            self.cfg.max_batch_bytes,
        );
        let base = self.log.base().index;
        let f = self.followers.get(i)?;
        let has_entries = f.next_index <= last;
        if !(force || has_entries || f.sent_commit < commit || f.sent_round < round) {
            return None;
        }
        if f.next_index <= base {
            return Some(Outgoing::Snapshot { round });
        }
        let prev_index = f.next_index - 1;
        let prev_epoch = self.log.epoch_at(prev_index)?;
        let mut entries = self.log.slice(f.next_index, max_entries);
        let mut bytes = 0;
        if let Some(cut) = entries.iter().position(|e| {
            bytes += command_size(&e.command);
            bytes > max_bytes
        }) {
            entries.truncate(cut.max(1));
        }
        let f = self.followers.get_mut(i)?;
        f.sent_commit = commit;
        f.sent_round = round;
        Some(Outgoing::Append {
            prev: LogPosition {
                epoch: prev_epoch,
                index: prev_index,
            },
            entries,
            commit,
            round,
        })
    }

    /// Follower `peer_id` answered a frame of `epoch` sent at `sent_at`. An answer to a frame of
    /// another epoch (a sender of an earlier leadership of this node) is dropped.
    pub fn on_reply(
        &mut self,
        peer_id: &str,
        epoch: u64,
        reply: PeerReply,
        sent_at: Instant,
        now: Instant,
    ) {
        if self.role != Role::Leader || epoch != self.meta.epoch {
            return;
        }
        let Some(f) = self.followers.iter_mut().find(|f| f.peer.id == peer_id) else {
            return;
        };
        // A follower with a new incarnation lost what it acknowledged before: start over.
        if let PeerReply::Ok { incarnation, .. } | PeerReply::Mismatch { incarnation, .. } = &reply
        {
            if f.incarnation.is_some_and(|i| i != *incarnation) {
                tracing::warn!(
                    follower = peer_id,
                    incarnation,
                    "follower answers as a new incarnation (its data was lost): counting it as a learner"
                );
                f.match_index = 0;
                f.acked_round = 0;
                f.contact = None;
            }
            f.incarnation = Some(*incarnation);
        }
        match reply {
            PeerReply::Ok {
                match_index,
                round,
                load,
                ..
            } => {
                f.match_index = f.match_index.max(match_index);
                f.next_index = f.match_index + 1;
                f.contact = Some(f.contact.map_or(sent_at, |c| c.max(sent_at)));
                f.acked_round = f.acked_round.max(round);
                f.load = load;
                self.advance_commit(now);
            }
            PeerReply::Mismatch { hint, round, .. } => {
                f.next_index = (hint + 1).min(f.next_index.saturating_sub(1)).max(1);
                f.contact = Some(f.contact.map_or(sent_at, |c| c.max(sent_at)));
                f.acked_round = f.acked_round.max(round);
                f.sent_commit = 0;
            }
            PeerReply::Rejected { epoch, reason } => {
                if epoch > self.meta.epoch {
                    tracing::warn!(
                        follower = peer_id,
                        epoch,
                        reason,
                        "a follower is in a newer epoch"
                    );
                    self.step_down("a follower reported a newer epoch");
                    self.set_meta(epoch, None);
                } else {
                    tracing::error!(follower = peer_id, reason, "follower refused this leader");
                }
            }
        }
    }

    /// A connection to a follower broke: resend what it may have missed.
    pub fn on_send_failed(&mut self, peer_id: &str) {
        if let Some(f) = self.followers.iter_mut().find(|f| f.peer.id == peer_id) {
            f.sent_commit = 0;
            f.sent_round = 0;
        }
    }

    pub fn snapshot_base(&self) -> LogPosition {
        self.log.base()
    }
}

/// The seed's load balancing by the leader: the follower that should serve a stale read the
/// leader was asked for, if any. A candidate is at most `max_lag` entries behind `last_index`,
/// answered recently (`fresh` of its last contact), and carries clearly less load (in-flight
/// client requests) than the leader's `own_load`; the least loaded one wins.
pub fn least_loaded_follower(
    followers: &[Progress],
    last_index: u64,
    max_lag: u64,
    own_load: u32,
    fresh: impl Fn(Instant) -> bool,
) -> Option<&Progress> {
    followers
        .iter()
        .filter(|f| last_index.saturating_sub(f.match_index) <= max_lag)
        .filter(|f| f.contact.is_some_and(&fresh))
        .filter(|f| f.load + 2 < own_load)
        .min_by_key(|f| f.load)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(id: &str, match_index: u64, load: u32, contact: Option<Instant>) -> Progress {
        Progress {
            peer: Peer {
                id: id.into(),
                address: format!("{id}:7400"),
            },
            match_index,
            next_index: match_index + 1,
            contact,
            acked_round: 0,
            incarnation: None,
            load,
            sent_commit: 0,
            sent_round: 0,
        }
    }

    #[test]
    fn stale_reads_go_to_the_least_loaded_caught_up_follower_only_when_the_leader_is_busier() {
        let now = Some(Instant::now());
        let fs = vec![
            follower("busy", 100, 9, now),
            follower("idle", 100, 1, now),
            follower("behind", 10, 0, now),
            follower("silent", 100, 0, None),
        ];
        let pick = |own: u32| {
            least_loaded_follower(&fs, 100, 20, own, |_| true).map(|f| f.peer.id.as_str())
        };
        assert_eq!(
            pick(20),
            Some("idle"),
            "lagging and silent followers are skipped"
        );
        assert_eq!(
            pick(3),
            None,
            "a follower must be clearly less loaded than the leader"
        );
        assert_eq!(pick(4), Some("idle"));
        let stale_contact = least_loaded_follower(&fs, 100, 20, 20, |_| false);
        assert!(
            stale_contact.is_none(),
            "followers not heard from recently are skipped"
        );
    }
}
