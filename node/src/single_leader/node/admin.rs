//! The operator's side of the runtime: fence, promote, follow, voter changes and hand-over,
//! each a replica decision made durable before the answer, and what the operator reads back
//! (status and the health feed's token).

use super::*;
use rc_api::{ModeStatus, SingleLeaderStatus};

impl Node {
    /// A switchover's first step, on the leader of `epoch`: stop taking writes and wait (at most
    /// `wait`) until `target` holds the whole log. `Ok` with the last log position once it
    /// does; writes stay stopped a little longer (the operator fences next), then resume by
    /// themselves. If `target` does not catch up in time, writes resume at once.
    pub async fn hand_over(
        &self,
        epoch: u64,
        target: &str,
        wait: Duration,
    ) -> Result<LogPosition, AdminRefusal> {
        /// How long writes stay stopped after the target caught up, for the operator's fence.
        const FENCE_GRACE: Duration = Duration::from_secs(2);
        let start = Instant::now();
        {
            let mut g = self.lock();
            g.replica
                .begin_hand_over(epoch, target, start + wait + FENCE_GRACE)?;
            self.settle(&mut g);
        }
        loop {
            {
                let g = self.lock();
                if g.replica.epoch() != epoch || g.replica.role() != Role::Leader {
                    return Err(AdminRefusal::NotLeader { epoch });
                }
                if g.replica.holds_whole_log(target) {
                    return Ok(g.replica.last_log());
                }
            }
            if start.elapsed() >= wait {
                let mut g = self.lock();
                g.replica.end_hand_over();
                return Err(AdminRefusal::Busy(format!(
                    "{target} did not catch up within {} ms; writes resumed",
                    wait.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub async fn fence(&self, epoch: u64) -> EpochResponse {
        self.with_replica_durably(|r, _| {
            r.fence(epoch);
            EpochResponse {
                epoch: r.epoch(),
                last_log: r.last_log(),
                incarnation: r.incarnation(),
                config: r.config(),
            }
        })
        .await
    }

    pub async fn promote(
        &self,
        epoch: u64,
        followers: Vec<Peer>,
        voters: Vec<Voter>,
    ) -> Result<(), AdminRefusal> {
        self.with_replica_durably(|r, now| r.promote(epoch, followers, voters, now))
            .await
    }

    /// Change the voter set by one member and wait until the new configuration is committed.
    pub async fn change_voters(
        &self,
        epoch: u64,
        voters: &[String],
    ) -> Result<VoterConfig, VotersFailure> {
        let (index, rx) = {
            let mut g = self.lock();
            let index = g
                .replica
                .change_voters(epoch, voters, Instant::now())
                .map_err(VotersFailure::Refused)?;
            let rx = if g.replica.applied_index() >= index {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                g.writes.insert(index, (epoch, tx));
                Some(rx)
            };
            self.settle(&mut g);
            (index, rx)
        };
        if let Some(rx) = rx {
            match tokio::time::timeout(self.cfg.write_timeout, rx).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => return Err(VotersFailure::Op(e)),
                Ok(Err(_)) => return Err(VotersFailure::Op(OpFailure::OutcomeUnknown)),
                Err(_) => {
                    self.lock().writes.remove(&index);
                    return Err(VotersFailure::Op(OpFailure::Timeout));
                }
            }
        }
        let g = self.lock();
        match g.replica.config() {
            Some(c) if c.index == index => Ok(c),
            _ => Err(VotersFailure::Op(OpFailure::OutcomeUnknown)),
        }
    }

    pub async fn follow(&self, epoch: u64, leader: Peer) -> Result<(), AdminRefusal> {
        self.with_replica_durably(|r, _| r.follow(epoch, leader))
            .await
    }

    pub fn status(&self) -> NodeStatus {
        let now = Instant::now();
        let g = self.lock();
        let r = &g.replica;
        NodeStatus {
            node_id: r.id().to_string(),
            stats: self.stats.snapshot(),
            credentials: self.cfg.security.credentials(),
            detail: ModeStatus::SingleLeader(SingleLeaderStatus {
                incarnation: r.incarnation(),
                config: r.config(),
                role: r.role(),
                epoch: r.epoch(),
                leader: r.leader().map(|l| l.id.clone()),
                last_log: r.last_log(),
                commit_index: r.commit_index(),
                applied_index: r.applied_index(),
                snapshot_index: r.snapshot_base().index,
                followers: r.follower_status(now),
                ms_since_leader_contact: r.ms_since_leader_contact(now),
                self_fenced: r.self_fenced(now),
                replication: r.replication(),
            }),
        }
    }

    /// What the operator's health feed compares (see [`rc_api::Health`]); cheaper than
    /// [`Node::status`], so a waiting feed request can look often.
    pub fn health(&self, leader_loss_ms: u64) -> rc_api::Health {
        let now = Instant::now();
        let g = self.lock();
        let r = &g.replica;
        rc_api::Health::new(
            r.role(),
            r.epoch(),
            r.leader().map(|l| l.id.clone()),
            r.self_fenced(now),
            r.ms_since_leader_contact(now),
            leader_loss_ms,
        )
    }

    pub fn self_fenced(&self) -> bool {
        self.lock().replica.self_fenced(Instant::now())
    }
}
