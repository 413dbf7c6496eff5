//! The harness the node-process tests share: real rc-node processes named like a StatefulSet's
//! pods (`orders-0`, `orders-1`, ...), each on a free loopback port with its own data directory
//! and log file, killed by PID on drop. No Kubernetes.
//!
//! Needs the rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo
//! test` builds it), or its path in `RC_NODE_BIN`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The admin token every node is started with.
pub const TOKEN: &str = "operator-test-token-0123456789";

fn rc_node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RC_NODE_BIN") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<this test> -> target/<profile>/rc-node
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("rc-node");
    assert!(
        path.exists(),
        "{} not found: build it first with `cargo build -p rc-node` (same CARGO_TARGET_DIR) or set RC_NODE_BIN",
        path.display()
    );
    path
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

/// rc-node processes `orders-0..n`, killed by PID on drop (their data directories removed).
pub struct Nodes {
    dir: PathBuf,
    /// Arguments for the replication mode, after the common ones (id, listen, data, token).
    mode_args: &'static [&'static str],
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl Nodes {
    /// Starts `n` nodes with `mode_args`, in a fresh directory named after `label`.
    pub fn start(label: &str, n: usize, mode_args: &'static [&'static str]) -> Nodes {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "rc-operator-{label}-{}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // No redirects followed: a test talks to the node it names.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut nodes = Nodes {
            dir,
            mode_args,
            ports: (0..n).map(|_| free_port()).collect(),
            children: (0..n).map(|_| None).collect(),
            http,
        };
        for i in 0..n {
            nodes.spawn(i);
        }
        nodes
    }

    /// Starts node `i` on its port and data directory (again, after a kill).
    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("orders-{i}.log")))
            .unwrap();
        let child = Command::new(rc_node_binary())
            .args(["--node-id", &format!("orders-{i}")])
            .args(["--listen", &self.addr(i)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("orders-{i}")))
            .args(["--admin-token", TOKEN, "--log-level", "info"])
            .args(self.mode_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    /// How many nodes were started (running or not).
    pub fn count(&self) -> usize {
        self.ports.len()
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// The client the harness talks to the nodes with (3 s timeout, no redirects).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Every node's log so far, for assertion messages.
    pub fn logs(&self) -> String {
        (0..self.count())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("orders-{i}.log")));
                format!("---- orders-{i} ----\n{}", log.unwrap_or_default())
            })
            .collect()
    }

    /// Waits (up to 20 s in all) until every node answers `/healthz`.
    pub async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..self.count() {
            loop {
                let url = format!("http://{}/healthz", self.addr(i));
                if self
                    .http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "orders-{i} did not start\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits (up to 20 s) until node `i` answers `/healthz`.
    pub async fn wait_up_one(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/healthz", self.addr(i));
        while !self
            .http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "orders-{i} did not start\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, like a node lost with its machine.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`resume`: SIGCONT), like a hung machine: the process holds its sockets but
    /// answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(child) = &self.children[i] {
            let status = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal} orders-{i}");
        }
    }

    /// Deletes node `i`'s data directory (a replaced volume); kill it first.
    pub fn wipe(&self, i: usize) {
        let _ = std::fs::remove_dir_all(self.dir.join(format!("orders-{i}")));
    }

    /// `PUT /v1/kv/{key}` on node `i`: the HTTP status, or 0 when no answer came.
    pub async fn put(&self, i: usize, key: &str, value: &str) -> u16 {
        let url = format!("http://{}/v1/kv/{key}", self.addr(i));
        let body = json!({ "value": value });
        match self.http.put(url).json(&body).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
