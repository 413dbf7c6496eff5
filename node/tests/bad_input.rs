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
    // The node answers 413 without reading an oversized body and closes the connection, so this
    // request gets a client of its own rather than poisoning the shared connection pool.
    let oneshot = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    expect_error(
        oneshot
            .put(kv("/v1/kv/a"))
            .body(vec![b'x'; 8 << 20])
            .send()
            .await
            .unwrap(),
        413,
        "bad_body",
    )
    .await;
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
