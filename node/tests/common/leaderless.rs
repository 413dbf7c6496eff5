//! Helpers of the leaderless multi-process tests: rings pushed as the operator does, client
//! calls, and bounded waits on a node's leaderless status.

use std::time::{Duration, Instant};

use rc_api::{MemberState, NodeStatus};
use serde_json::{json, Value};

use super::{Cluster, TOKEN};

pub const LEADERLESS: &[&str] = &[
    "--mode",
    "leaderless",
    "--anti-entropy-interval-seconds",
    "0",
];

pub fn ring(c: &Cluster, version: u64, members: &[(usize, MemberState)]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|(i, s)| json!({"id": c.nodes[*i].id, "address": c.addr(*i), "state": s}))
        .collect();
    json!({"version": version, "members": members})
}

pub async fn push_ring(c: &Cluster, node: usize, ring: &Value) -> reqwest::Response {
    c.http
        .put(c.url(node, "/admin/ring"))
        .bearer_auth(TOKEN)
        .json(ring)
        .send()
        .await
        .unwrap()
}

pub async fn lstatus(c: &Cluster, i: usize) -> rc_api::LeaderlessStatus {
    let s: NodeStatus = c.node_status(i).await.unwrap();
    s.leaderless().cloned().unwrap()
}

/// Wait until `check` holds for node `i`'s leaderless status.
pub async fn wait_status(
    c: &Cluster,
    i: usize,
    what: &str,
    check: impl Fn(&rc_api::LeaderlessStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(s) = c.node_status(i).await.and_then(|s| s.leaderless().cloned()) {
            if check(&s) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {i}: {what} did not happen\n{}", c.logs());
}

pub async fn start(n: usize, extra: &[&str]) -> Cluster {
    start_secured(n, extra, super::Security::default()).await
}

/// As [`start`], with TLS and/or a token file.
pub async fn start_secured(n: usize, extra: &[&str], security: super::Security) -> Cluster {
    let args: Vec<&str> = LEADERLESS.iter().chain(extra).copied().collect();
    let c = Cluster::start_secured(n, &args, security);
    for i in 0..n {
        c.wait_up(i).await;
    }
    let r = ring(
        &c,
        1,
        &(0..n).map(|i| (i, MemberState::Normal)).collect::<Vec<_>>(),
    );
    assert!(push_ring(&c, 0, &r).await.status().is_success());
    // Gossip carries the ring to the others; each (empty) node then restores before serving.
    for i in 0..n {
        wait_status(&c, i, "ring v1 arrives", |s| {
            s.ring_version == 1 && !s.restoring
        })
        .await;
    }
    c
}

pub async fn put(c: &Cluster, i: usize, key: &str, value: &str, context: Option<&str>) -> bool {
    let mut body = json!({"value": value});
    if let Some(ctx) = context {
        body["context"] = json!(ctx);
    }
    c.http
        .put(c.url(i, &format!("/v1/kv/{key}")))
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

pub async fn get(c: &Cluster, i: usize, key: &str) -> Option<Value> {
    let r = c
        .http
        .get(c.url(i, &format!("/v1/kv/{key}")))
        .send()
        .await
        .ok()?;
    match r.status().as_u16() {
        200 => r.json().await.ok(),
        404 => Some(Value::Null),
        _ => None,
    }
}

/// Node `i`'s own copy of `key` (internal API), without quorum or repair. Waits while the node
/// is restoring (it answers no reads then); panics if it never answers.
pub async fn local(c: &Cluster, i: usize, key: &str) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .http
            .post(c.url(i, "/internal/v1/read"))
            .bearer_auth(TOKEN)
            .json(&key)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                return r.json::<Option<Value>>().await.unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "n{i} never answered a local read of {key}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether node `i` holds `key` (any state of it) within 10 s.
pub async fn holds(c: &Cluster, i: usize, key: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while local(c, i, key).await.is_none() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

pub fn values(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["siblings"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}
