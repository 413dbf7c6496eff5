//! TLS and credential rotation on real rc-node processes: clients need the cluster CA, peers
//! replicate over TLS, and a certificate or token rotation under a live writer fails nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::leaderless::{get, put, start_secured};
use common::{Cluster, Security, TOKEN};
use rc_api::NodeStatus;
use serde_json::json;

const SECURED: Security = Security {
    tls: true,
    token_file: true,
    split_ports: false,
};

/// A client that trusts `ca_pem` and opens a new connection (a new handshake) per request.
fn fresh_client(ca_pem: &str) -> reqwest::Client {
    let tls = rc_tls::client::client_config(ca_pem.as_bytes(), "localhost").unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// An error and all its sources, for assertions on the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Writes `w-<n>` keys through `node` until `stop`; counts successes and failures.
struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(http: reqwest::Client, url: impl Fn(u64) -> String + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r = http
                    .put(url(n))
                    .json(&json!({ "value": format!("v{n}") }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("w-{n}: {}", r.status()));
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("w-{n}: {e:#}"));
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        });
        Writer {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Stops the writer; returns (acknowledged, failed, failures).
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Rewrites every node's token files, one node every 400 ms: each pod's copy of a Secret
/// changes at its own time.
async fn write_all(c: &Cluster, current: &str, next: Option<&str>, previous: Option<&str>) {
    for i in 0..c.count() {
        c.write_token_files(i, current, next, previous);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// Wait (up to 10 s) until every node's status satisfies `check`.
async fn wait_all(c: &Cluster, what: &str, check: impl Fn(&NodeStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    'outer: while Instant::now() < deadline {
        for i in 0..c.count() {
            match c.node_status(i).await {
                Some(s) if check(&s) => {}
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'outer;
                }
            }
        }
        return;
    }
    panic!("{what} did not happen on every node\n{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_clients_need_its_ca() {
    let c = Cluster::start_secured(3, &[], SECURED);
    let leader = c.bootstrap().await;
    let follower = (leader + 1) % 3;
    assert!(c.put(leader, "k", "v").await.unwrap().status().is_success());
    assert_eq!(
        c.get(leader, "k", "linearizable").await.as_deref(),
        Some("v")
    );
    // Followers apply it: the replication stream runs over TLS.
    let applied = c.status(leader).await.unwrap().applied_index;
    c.wait_applied(follower, applied).await;
    assert_eq!(c.get(follower, "k", "stale").await.as_deref(), Some("v"));
    // A follower redirects writes to the leader over https.
    let r = c.put(follower, "k2", "v").await.unwrap();
    assert_eq!(r.status(), 307);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("https://"), "{location}");

    // Plain HTTP on the TLS port: no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let url = c.url(leader, "/v1/kv/k").replacen("https://", "http://", 1);
    assert!(plain.get(&url).send().await.is_err());
    // TLS without the cluster CA (another cluster's): refused at the handshake.
    let foreign =
        rc_tls::issue::ClusterCa::generate("other CA", Duration::from_secs(3600)).unwrap();
    let err = fresh_client(&foreign.cert_pem)
        .get(c.url(leader, "/v1/kv/k"))
        .send()
        .await
        .unwrap_err();
    let chain = error_chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    // The status shows which certificate is served, not the certificate or token.
    let s = c.node_status(leader).await.unwrap();
    assert_eq!(s.credentials.certificate.len(), 16);
    let body = c
        .http
        .get(c.url(leader, "/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains(TOKEN) && !body.contains("BEGIN"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotation_under_a_writer_fails_no_write() {
    let mut c = Cluster::start_secured(3, &[], SECURED);
    let leader = c.bootstrap().await;
    let before = c.node_status(leader).await.unwrap().credentials.certificate;
    let base = c.url(leader, "/v1/kv/");
    // A new handshake per write: every write after the swap meets the new certificate.
    let writer = Writer::start(fresh_client(c.ca_pem().unwrap()), move |n| {
        format!("{base}w-{n}")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.rotate_certificate();
    wait_all(&c, "the new certificate is served", |s| {
        s.credentials.certificate != before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Followers still replicate (their streams reconnect to new certificates just the same).
    c.restart((leader + 1) % 3);
    c.wait_up((leader + 1) % 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, errors) = writer.finish().await;
    assert!(ok > 20, "the writer made progress ({ok})");
    assert_eq!(failed, 0, "failed writes: {errors:?}\n{}", c.logs());
    let applied = c.status(leader).await.unwrap().applied_index;
    for i in 0..3 {
        c.wait_applied(i, applied).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rotation_under_a_leaderless_writer_fails_no_write() {
    // Leaderless with W=3: every replica write carries the token and every replica must
    // accept it, so a node that sent a token another did not accept yet would fail writes.
    let c = start_secured(3, &["--write-quorum", "3"], SECURED).await;
    let fp = |t: &str| rc_tls::fingerprint(t.as_bytes());
    let (old, new) = (TOKEN, "rotated-token-9876543210");
    let base: Vec<String> = (0..3).map(|i| c.url(i, "/v1/kv/")).collect();
    let writer = Writer::start(c.http.clone(), move |n| {
        format!("{}w-{n}", base[n as usize % 3])
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Every node accepts the next token; all still send the old one.
    write_all(&c, old, Some(new), None).await;
    wait_all(&c, "the next token is accepted", |s| {
        s.credentials.accepted_tokens.contains(&fp(new))
    })
    .await;
    // 2. Every node sends the new token; the old one is still accepted.
    write_all(&c, new, None, Some(old)).await;
    wait_all(&c, "the new token is sent", |s| {
        s.credentials.token == fp(new)
    })
    .await;
    // 3. The old token is dropped.
    write_all(&c, new, None, None).await;
    wait_all(&c, "the old token is dropped", |s| {
        s.credentials.accepted_tokens == vec![fp(new)]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = writer.finish().await;
    assert!(ok > 20, "the writer made progress ({ok})");
    assert_eq!(failed, 0, "failed writes: {errors:?}\n{}", c.logs());

    // Now the old token is refused and the new one works.
    let status = |token: &'static str| {
        c.http
            .get(c.url(0, "/admin/status"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(status(old).await.unwrap().status(), 401);
    assert_eq!(status(new).await.unwrap().status(), 200);
    // And replication still works across the cluster, over TLS.
    assert!(put(&c, 1, "after", "rotation", None).await);
    for i in 0..3 {
        assert_eq!(
            get(&c, i, "after").await.unwrap()["value"],
            json!("rotation")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_split_ports_each_surface_answers_only_on_its_own_port() {
    let split = Security {
        tls: true,
        token_file: false,
        split_ports: true,
    };
    // Single-leader: the operator's calls on the admin port, replication on the peer port.
    let c = Cluster::start_secured(3, &[], split);
    let leader = c.bootstrap().await;
    assert!(c.put(leader, "k", "v").await.unwrap().status().is_success());
    let applied = c.status(leader).await.unwrap().applied_index;
    for i in 0..3 {
        c.wait_applied(i, applied).await;
    }
    let http = c.http.clone();
    let code = |url: String| {
        let http = http.clone();
        async move {
            http.get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let (peer, admin) = c.split_addrs(leader).unwrap();
    assert_eq!(
        code(c.client_url(leader, "/admin/status")).await,
        404,
        "no admin API on the client port"
    );
    assert_eq!(code(format!("https://{admin}/admin/status")).await, 200);
    assert_eq!(
        code(format!("https://{admin}/v1/kv/k")).await,
        404,
        "no client API on the admin port"
    );
    assert_eq!(
        code(format!("https://{peer}/v1/kv/k")).await,
        404,
        "no client API on the peer port"
    );
    assert_eq!(
        code(format!("https://{peer}/admin/status")).await,
        404,
        "no admin API on the peer port"
    );
    assert_eq!(code(c.client_url(leader, "/v1/kv/k")).await, 200);
    drop(c);

    // Leaderless: the ring through the admin port; replica traffic on the peer port.
    let c = start_secured(3, &[], split).await;
    assert!(put(&c, 0, "a", "1", None).await);
    for i in 0..3 {
        assert_eq!(get(&c, i, "a").await.unwrap()["value"], json!("1"));
    }
    let (peer, _) = c.split_addrs(1).unwrap();
    let internal = c
        .http
        .post(c.client_url(1, "/internal/v1/read"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(internal, 404, "no internal API on the client port");
    let healthz = c
        .http
        .get(format!("https://{peer}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(healthz, 200, "gossip probes the peer port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_tokens_the_client_api_answers_401_and_403_as_the_token_says() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients");
    let (writer, reader) = ("writer-token-0123456789", "reader-token-0123456789");
    std::fs::write(&file, format!("{writer}\n{reader} read-only\n")).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let c = Cluster::start(3, &["--client-token-file", &file, "--forwarding", "proxy"]);
    let leader = c.bootstrap().await;
    let follower = (leader + 1) % 3;
    let call = |i: usize, method: reqwest::Method, token: Option<&'static str>| {
        let mut req = c
            .http
            .request(method.clone(), c.url(i, "/v1/kv/k"))
            .json(&json!({ "value": "v" }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let (status, body) = call(leader, reqwest::Method::PUT, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("requires client authentication"), "{body}");
    let (status, body) = call(leader, reqwest::Method::PUT, Some("not-a-token-0123456789")).await;
    assert_eq!(
        (status, body.contains("unknown client token")),
        (401, true),
        "{body}"
    );
    let (status, body) = call(leader, reqwest::Method::PUT, Some(reader)).await;
    assert_eq!((status, body.contains("forbidden")), (403, true), "{body}");
    assert_eq!(
        call(leader, reqwest::Method::PUT, Some(writer)).await.0,
        200
    );
    assert_eq!(
        call(leader, reqwest::Method::GET, Some(reader)).await.0,
        200
    );
    // A follower checks the client, then proxies to the leader on the client's behalf.
    assert_eq!(
        call(follower, reqwest::Method::PUT, Some(writer)).await.0,
        200
    );
    assert_eq!(
        call(follower, reqwest::Method::PUT, Some(reader)).await.0,
        403
    );
    assert_eq!(call(follower, reqwest::Method::GET, None).await.0, 401);
    // Probes and the admin API are not client calls.
    let health = c.http.get(c.url(leader, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(c.node_status(leader).await.is_some());
}
