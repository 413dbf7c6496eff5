//! Test harness: real rc-node processes on loopback, driven only through their HTTP APIs.
//!
//! Every process is started with its own data directory under one temp dir and killed by PID
//! when the cluster is dropped. Every wait is bounded.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use rc_api::{EpochResponse, NodeStatus, Peer, Role, Voter};

pub mod leaderless;

pub const TOKEN: &str = "test-token-0123456789";

pub struct NodeProc {
    pub id: String,
    pub port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    pub args: Vec<String>,
    pub http: reqwest::Client,
}

/// A free loopback port never handed out before in this test binary. Tests run in parallel and
/// every cluster shares the test admin token, so a port reused while an earlier test's nodes
/// still list it in their ring would let those nodes gossip their ring into a new test's node.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

impl Cluster {
    /// Start `n` nodes (not yet fenced or promoted) with extra flags `args`.
    pub fn start(n: usize, args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("n{i}");
            nodes.push(NodeProc {
                data: dir.path().join(&id),
                log: dir.path().join(format!("{id}.log")),
                id,
                port: free_port(),
                child: None,
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut c = Cluster {
            dir,
            nodes,
            args: args.iter().map(|s| s.to_string()).collect(),
            http,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rc-node"))
            .args([
                "--node-id",
                &node.id,
                "--listen",
                &format!("127.0.0.1:{}", node.port),
            ])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--admin-token", TOKEN, "--log-level", "info"])
            // 1 s unless the test chooses its own.
            .args(
                (!self.args.iter().any(|a| a == "--fence-timeout-ms"))
                    .then_some(["--fence-timeout-ms", "1000"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.addr(i), path)
    }

    pub fn peer(&self, i: usize) -> Peer {
        Peer {
            id: self.nodes[i].id.clone(),
            address: self.addr(i),
        }
    }

    fn pid(&self, i: usize) -> Pid {
        Pid::from_raw(self.nodes[i].child.as_ref().unwrap().id() as i32)
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pause(&self, i: usize) {
        kill(self.pid(i), Signal::SIGSTOP).unwrap();
    }

    pub fn resume(&self, i: usize) {
        kill(self.pid(i), Signal::SIGCONT).unwrap();
    }

    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "---- {} ----\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect()
    }

    // ---- admin API -------------------------------------------------------------------------

    pub async fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url(i, "/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {i} did not come up\n{}", self.logs());
    }

    pub async fn status(&self, i: usize) -> Option<NodeStatus> {
        let r = self
            .http
            .get(self.url(i, "/admin/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
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
            .http
            .post(self.url(i, "/admin/voters"))
            .bearer_auth(TOKEN)
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
            .http
            .post(self.url(i, "/admin/epoch"))
            .bearer_auth(TOKEN)
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
            .http
            .post(self.url(i, "/admin/promote"))
            .bearer_auth(TOKEN)
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
            .http
            .post(self.url(i, "/admin/follow"))
            .bearer_auth(TOKEN)
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
            .http
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() {
                let _ = kill(self.pid(i), Signal::SIGCONT);
            }
            self.kill9(i);
        }
    }
}
