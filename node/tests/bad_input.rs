//! Bad input on the client and admin APIs gets a JSON error with the right status code, and
//! never crashes the node or changes its data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Cluster, TOKEN};
use serde_json::{json, Value};

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or_default();
    assert_eq!(got, status, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// Sends a PUT with `Content-Length: len` and no body, and returns the status and JSON body of
/// the answer. Bounded: the node must answer within five seconds.
async fn raw_put_headers_only(url: &str, len: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = find(&answer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let want = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if want.is_some_and(|w| answer.len() >= end + 4 + w) {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the node did not answer a too-large PUT from its headers"
    );
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (status, body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_api_rejects_bad_input_with_json_errors() {
    let c = Cluster::start(
        1,
        &[
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "32",
            "--max-batch-ops",
            "3",
        ],
    );
    c.bootstrap().await;
    assert!(c.put(0, "good", "v").await.unwrap().status().is_success());
    let h = &c.http;
    let kv = |path: &str| c.url(0, path);

    expect_error(
        h.put(kv("/v1/kv/a"))
            .body("{not json")
            .send()
            .await
            .unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        h.put(kv("/v1/kv/a")).body("").send().await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        h.put(kv("/v1/kv/a"))
            .json(&json!({"value": 5}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        h.put(kv("/v1/kv/a"))
            .json(&json!({"value": "x", "ttl": 1}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        h.put(kv("/v1/kv/a"))
            .json(&json!({"value": "x".repeat(33)}))
            .send()
            .await
            .unwrap(),
        413,
        "value_too_large",
    )
    .await;
    expect_error(
        h.put(kv(&format!("/v1/kv/{}", "k".repeat(17))))
            .json(&json!({"value": "x"}))
            .send()
            .await
            .unwrap(),
        413,
        "key_too_large",
    )
    .await;
    // The node answers 413 from the Content-Length alone, before any of the body arrives. A raw
    // connection that sends only the headers shows that, and cannot race a client still writing
    // the body into a socket the node has already closed (EPIPE).
    let (status, body) = raw_put_headers_only(&kv("/v1/kv/a"), 8 << 20).await;
    assert_eq!(status, 413, "body: {body}");
    assert_eq!(body["error"]["code"], "bad_body", "body: {body}");
    expect_error(
        h.get(kv("/v1/kv/a?consistency=eventual"))
            .send()
            .await
            .unwrap(),
        400,
        "bad_query",
    )
    .await;
    expect_error(
        h.get(kv("/v1/kv/a?colour=red")).send().await.unwrap(),
        400,
        "bad_query",
    )
    .await;
    expect_error(
        h.put(kv("/v1/kv/a?w=2"))
            .json(&json!({"value": "x"}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_query",
    )
    .await;
    expect_error(
        h.get(kv("/v1/kv?limit=0")).send().await.unwrap(),
        400,
        "bad_limit",
    )
    .await;
    expect_error(
        h.get(kv("/v1/kv?limit=abc")).send().await.unwrap(),
        400,
        "bad_query",
    )
    .await;
    expect_error(
        h.get(kv("/v1/kv/missing")).send().await.unwrap(),
        404,
        "key_not_found",
    )
    .await;
    expect_error(
        h.get(kv("/v1/nothing")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let batch = |ops: Value| h.post(kv("/v1/batch")).json(&json!({ "ops": ops })).send();
    expect_error(batch(json!([])).await.unwrap(), 400, "bad_batch").await;
    expect_error(
        batch(json!(vec![json!({"op":"put","key":"a","value":"1"}); 4]))
            .await
            .unwrap(),
        400,
        "bad_batch",
    )
    .await;
    expect_error(
        batch(json!([{"op":"zap","key":"a"}])).await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        batch(json!([{"op":"put","key":"","value":"1"}]))
            .await
            .unwrap(),
        400,
        "empty_key",
    )
    .await;
    expect_error(
        batch(json!([{"op":"put","key":"a","value":"x".repeat(40)}]))
            .await
            .unwrap(),
        413,
        "value_too_large",
    )
    .await;

    // Nothing above changed the data, and the node is still serving.
    assert_eq!(c.get(0, "good", "linearizable").await.as_deref(), Some("v"));
    assert_eq!(c.get(0, "a", "linearizable").await, None);
    let r = batch(json!([{"op":"put","key":"a","value":"1"},{"op":"delete","key":"good"}]))
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(c.get(0, "good", "linearizable").await, None);
    let scan: Value = h
        .get(kv("/v1/kv?prefix=a&limit=10"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scan["items"][0]["key"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_and_refuses_unsafe_calls() {
    let c = Cluster::start(2, &[]);
    c.wait_up(0).await;
    c.wait_up(1).await;
    let h = &c.http;
    let url = |p: &str| c.url(0, p);

    expect_error(
        h.get(url("/admin/status")).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        h.get(url("/admin/status"))
            .bearer_auth("wrong-token-000000000")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        h.post(url("/admin/epoch"))
            .json(&json!({"epoch": 1}))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let admin = |p: &str, body: Value| h.post(url(p)).bearer_auth(TOKEN).json(&body).send();
    expect_error(
        admin("/admin/epoch", json!({"epoch": -1})).await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        admin("/admin/epoch", json!({"epoch": "7"})).await.unwrap(),
        400,
        "bad_json",
    )
    .await;
    expect_error(
        admin("/admin/promote", json!({"epoch": 0, "followers": []}))
            .await
            .unwrap(),
        400,
        "invalid",
    )
    .await;
    // An epoch the operator's status (int64) cannot hold would end every later failover.
    for path in ["/admin/epoch", "/admin/promote", "/admin/follow"] {
        let body = json!({"epoch": u64::MAX, "followers": [], "leader": {"id": "n1", "address": "127.0.0.1:1"}});
        expect_error(admin(path, body).await.unwrap(), 400, "invalid").await;
    }
    let status: Value = h
        .get(url("/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["epoch"], 0, "a refused epoch changes nothing");

    assert_eq!(c.fence(0, 5).await.unwrap().epoch, 5);
    assert_eq!(
        c.fence(0, 5).await.unwrap().epoch,
        5,
        "fencing is idempotent"
    );
    assert_eq!(
        c.fence(0, 3).await.unwrap().epoch,
        5,
        "fencing never goes backwards"
    );
    expect_error(
        admin("/admin/promote", json!({"epoch": 4, "followers": []}))
            .await
            .unwrap(),
        409,
        "stale_epoch",
    )
    .await;
    let me = json!({"id": "n0", "address": c.addr(0)});
    expect_error(
        admin("/admin/follow", json!({"epoch": 5, "leader": me}))
            .await
            .unwrap(),
        400,
        "invalid",
    )
    .await;
    let other = json!({"id": "n1", "address": c.addr(1)});
    assert!(admin("/admin/follow", json!({"epoch": 5, "leader": other}))
        .await
        .unwrap()
        .status()
        .is_success());
    assert!(admin("/admin/follow", json!({"epoch": 5, "leader": other}))
        .await
        .unwrap()
        .status()
        .is_success());
    let third = json!({"id": "n9", "address": "127.0.0.1:1"});
    expect_error(
        admin("/admin/follow", json!({"epoch": 5, "leader": third}))
            .await
            .unwrap(),
        409,
        "leader_taken",
    )
    .await;
    expect_error(
        admin("/admin/promote", json!({"epoch": 5, "followers": []}))
            .await
            .unwrap(),
        409,
        "leader_taken",
    )
    .await;
    let bad_peer = json!({"epoch": 6, "followers": [{"id": "", "address": ""}]});
    expect_error(
        admin("/admin/promote", bad_peer).await.unwrap(),
        400,
        "invalid",
    )
    .await;

    // Probes stay open and the node is alive.
    assert!(h
        .get(url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert!(h
        .get(url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("rc_epoch 5"));
    let s = c.status(0).await.unwrap();
    assert_eq!((s.epoch, s.leader.as_deref()), (5, Some("n1")));
}

/// The peer protocol (first byte 0 on the node's port) caps frames before authentication: a
/// huge length prefix ends the connection at once instead of making the node buffer it, and
/// the node keeps serving.
#[tokio::test]
async fn an_unauthenticated_peer_cannot_send_a_large_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(1, &[]);
    c.wait_up(0).await;
    let url = c.url(0, "/healthz");
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Magic byte, then a 4-byte big-endian length of 64 MiB and the start of its body.
    conn.write_all(&[0u8]).await.unwrap();
    conn.write_all(&(64u32 << 20).to_be_bytes()).await.unwrap();
    let _ = conn.write_all(&[7u8; 1024]).await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the node must close the connection, not wait for 64 MiB");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let healthy = c.http.get(&url).send().await.unwrap();
    assert_eq!(healthy.status(), 200);
}
