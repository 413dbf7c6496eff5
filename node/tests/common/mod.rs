//! Test harness: real rc-node processes on loopback, driven only through their HTTP APIs.
//!
//! Every process is started with its own data directory under one temp dir and killed by PID
//! when the cluster is dropped. Every wait is bounded.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;

use rc_api::{EpochResponse, ModeStatus, NodeStatus, Peer, Role, SingleLeaderStatus, Voter};

pub mod leaderless;

pub use rc_node_harness::{Processes, Security, TOKEN};

/// A cluster of rc-node processes (`n0`, `n1`, ...) under test; the harness's processes, plus
/// the operator's moves (fence, promote, follow, voters) done by hand.
pub struct Cluster {
    procs: Processes,
}

impl std::ops::Deref for Cluster {
    type Target = Processes;
    fn deref(&self) -> &Processes {
        &self.procs
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Processes {
        &mut self.procs
    }
}

impl Cluster {
    /// Start `n` nodes (not yet fenced or promoted) with extra flags `args`; the fence timeout
    /// is 1 s unless `args` choose their own.
    pub fn start(n: usize, args: &[&str]) -> Cluster {
        Self::start_secured(n, args, Security::default())
    }

    /// As [`Cluster::start`], with TLS and/or a token file.
    pub fn start_secured(n: usize, args: &[&str], security: Security) -> Cluster {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--fence-timeout-ms") {
            args.extend(["--fence-timeout-ms".to_string(), "1000".to_string()]);
        }
        let ids = (0..n).map(|i| format!("n{i}")).collect();
        Cluster {
            procs: Processes::start_secured(
                env!("CARGO_BIN_EXE_rc-node").into(),
                ids,
                args,
                security,
            ),
        }
    }

    pub fn peer(&self, i: usize) -> Peer {
        Peer {
            id: self.nodes[i].id.clone(),
            address: self.addr(i),
        }
    }

    // ---- admin API -------------------------------------------------------------------------

    /// Node `i`'s whole status (either mode).
    pub async fn node_status(&self, i: usize) -> Option<NodeStatus> {
        let r = self
            .http()
            .get(self.url(i, "/admin/status"))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Node `i`'s single-leader status; `None` when it does not answer (or is leaderless).
    pub async fn status(&self, i: usize) -> Option<SingleLeaderStatus> {
        match self.node_status(i).await?.detail {
            ModeStatus::SingleLeader(s) => Some(s),
            ModeStatus::Leaderless(_) => None,
        }
    }

    /// `POST /admin/voters` on node `i`: (status code, body).
    pub async fn set_voters(
        &self,
        i: usize,
        epoch: u64,
        voters: &[usize],
    ) -> (u16, serde_json::Value) {
        let ids: Vec<String> = voters.iter().map(|j| self.nodes[*j].id.clone()).collect();
        let r = self
            .http()
            .post(self.url(i, "/admin/voters"))
            .bearer_auth(self.admin_token())
            .json(&json!({ "epoch": epoch, "voters": ids }))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or_default())
    }

    pub async fn fence(&self, i: usize, epoch: u64) -> Option<EpochResponse> {
        let r = self
            .http()
            .post(self.url(i, "/admin/epoch"))
            .bearer_auth(self.admin_token())
            .json(&json!({ "epoch": epoch }))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn promote(&self, i: usize, epoch: u64) {
        let all: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        self.promote_with(i, epoch, &all).await;
    }

    /// Promote `i` with only `followers` (a leader that does not even try to reach the others).
    pub async fn promote_with(&self, i: usize, epoch: u64, followers: &[usize]) {
        self.promote_voters(i, epoch, followers, &[]).await;
    }

    /// Promote `i` replicating to `followers`; `voters` is the first voter set (a new log).
    pub async fn promote_voters(
        &self,
        i: usize,
        epoch: u64,
        followers: &[usize],
        voters: &[Voter],
    ) {
        let followers: Vec<Peer> = followers.iter().map(|j| self.peer(*j)).collect();
        let r = self
            .http()
            .post(self.url(i, "/admin/promote"))
            .bearer_auth(self.admin_token())
            .json(&json!({ "epoch": epoch, "followers": followers, "voters": voters }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "promote failed: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn follow(&self, i: usize, epoch: u64, leader: usize) -> bool {
        let r = self
            .http()
            .post(self.url(i, "/admin/follow"))
            .bearer_auth(self.admin_token())
            .json(&json!({ "epoch": epoch, "leader": self.peer(leader) }))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }

    /// What the operator does (docs/design.md §5): fence `candidates` at `epoch`, require a majority
    /// of the whole cluster to answer, promote the most up-to-date, point the others at it.
    pub async fn failover(&self, candidates: &[usize], epoch: u64) -> usize {
        let mut answered = Vec::new();
        let mut voters = Vec::new();
        for &i in candidates {
            if let Some(r) = self.fence(i, epoch).await {
                assert_eq!(r.epoch, epoch, "node {i} is already past epoch {epoch}");
                answered.push((r.last_log, i));
                voters.push(Voter {
                    id: self.nodes[i].id.clone(),
                    incarnation: r.incarnation,
                });
            }
        }
        assert!(
            answered.len() > self.nodes.len() / 2,
            "no majority answered the fence"
        );
        // Most up-to-date log wins; ties go to the lowest ordinal, as the operator does.
        let (_, leader) = *answered
            .iter()
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .unwrap();
        let all: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != leader).collect();
        // The voters that answered become the first voter set of a new log (ignored otherwise).
        self.promote_voters(leader, epoch, &all, &voters).await;
        for &(_, i) in &answered {
            if i != leader {
                assert!(self.follow(i, epoch, leader).await);
            }
        }
        leader
    }

    /// Fence everyone at epoch 1 and promote node 0; wait until it has committed its no-op.
    pub async fn bootstrap(&self) -> usize {
        for i in 0..self.nodes.len() {
            self.wait_up(i).await;
        }
        let leader = self
            .failover(&(0..self.nodes.len()).collect::<Vec<_>>(), 1)
            .await;
        self.wait_leader_ready(leader).await;
        leader
    }

    pub async fn wait_leader_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(s) = self.status(i).await {
                if s.role == Role::Leader
                    && s.commit_index >= s.last_log.index.min(s.commit_index.max(1))
                    && s.commit_index > 0
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {i} did not become a working leader\n{}", self.logs());
    }

    /// Wait until node `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self
                .status(i)
                .await
                .is_some_and(|s| s.applied_index >= index)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {i} did not apply index {index}\n{}", self.logs());
    }

    // ---- client API ------------------------------------------------------------------------

    pub async fn put(
        &self,
        i: usize,
        key: &str,
        value: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .put(self.url(i, &format!("/v1/kv/{key}")))
            .json(&json!({ "value": value }))
            .send()
            .await
    }

    /// `Some(value)` / `None` (404); panics on any other answer.
    pub async fn get(&self, i: usize, key: &str, consistency: &str) -> Option<String> {
        let r = self
            .http()
            .get(self.url(i, &format!("/v1/kv/{key}?consistency={consistency}")))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(
                r.json::<serde_json::Value>().await.unwrap()["value"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            404 => None,
            s => panic!(
                "get {key} from node {i}: status {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
}
