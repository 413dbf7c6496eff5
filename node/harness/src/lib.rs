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
use rc_tls::issue::ClusterCa;

/// The admin token every node is started with.
pub const TOKEN: &str = "test-token-0123456789";

/// How the nodes are secured: the defaults are plain HTTP and a fixed `--admin-token`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Security {
    /// A test CA and one certificate (for `localhost`) shared by the nodes; clients verify it.
    pub tls: bool,
    /// `--admin-token-file <dir>/token` (holding [`TOKEN`]), so tests can rotate it.
    pub token_file: bool,
    /// Client, peer and admin traffic on three ports, the same on every node: node `i` listens
    /// on 127.0.0.`10 + i` (all of 127/8 is loopback) so that the ports can be shared.
    pub split_ports: bool,
}

/// With split ports: the peer and admin ports every node listens on.
#[derive(Debug, Clone, Copy)]
struct SplitPorts {
    peer: u16,
    admin: u16,
}

/// The test CA and where the nodes' certificate files are.
struct TestTls {
    ca: ClusterCa,
    cert: PathBuf,
    key: PathBuf,
    ca_file: PathBuf,
}

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
    /// The loopback address it listens on.
    pub host: String,
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
    tls: Option<TestTls>,
    split: Option<SplitPorts>,
    /// With token files: `<this>/<node id>/token`, one per node (as each pod has its own copy
    /// of a Secret, updated at its own time).
    token_dir: Option<PathBuf>,
}

impl Processes {
    /// Start one node per id with `args`.
    pub fn start(binary: PathBuf, ids: Vec<String>, args: Vec<String>) -> Processes {
        Self::start_secured(binary, ids, args, Security::default())
    }

    /// Start one node per id with `args`, secured as `security` says.
    pub fn start_secured(
        binary: PathBuf,
        ids: Vec<String>,
        args: Vec<String>,
        security: Security,
    ) -> Processes {
        let dir = tempfile::Builder::new()
            .prefix("rc-node-test-")
            .tempdir()
            .unwrap();
        let split = security.split_ports.then(|| SplitPorts {
            peer: free_port(),
            admin: free_port(),
        });
        let client_port = split.map(|_| free_port());
        let nodes = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| NodeProcess {
                data: dir.path().join(&id),
                log: dir.path().join(format!("{id}.log")),
                id,
                host: match split {
                    Some(_) => format!("127.0.0.{}", 10 + i),
                    None => "127.0.0.1".to_owned(),
                },
                port: client_port.unwrap_or_else(free_port),
                child: None,
            })
            .collect();
        let tls = security.tls.then(|| {
            let ca = ClusterCa::generate("rc test CA", Duration::from_secs(86_400)).unwrap();
            let ca_file = dir.path().join("ca.crt");
            std::fs::write(&ca_file, &ca.cert_pem).unwrap();
            let tls = TestTls {
                ca,
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
                ca_file,
            };
            tls.issue();
            tls
        });
        let token_dir = security.token_file.then(|| dir.path().join("secrets"));
        // No redirects followed: a test talks to the node it names.
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3));
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls(tls.client_config());
        }
        let mut p = Processes {
            dir,
            nodes,
            args,
            binary,
            http: http.build().unwrap(),
            tls,
            split,
            token_dir,
        };
        for i in 0..p.count() {
            p.spawn(i);
        }
        p
    }

    /// Start node `i` on its port and data directory (again, after a kill).
    pub fn spawn(&mut self, i: usize) {
        let token_file = self.token_file(i);
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--node-id", &node.id])
            .args(["--listen", &format!("{}:{}", node.host, node.port)])
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--log-level", "info"]);
        match token_file {
            Some(file) => {
                if !file.exists() {
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(&file, TOKEN).unwrap();
                }
                cmd.arg("--admin-token-file").arg(file)
            }
            None => cmd.args(["--admin-token", TOKEN]),
        };
        if let Some(split) = self.split {
            cmd.args(["--peer-listen", &format!("{}:{}", node.host, split.peer)])
                .args(["--admin-listen", &format!("{}:{}", node.host, split.admin)]);
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-file")
                .arg(&tls.ca_file);
        }
        let child = cmd
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

    /// Node `i`'s client address (the one it is known by).
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].host, self.nodes[i].port)
    }

    /// The URL of `path` on node `i`: `/admin/...` on its admin port and `/internal/...` on its
    /// peer port when they have their own, else the client port.
    pub fn url(&self, i: usize, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let port = match self.split {
            Some(s) if path.starts_with("/admin") => s.admin,
            Some(s) if path.starts_with("/internal") => s.peer,
            _ => self.nodes[i].port,
        };
        format!("{scheme}://{}:{port}{path}", self.nodes[i].host)
    }

    /// The URL of `path` on node `i`'s client port, whatever the path.
    pub fn client_url(&self, i: usize, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr(i))
    }

    /// With split ports: node `i`'s (peer, admin) addresses.
    pub fn split_addrs(&self, i: usize) -> Option<(String, String)> {
        let s = self.split?;
        let host = &self.nodes[i].host;
        Some((format!("{host}:{}", s.peer), format!("{host}:{}", s.admin)))
    }

    fn token_file(&self, i: usize) -> Option<PathBuf> {
        let dir = self.token_dir.as_ref()?;
        Some(dir.join(&self.nodes[i].id).join("token"))
    }

    /// The admin token to send now: node 0's token file, or [`TOKEN`].
    pub fn admin_token(&self) -> String {
        match self.token_file(0) {
            Some(file) => std::fs::read_to_string(file).unwrap().trim().to_owned(),
            None => TOKEN.to_owned(),
        }
    }

    /// The test CA's certificate (PEM), with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca.cert_pem.as_str())
    }

    /// Issue a new node certificate from the same CA and swap it in as the kubelet would (write
    /// aside, then rename), as a rotation does.
    pub fn rotate_certificate(&self) {
        self.tls.as_ref().expect("started with TLS").issue();
    }

    /// Rewrite node `i`'s token files (`token`, `token.next`, `token.previous`; `None` removes
    /// one), each by write-aside and rename.
    pub fn write_token_files(
        &self,
        i: usize,
        current: &str,
        next: Option<&str>,
        previous: Option<&str>,
    ) {
        let file = self.token_file(i).expect("started with token files");
        for (path, content) in [
            (file.clone(), Some(current)),
            (file.with_extension("next"), next),
            (file.with_extension("previous"), previous),
        ] {
            match content {
                Some(c) => replace_file(&path, c.as_bytes()),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
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

impl TestTls {
    /// A certificate for `localhost` (nodes dial each other at 127.0.0.1, checked as localhost).
    fn issue(&self) {
        let issued = self
            .ca
            .issue(
                "rc test node",
                &["localhost".to_owned()],
                &[],
                Duration::from_secs(86_400),
            )
            .unwrap();
        // Key first: a reload between the two renames sees a mismatched pair and keeps the old.
        replace_file(&self.key, issued.key_pem.as_bytes());
        replace_file(&self.cert, issued.cert_pem.as_bytes());
    }

    fn client_config(&self) -> rc_tls::rustls::ClientConfig {
        rc_tls::client::client_config(self.ca.cert_pem.as_bytes(), "localhost").unwrap()
    }
}

/// Replace `path`'s content atomically (write aside, rename).
fn replace_file(path: &std::path::Path, content: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
