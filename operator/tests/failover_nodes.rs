//! The failover executor against real rc-node processes on loopback (no Kubernetes): bootstrap,
//! then `kill -9` of the leader, with an acknowledged write that must survive.
//!
//! Needs the rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo
//! test` builds it), or its path in `RC_NODE_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rc_api::{EpochRequest, NodeStatus, Role};
use rc_operator::failover::execute::{drive, refresh, Report};
use rc_operator::failover::{Action, Member, PodState, View};
use rc_operator::node_client::{HttpNodeAdmin, NodeAdmin};
use serde_json::json;

const TOKEN: &str = "operator-test-token-0123456789";
const DELAY: Duration = Duration::from_secs(1);

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three rc-node processes named like a StatefulSet's pods, killed by PID on drop.
struct Nodes {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl Nodes {
    fn start(n: usize) -> Nodes {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "rc-operator-failover-{}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut nodes = Nodes {
            dir,
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
    fn spawn(&mut self, i: usize) {
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
            .args(["--admin-token", TOKEN, "--fence-timeout-ms", "500"])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("orders-{i}.log")));
                format!("---- orders-{i} ----\n{}", log.unwrap_or_default())
            })
            .collect()
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..self.ports.len() {
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

    /// SIGKILL, like a node lost with its machine.
    fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the operator would see: every pod exists and is ready, each node at its address.
    fn view(&self) -> View {
        View {
            members: (0..self.ports.len())
                .map(|i| Member {
                    name: format!("orders-{i}"),
                    address: Some(self.addr(i)),
                    stable_address: self.addr(i),
                    pod: PodState::Ready,
                    role_label: None,
                    node: Err("not observed yet".into()),
                })
                .collect(),
            failover_delay: DELAY,
            known_epoch: 0,
            no_leader_since_ms: None,
        }
    }

    async fn put(&self, i: usize, key: &str, value: &str) -> u16 {
        let url = format!("http://{}/v1/kv/{key}", self.addr(i));
        match self
            .http
            .put(url)
            .json(&json!({ "value": value }))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// A linearizable read, retried while the leader is not ready to serve it yet.
    async fn read(&self, i: usize, key: &str) -> Option<String> {
        let url = format!(
            "http://{}/v1/kv/{key}?consistency=linearizable",
            self.addr(i)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(&url).send().await {
                match r.status().as_u16() {
                    200 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        return body["value"].as_str().map(str::to_owned);
                    }
                    404 => return None,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no linearizable read of {key} from orders-{i}\n{}",
            self.logs()
        );
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

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn status(view: &View, i: usize) -> &NodeStatus {
    view.members[i].node.as_ref().unwrap()
}

async fn pass(admin: &HttpNodeAdmin, view: &mut View) -> Report {
    refresh(admin, TOKEN, view).await;
    drive(admin, TOKEN, view, &now_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_leader_kill_fails_over_to_the_most_up_to_date_survivor() {
    let mut nodes = Nodes::start(3);
    nodes.wait_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500)).unwrap();
    let mut view = nodes.view();

    // Bootstrap: every node starts as a follower without a leader; orders-0 is promoted in
    // epoch 1, the others follow it, and the labels are what is left for the caller.
    let report = pass(&admin, &mut view).await;
    let promoted = report.promoted.clone().expect("bootstrap promotes");
    assert_eq!(
        (promoted.to.as_str(), promoted.epoch, promoted.from),
        ("orders-0", 1, None)
    );
    assert_eq!(
        report.decision.action,
        Action::Relabel {
            pods: vec![
                ("orders-0".into(), "leader"),
                ("orders-1".into(), "follower"),
                ("orders-2".into(), "follower"),
            ]
        },
        "{}",
        nodes.logs()
    );
    assert_eq!(
        (status(&view, 0).role, status(&view, 0).epoch),
        (Role::Leader, 1)
    );
    for i in [1, 2] {
        let s = status(&view, i);
        assert_eq!(
            (s.epoch, s.leader.as_deref()),
            (1, Some("orders-0")),
            "orders-{i}"
        );
    }
    for (member, role) in view
        .members
        .iter_mut()
        .zip(["leader", "follower", "follower"])
    {
        member.role_label = Some(role.to_owned());
    }
    // Idempotent: a second pass finds nothing to do.
    let again = pass(&admin, &mut view).await;
    assert_eq!(
        (again.decision.action, again.notes.len()),
        (Action::Nothing, 0)
    );

    // A write acknowledged by orders-0 and orders-2 only (Quorum, orders-1 down), then the
    // leader is killed and orders-1 comes back without it: its log is behind orders-2's.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.put(0, "before", "all-three").await != 200 {
        assert!(
            Instant::now() < deadline,
            "no write accepted\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.kill9(1);
    assert_eq!(
        nodes.put(0, "acked", "before-the-kill").await,
        200,
        "{}",
        nodes.logs()
    );
    nodes.kill9(0);
    let killed = Instant::now();
    nodes.spawn(1);
    let first = pass(&admin, &mut view).await;
    assert_eq!(
        (first.decision.action, first.promoted),
        (Action::Nothing, None)
    );
    assert!(first.decision.recheck.is_some(), "waits out the delay");

    // The operator notices, waits out the delay, then fences, promotes orders-2 (it holds the
    // acknowledged write; orders-1 does not) and points orders-1 at it.
    let failover = loop {
        let report = pass(&admin, &mut view).await;
        if let Some(p) = report.promoted.clone() {
            break (p, report);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no failover: {report:?}\n{}",
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (promoted, report) = failover;
    assert!(killed.elapsed() >= DELAY, "failed over before the delay");
    assert_eq!(
        (
            promoted.to.as_str(),
            promoted.epoch,
            promoted.from.as_deref()
        ),
        ("orders-2", 2, Some("orders-0")),
        "{report:?}"
    );
    let reasons: Vec<&str> = report.notes.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["FailoverStarted", "LeaderPromoted"]);
    assert_eq!(
        (status(&view, 2).role, status(&view, 2).epoch),
        (Role::Leader, 2)
    );
    assert_eq!(
        (status(&view, 1).epoch, status(&view, 1).leader.as_deref()),
        (2, Some("orders-2"))
    );
    assert_eq!(
        report.decision.action,
        Action::Relabel {
            pods: vec![
                ("orders-0".into(), "follower"),
                ("orders-2".into(), "leader")
            ]
        }
    );

    // Both writes are readable from the new leader.
    assert_eq!(
        nodes.read(2, "acked").await.as_deref(),
        Some("before-the-kill")
    );
    assert_eq!(nodes.read(2, "before").await.as_deref(), Some("all-three"));
    assert_eq!(
        nodes.put(2, "after", "failover").await,
        200,
        "{}",
        nodes.logs()
    );

    // An operator that stopped between fence and promote: the survivors are fenced at epoch 3
    // and nobody leads it. The next pass promotes in epoch 3 without fencing again; both hold
    // the same log now ("after" needed orders-1 for its quorum), so the lowest ordinal wins.
    for i in [1, 2] {
        admin
            .epoch(&nodes.addr(i), TOKEN, EpochRequest { epoch: 3 })
            .await
            .unwrap();
    }
    let resumed = pass(&admin, &mut view).await;
    let promoted = resumed.promoted.clone().expect("resumes with a promotion");
    assert_eq!(
        (promoted.to.as_str(), promoted.epoch),
        ("orders-1", 3),
        "{resumed:?}"
    );
    let reasons: Vec<&str> = resumed.notes.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["LeaderPromoted"]);
    assert_eq!(
        (status(&view, 2).epoch, status(&view, 2).leader.as_deref()),
        (3, Some("orders-1"))
    );
    assert_eq!(nodes.read(1, "after").await.as_deref(), Some("failover"));
}
