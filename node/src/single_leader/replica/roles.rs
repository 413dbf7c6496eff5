//! Epochs and roles, the operator's levers (admin API): fence a node at an epoch, promote it to
//! leader, make it follow a leader. The epoch only moves up and a node binds to at most one
//! leader per epoch; both are recorded durably before any answer that depends on them.

use super::*;

impl Replica {
    pub(super) fn set_meta(&mut self, epoch: u64, leader: Option<Peer>) {
        let meta = Meta {
            epoch,
            leader,
            incarnation: self.meta.incarnation,
        };
        self.set_meta_record(meta);
    }

    pub(super) fn set_meta_record(&mut self, meta: Meta) {
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
        self.snapshot_in_flight = None;
        self.snapshot_started();
        self.pending_compaction = Some(Compaction {
            snapshot: Box::new(empty),
            tail: vec![WalRecord::Meta(self.meta.clone())],
            background: false,
        });
    }

    pub(super) fn step_down(&mut self, reason: &str) {
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

    pub(super) fn set_followers(&mut self, peers: Vec<Peer>) {
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

    pub(super) fn check_epoch(&self, epoch: u64) -> Result<(), AdminRefusal> {
        if epoch < self.meta.epoch {
            return Err(AdminRefusal::StaleEpoch {
                requested: epoch,
                current: self.meta.epoch,
            });
        }
        Ok(())
    }

    /// Accept `leader` for `epoch` (>= ours): the first leader named for an epoch wins.
    pub(super) fn bind_leader(
        &mut self,
        epoch: u64,
        leader: Peer,
        why: &str,
    ) -> Result<(), AdminRefusal> {
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
}
