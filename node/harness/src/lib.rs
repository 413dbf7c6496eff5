//! TESTS ONLY: real rc-node processes on loopback, shared by the node's and the operator's
//! multi-process tests. Each node gets a free port, a data directory and a log file under one
//! temporary directory; every process is killed by PID when the harness is dropped, and every
//! wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The admin token every node is started with.
pub const TOKEN: &str = "test-token-0123456789";

/// The rc-node binary of this build: `RC_NODE_BIN`, else next to the running test's directory
/// (`target/<profile>/deps/<test>` -> `target/<profile>/rc-node`; a workspace `cargo test`
/// builds it).
pub fn rc_node_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RC_NODE_BIN") {
        return PathBuf::from(path);
    }
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
pub fn free_port() -> u16 {
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

/// One node: its id, port, data directory, log file and, while it runs, its process.
pub struct NodeProcess {
    pub id: String,
    pub port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// rc-node processes started with the same arguments.
pub struct Processes {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    /// Arguments every node gets after the common ones (id, listen, data, token, log level).
    pub args: Vec<String>,
    /// The client tests talk to the nodes with (3 s timeout, no redirects).
    pub http: reqwest::Client,
    binary: PathBuf,
}

impl Processes {
    /// Start one node per id with `args`.
    pub fn start(binary: PathBuf, ids: Vec<String>, args: Vec<String>) -> Processes {
        let dir = tempfile::Builder::new()
            .prefix("rc-node-test-")
            .tempdir()
            .unwrap();
        let nodes = ids
            .into_iter()
            .map(|id| NodeProcess {
                data: dir.path().join(&id),
                log: dir.path().join(format!("{id}.log")),
                id,
                port: free_port(),
                child: None,
            })
            .collect();
        // No redirects followed: a test talks to the node it names.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut p = Processes {
            dir,
            nodes,
            args,
            binary,
            http,
        };
        for i in 0..p.count() {
            p.spawn(i);
        }
        p
    }

    /// Start node `i` on its port and data directory (again, after a kill).
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["--node-id", &node.id])
            .args(["--listen", &format!("127.0.0.1:{}", node.port)])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--admin-token", TOKEN, "--log-level", "info"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// How many nodes were started (running or not).
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    pub fn id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.addr(i), path)
    }

    /// The client the harness talks to the nodes with (3 s timeout, no redirects).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// SIGKILL, like a node lost with its machine.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
    }

    /// SIGSTOP (`resume`: SIGCONT), like a hung machine: the process holds its sockets but
    /// answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.signal(i, Signal::SIGCONT);
    }

    fn signal(&self, i: usize, signal: Signal) {
        if let Some(child) = &self.nodes[i].child {
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        }
    }

    /// Delete node `i`'s data directory (a replaced volume); kill it first.
    pub fn wipe(&self, i: usize) {
        let _ = std::fs::remove_dir_all(&self.nodes[i].data);
    }

    /// Every node's log so far, for assertion messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                format!("---- {} ----\n{log}", n.id)
            })
            .collect()
    }

    /// Wait (up to 20 s) until node `i` answers `/healthz`.
    pub async fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = self.url(i, "/healthz");
        while !self
            .http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "{} did not start\n{}",
                self.id(i),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every node answers `/healthz`.
    pub async fn wait_all_up(&self) {
        for i in 0..self.count() {
            self.wait_up(i).await;
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for i in 0..self.count() {
            self.kill9(i);
        }
    }
}
