//! Quorum coordination: writes (on an owner, else forwarded to one), reads from R owners with
//! read repair afterwards, and hinted handoff for owners that are down. Does I/O.

use super::*;

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
        let owners: Vec<Member> = layout.owners(key).into_iter().cloned().collect();
        if !owners.iter().any(|m| m.id == self.cfg.id) {
            // Owners in ring order; one that refuses the connection never saw the write, so
            // the next is tried (the failure detector may not have noticed it yet).
            let mut last = LeaderlessError::NoOwner;
            for owner in &owners {
                if !self.is_alive(&owner.id) {
                    continue;
                }
                match self
                    .forward_put(owner, key, value.clone(), &context, w)
                    .await
                {
                    Err(e) if !self.is_alive(&owner.id) => last = e,
                    other => return other,
                }
            }
            return Err(last);
        }
        let (state, seq) = {
            let mut g = self.lock();
            let ts = g.hlc.now(now_ms());
            let current = g.store.get(key).cloned().unwrap_or_default();
            let new = current.put(
                self.cfg.conflict,
                &self.actor,
                g.dots_issued,
                &context,
                value,
                ts,
            );
            g.dots_issued = new.clock.get(&self.actor).copied().unwrap_or(g.dots_issued);
            g.store.insert(key.to_string(), new.clone());
            let seq = self.persist(
                &mut g,
                vec![WalRecord::KeyState {
                    key: key.to_string(),
                    state: new.clone(),
                }],
            );
            (new, seq)
        };
        // Replicas write in parallel with our own fsync; we count ourselves once durable.
        // While a range moves, a pending owner (joining, or taking over from a leaving member)
        // must hold the write too: W + pending acknowledgements (Cassandra's rule), so a
        // member that becomes an owner holds every write acknowledged before.
        let all_targets = layout.write_targets(key);
        let pending = all_targets
            .iter()
            .filter(|m| !owners.iter().any(|o| o.id == m.id))
            .count();
        let need = w + pending;
        let targets: Vec<Member> = all_targets
            .into_iter()
            .filter(|m| m.id != self.cfg.id)
            .cloned()
            .collect();
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for member in targets {
            let (tx, key, state) = (tx.clone(), key.to_string(), state.clone());
            let Some(node) = self.me.upgrade() else { break };
            tokio::spawn(async move {
                let ok = node.is_alive(&member.id)
                    && node
                        .send_states(&member, vec![(key.clone(), state.clone())])
                        .await;
                if !ok {
                    node.add_hint(&member.id, key, state).await;
                }
                let _ = tx.send(ok).await;
            });
        }
        drop(tx);
        self.wait_durable(seq).await;
        let mut acks = 1;
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        while acks < need {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(true)) => acks += 1,
                Ok(Some(false)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if acks < need {
            return Err(LeaderlessError::WriteQuorum { acks, need });
        }
        Ok(PutOutcome { acks, w })
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
            .http
            .post(format!("http://{}/internal/v1/put", owner.address))
            .bearer_auth(&self.cfg.token)
            .json(&body)
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
        let err: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if err["error"]["code"] == "write_quorum_failed" {
            return Err(LeaderlessError::WriteQuorum { acks: 0, need: w });
        }
        Err(LeaderlessError::Forward(owner.id.clone(), text))
    }

    /// Send whole key states to `member` (it merges them durably). `true` on success.
    pub async fn send_states(&self, member: &Member, items: Vec<(String, KeyState)>) -> bool {
        let r = self
            .http
            .post(format!("http://{}/internal/v1/replicate", member.address))
            .bearer_auth(&self.cfg.token)
            .json(&items)
            .send()
            .await;
        let ok = r.is_ok_and(|r| r.status().is_success());
        if !ok {
            self.set_alive(&member.id, false);
        }
        ok
    }

    pub(super) async fn add_hint(&self, target: &str, key: String, state: KeyState) {
        let seq = {
            let mut g = self.lock();
            if g.hints.len() >= self.cfg.hint_limit {
                tracing::warn!(
                    target,
                    "hint store full; anti-entropy will repair this write instead"
                );
                return;
            }
            let id = g.next_hint;
            g.next_hint += 1;
            let hint = Hint {
                id,
                target: target.to_string(),
                key,
                state,
            };
            g.hints.insert(id, hint.clone());
            self.persist(&mut g, vec![WalRecord::Hint(hint)])
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

    /// Quorum read: ask the owners, merge the first `r` answers, repair stale owners afterwards.
    pub async fn get(&self, key: &str, r: usize) -> Result<KeyState, LeaderlessError> {
        let layout = self.layout()?;
        let owners: Vec<Member> = layout
            .owners(key)
            .into_iter()
            .filter(|m| self.is_alive(&m.id))
            .cloned()
            .collect();
        if owners.len() < r {
            return Err(LeaderlessError::ReadQuorum {
                got: owners.len(),
                need: r,
            });
        }
        // Ask R owners (this node first: no network hop), and another only when one fails:
        // asking all N would triple the read traffic for nothing in the common case.
        let mut owners = owners;
        owners.sort_by_key(|m| m.id != self.cfg.id);
        let mut spare = owners.split_off(r);
        let (tx, mut rx) = mpsc::channel(r + spare.len());
        let spawn_fetch = |m: Member| {
            let (tx, key) = (tx.clone(), key.to_string());
            if let Some(node) = self.me.upgrade() {
                tokio::spawn(async move {
                    let got = node.fetch_state(&m, &key).await;
                    let _ = tx.send((m, got)).await;
                });
            }
        };
        for m in owners {
            spawn_fetch(m);
        }
        let mut answers: Vec<(Member, KeyState)> = Vec::new();
        let mut pending = r;
        let deadline = tokio::time::Instant::now() + self.cfg.request_timeout;
        while answers.len() < r && pending > 0 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((m, Some(s)))) => {
                    answers.push((m, s));
                    pending -= 1;
                }
                Ok(Some((_, None))) => {
                    pending -= 1;
                    if let Some(next) = spare.pop() {
                        spawn_fetch(next);
                        pending += 1;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        drop(tx);
        if answers.len() < r {
            return Err(LeaderlessError::ReadQuorum {
                got: answers.len(),
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
        let merged = answers.iter().fold(KeyState::default(), |acc, (_, s)| {
            acc.merge(s, self.cfg.conflict)
        });
        for (m, s) in answers {
            if s != merged {
                if m.id == self.cfg.id {
                    self.apply_local(vec![(key.clone(), merged.clone())]).await;
                } else {
                    self.send_states(&m, vec![(key.clone(), merged.clone())])
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
        let r = self
            .http
            .post(format!("http://{}/internal/v1/read", m.address))
            .bearer_auth(&self.cfg.token)
            .json(&key)
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json::<Option<KeyState>>()
            .await
            .ok()
            .map(Option::unwrap_or_default)
    }
}
