//! The harness the operator's node-process tests share: real rc-node processes named like a
//! StatefulSet's pods (`orders-0`, `orders-1`, ...), each on a free loopback port with its own
//! data directory and log file, killed by PID on drop. No Kubernetes.
//!
//! The processes themselves are `rc-node-harness`'s, shared with the node's own tests. Needs the
//! rc-node binary of the same build: `cargo build -p rc-node` (a workspace `cargo test` builds
//! it), or its path in `RC_NODE_BIN`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

pub use rc_node_harness::{Processes, TOKEN};

/// The operator's credentials for the test nodes: the harness token, plain HTTP.
pub fn auth() -> rc_operator::node_client::NodeAccess {
    rc_operator::node_client::NodeAccess::plain(TOKEN)
}

/// rc-node processes `orders-0..n`, killed by PID on drop (their data directories removed).
pub struct Nodes {
    procs: Processes,
}

impl std::ops::Deref for Nodes {
    type Target = Processes;
    fn deref(&self) -> &Processes {
        &self.procs
    }
}

impl std::ops::DerefMut for Nodes {
    fn deref_mut(&mut self) -> &mut Processes {
        &mut self.procs
    }
}

impl Nodes {
    /// Starts `n` nodes with `mode_args` (the arguments for the replication mode).
    pub fn start(n: usize, mode_args: &[&str]) -> Nodes {
        let ids = (0..n).map(|i| format!("orders-{i}")).collect();
        let args = mode_args.iter().map(|a| a.to_string()).collect();
        Nodes {
            procs: Processes::start(rc_node_harness::rc_node_binary(), ids, args),
        }
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
