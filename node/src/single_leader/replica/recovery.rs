//! Recovery: a replica rebuilt from its snapshot and the log's records, replayed one at a
//! time as the log is read. Pure.

use super::*;

impl Replica {
    /// Rebuild from a snapshot and the records after it, all at once (tests; a node replays
    /// record by record).
    #[cfg(test)]
    pub fn recover(
        cfg: ReplicaConfig,
        snapshot: Option<Snapshot>,
        records: Vec<WalRecord>,
    ) -> Replica {
        let mut r = Replica::recovering(cfg, snapshot);
        records.into_iter().for_each(|rec| r.replay(rec));
        r.finish_recovery()
    }

    /// The state of `snapshot`, before the log's records are replayed onto it with
    /// [`Replica::replay`] (one at a time, as the log is read) and [`Replica::finish_recovery`].
    /// Starts as a follower: a restarted leader never resumes leading by itself (it may lack
    /// entries that a majority committed without its fsync).
    pub fn recovering(cfg: ReplicaConfig, snapshot: Option<Snapshot>) -> Replica {
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
        Replica {
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
            snapshot_in_flight: None,
            writes_since_snapshot: 0,
            snapshot_interval: 0,
            configs,
            meta_unsubmitted: false,
            meta_in_flight: None,
            rng,
            hand_over_until: None,
        }
    }

    /// Replay one record of the log, in order.
    pub fn replay(&mut self, rec: WalRecord) {
        match rec {
            WalRecord::Meta(m) => self.meta = m,
            WalRecord::Truncate { from } => {
                self.log_truncate(from);
            }
            WalRecord::Entry(e) => self.replay_entry(e),
            // Leaderless records never appear in a single-leader data directory.
            WalRecord::KeyState { .. }
            | WalRecord::Ring(_)
            | WalRecord::Hint(_)
            | WalRecord::HintDone { .. }
            | WalRecord::KeyRemoved { .. } => {}
        }
    }

    /// Every record replayed: give a data directory without an identity a new incarnation.
    pub fn finish_recovery(mut self) -> Replica {
        let r = &mut self;
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
        r.snapshot_started();
        self
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
}
