//! Quorum coordination: writes (on an owner, else forwarded to one), reads from R owners with
//! read repair afterwards, and hinted handoff for owners that are down. Does I/O.

use super::*;
use crate::leaderless::quorum::{self, ReadPlan, ReadTally, WriteRoute, WriteTally};

impl LeaderlessNode {
    /// Coordinate a write: on an owner, write locally and replicate; elsewhere, forward to one.
    pub async fn put(
        &self,
        key: &str,
        value: Option<String>,
        context: Clock,
        w: usize,
    ) -> Result<PutOutcome, LeaderlessError> {
        let layout = self.layout()?;
        let (replicas, need) = match quorum::route_write(&layout, key, &self.cfg.id, w) {
            WriteRoute::Forward(owners) => {
                return self
                    .forward_to_owners(&owners, key, value, &context, w)
                    .await
            }
            WriteRoute::Coordinate { replicas, need } => (replicas, need),
        };
        let (state, seq) = self.write_local(key, value, &context);
        // Replicas write in parallel with our own fsync; we count ourselves once durable.
        let mut acks = self.replicate(replicas, key, state);
        self.wait_durable(seq).await;
        let mut tally = WriteTally::new(need);
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        while !tally.reached() {
            match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Some(ok)) => tally.record(ok),
                Ok(None) | Err(_) => break,
            }
        }
        if !tally.reached() {
            return Err(LeaderlessError::WriteQuorum {
                acks: tally.acks,
                need,
            });
        }
        Ok(PutOutcome {
            acks: tally.acks,
            w,
        })
    }

    /// Forward to the owners in ring order; one that refuses the connection never saw the
    /// write, so the next is tried (the failure detector may not have noticed it yet).
    async fn forward_to_owners(
        &self,
        owners: &[Member],
        key: &str,
        value: Option<String>,
        context: &Clock,
        w: usize,
    ) -> Result<PutOutcome, LeaderlessError> {
        let mut last = LeaderlessError::NoOwner;
        for owner in owners {
            if !self.is_alive(&owner.id) {
                continue;
            }
            match self
                .forward_put(owner, key, value.clone(), context, w)
                .await
            {
                Err(e) if !self.is_alive(&owner.id) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// The new state of `key` on this node, with a fresh dot, logged; returns it and the WAL
    /// sequence number to wait on for durability. The state is built once: the store, the log
    /// and every replica's outbox share it.
    fn write_local(
        &self,
        key: &str,
        value: Option<String>,
        context: &Clock,
    ) -> (Arc<KeyState>, u64) {
        let mut g = self.lock();
        let ts = g.hlc.now(now_ms());
        let empty = KeyState::default();
        let current = g.store.get(key).map_or(&empty, |s| &**s);
        let new = Arc::new(current.put(
            self.cfg.conflict,
            &self.actor,
            g.dots_issued,
            context,
            value,
            ts,
        ));
        g.dots_issued = new.clock.get(&self.actor).copied().unwrap_or(g.dots_issued);
        g.store.insert(key.to_string(), Arc::clone(&new));
        let seq = self.persist(
            &mut g,
            vec![WalRecord::KeyState {
                key: key.to_string(),
                state: Arc::clone(&new),
            }],
        );
        (new, seq)
    }

    /// Send `state` to every replica through its outbox; each answers `true` once it holds the
    /// state durably. A replica that is down or fails gets a hint instead (and answers `false`).
    fn replicate(
        &self,
        replicas: Vec<Member>,
        key: &str,
        state: Arc<KeyState>,
    ) -> mpsc::Receiver<bool> {
        let (tx, rx) = mpsc::channel(replicas.len().max(1));
        for member in replicas {
            self.queue_for(&member, key.to_string(), Arc::clone(&state), tx.clone());
        }
        rx
    }

    pub(super) async fn forward_put(
        &self,
        owner: &Member,
        key: &str,
        value: Option<String>,
        context: &Clock,
        w: usize,
    ) -> Result<PutOutcome, LeaderlessError> {
        let body = ForwardedPut {
            key: key.to_string(),
            value,
            context: context.clone(),
            w,
        };
        let resp = self
            .internal_post(&owner.address, "/internal/v1/put", &body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    self.set_alive(&owner.id, false);
                }
                LeaderlessError::Forward(owner.id.clone(), e.to_string())
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| LeaderlessError::Forward(owner.id.clone(), e.to_string()))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .map_err(|e| LeaderlessError::Forward(owner.id.clone(), e.to_string()));
        }
        let refusal = serde_json::from_str::<rc_api::ErrorBody>(&text).ok();
        if refusal.is_some_and(|r| r.error.code == rc_api::ErrorCode::WriteQuorumFailed) {
            return Err(LeaderlessError::WriteQuorum { acks: 0, need: w });
        }
        Err(LeaderlessError::Forward(owner.id.clone(), text))
    }

    /// Send whole key states to `member` (it merges them durably). `true` on success.
    pub(crate) async fn send_states(
        &self,
        member: &Member,
        items: &[(String, Arc<KeyState>)],
    ) -> bool {
        let r = self
            .internal_post(&member.address, "/internal/v1/replicate", &items)
            .send()
            .await;
        let ok = r.is_ok_and(|r| r.status().is_success());
        if !ok {
            self.set_alive(&member.id, false);
        }
        ok
    }

    /// `member`'s state of `key` over the internal HTTP API (empty when absent); `None` if it
    /// did not answer or is restoring.
    pub(crate) async fn read_over_http(&self, member: &Member, key: &str) -> Option<KeyState> {
        let state: Option<KeyState> = self
            .internal_call(&member.address, "/internal/v1/read", &key)
            .await?;
        Some(state.unwrap_or_default())
    }

    /// Keep `items` for `target` until it is back (hinted handoff), durably: one log append
    /// for the lot. Beyond the hint limit, anti-entropy repairs them instead.
    pub(super) async fn add_hints(&self, target: &str, items: Vec<(String, Arc<KeyState>)>) {
        let seq = {
            let mut g = self.lock();
            let room = self.cfg.hint_limit.saturating_sub(g.hints.len());
            if room < items.len() {
                tracing::warn!(
                    target,
                    dropped = items.len() - room,
                    "hint store full; anti-entropy will repair these writes instead"
                );
            }
            let mut records = Vec::new();
            for (key, state) in items.into_iter().take(room) {
                let id = g.next_hint;
                g.next_hint += 1;
                let hint = Hint {
                    id,
                    target: target.to_string(),
                    key,
                    state,
                };
                g.hints.insert(id, hint.clone());
                records.push(WalRecord::Hint(hint));
            }
            if records.is_empty() {
                return;
            }
            self.persist(&mut g, records)
        };
        self.wait_durable(seq).await;
    }

    pub(crate) fn hint_done(&self, ids: &[u64]) {
        let mut g = self.lock();
        let records: Vec<WalRecord> = ids
            .iter()
            .filter(|id| g.hints.remove(id).is_some())
            .map(|id| WalRecord::HintDone { id: *id })
            .collect();
        if !records.is_empty() {
            self.persist(&mut g, records);
        }
    }

    /// Quorum read: ask R owners, merge their answers, repair stale owners afterwards.
    pub async fn get(&self, key: &str, r: usize) -> Result<KeyState, LeaderlessError> {
        let layout = self.layout()?;
        let alive: Vec<Member> = layout
            .owners(key)
            .into_iter()
            .filter(|m| self.is_alive(&m.id))
            .cloned()
            .collect();
        let ReadPlan { ask, mut spares } = quorum::plan_read(alive, &self.cfg.id, r)
            .map_err(|got| LeaderlessError::ReadQuorum { got, need: r })?;
        let (tx, mut rx) = mpsc::channel(r + spares.len());
        let fetch = |m: Member| {
            let (tx, key) = (tx.clone(), key.to_string());
            let node = self.me.upgrade();
            tokio::spawn(async move {
                if let Some(node) = node {
                    let got = node.fetch_state(&m, &key).await;
                    let _ = tx.send((m, got)).await;
                }
            });
        };
        ask.into_iter().for_each(&fetch);
        let mut answers: Vec<(Member, KeyState)> = Vec::new();
        let mut tally = ReadTally::new(r);
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        while tally.waiting() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((m, Some(s)))) => {
                    answers.push((m, s));
                    tally.record_answer();
                }
                Ok(Some((_, None))) => {
                    let spare = spares.pop();
                    tally.record_failure(spare.is_some());
                    spare.into_iter().for_each(&fetch);
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(tx);
        if !tally.reached() {
            return Err(LeaderlessError::ReadQuorum {
                got: tally.answered,
                need: r,
            });
        }
        let merged = answers.iter().fold(KeyState::default(), |acc, (_, s)| {
            acc.merge(s, self.cfg.conflict)
        });
        if let Some(node) = self.me.upgrade() {
            let key = key.to_string();
            tokio::spawn(async move { node.read_repair(key, answers, rx).await });
        }
        Ok(merged)
    }

    /// After answering: wait for the slower owners too, and send the merged state to any owner
    /// whose state was behind.
    pub(super) async fn read_repair(
        &self,
        key: String,
        mut answers: Vec<(Member, KeyState)>,
        mut rx: mpsc::Receiver<(Member, Option<KeyState>)>,
    ) {
        while let Ok(Some((m, s))) = tokio::time::timeout(self.cfg.request_timeout, rx.recv()).await
        {
            if let Some(s) = s {
                answers.push((m, s));
            }
        }
        let merged = Arc::new(answers.iter().fold(KeyState::default(), |acc, (_, s)| {
            acc.merge(s, self.cfg.conflict)
        }));
        for (m, s) in answers {
            if s != *merged {
                if m.id == self.cfg.id {
                    self.apply_local(vec![(key.clone(), Arc::clone(&merged))])
                        .await;
                } else {
                    self.send_states(&m, &[(key.clone(), Arc::clone(&merged))])
                        .await;
                }
                self.lock().keys_repaired += 1;
            }
        }
    }

    pub(super) async fn fetch_state(&self, m: &Member, key: &str) -> Option<KeyState> {
        if m.id == self.cfg.id {
            if self.is_restoring() {
                return None;
            }
            return Some(self.local_state(key).unwrap_or_default());
        }
        self.read_from(m, key).await
    }
}
