//! Concurrent clients that record every operation (invoke, ok, fail, unknown) and the
//! Porcupine check of the resulting history.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    pub op: &'static str,
    pub key: String,
    pub value: String,
    pub found: bool,
    pub call: u64,
    pub ret: u64,
    pub unknown: bool,
}

#[derive(Default, Debug)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    pub counts: Mutex<Counts>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            counts: Mutex::default(),
        })
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(&self, op: Op) {
        let mut c = self.counts.lock().unwrap();
        if op.unknown {
            c.unknown += 1;
        } else {
            c.ok += 1;
        }
        self.ops.lock().unwrap().push(op);
    }

    pub fn failed(&self) {
        self.counts.lock().unwrap().failed += 1;
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

/// Addresses clients may send to; tests update it as nodes die and return.
pub type Targets = Arc<Mutex<Vec<String>>>;

/// Run `clients` concurrent clients on `keys` keys until `stop` is set (or 60 s pass).
pub fn spawn_clients(
    history: Arc<History>,
    targets: Targets,
    clients: usize,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|client| {
            let (history, targets, stop) = (history.clone(), targets.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .timeout(Duration::from_millis(1500))
                    .build()
                    .unwrap();
                let mut rng = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let target = {
                        let t = targets.lock().unwrap();
                        t[(rng % t.len() as u64) as usize].clone()
                    };
                    let key = format!("k{}", (rng >> 8) % keys as u64);
                    n += 1;
                    if (rng >> 16).is_multiple_of(2) {
                        let value = format!("c{client}-{n}");
                        put_op(&http, &history, client, &target, key, value).await;
                    } else {
                        get_op(&http, &history, client, &target, key).await;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

async fn put_op(
    http: &reqwest::Client,
    h: &History,
    client: usize,
    target: &str,
    key: String,
    value: String,
) {
    let call = h.now();
    let r = http
        .put(format!("http://{target}/v1/kv/{key}"))
        .json(&json!({ "value": value }))
        .send()
        .await;
    let unknown = match r {
        Ok(resp) if resp.status().is_success() => false,
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let code = serde_json::from_value::<rc_api::ErrorBody>(body.clone())
                .map(|b| b.error.code)
                .unwrap_or(rc_api::ErrorCode::Unknown);
            match code {
                // Refused before anything was appended: certainly not applied.
                c if c.write_not_applied() => {
                    h.failed();
                    return;
                }
                rc_api::ErrorCode::OutcomeUnknown => true,
                _ => panic!("unexpected answer to a put: {status} {body}"),
            }
        }
        // Never connected: the request was not sent.
        Err(e) if e.is_connect() => {
            h.failed();
            return;
        }
        Err(_) => true,
    };
    let ret = h.now();
    h.record(Op {
        client,
        op: "put",
        key,
        value,
        found: true,
        call,
        ret,
        unknown,
    });
}

async fn get_op(http: &reqwest::Client, h: &History, client: usize, target: &str, key: String) {
    let call = h.now();
    let r = http
        .get(format!("http://{target}/v1/kv/{key}"))
        .send()
        .await;
    let (found, value) = match r {
        Ok(resp) if resp.status().as_u16() == 200 => {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            (true, v["value"].as_str().unwrap_or_default().to_string())
        }
        Ok(resp) if resp.status().as_u16() == 404 => (false, String::new()),
        // A failed read has no effect; leave it out of the history.
        _ => {
            h.failed();
            return;
        }
    };
    let ret = h.now();
    h.record(Op {
        client,
        op: "get",
        key,
        value,
        found,
        call,
        ret,
        unknown: false,
    });
}

fn checker() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lincheck");
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/linearizability");
        let status = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .status()
            .expect("the Go toolchain is needed to build the Porcupine checker");
        assert!(status.success(), "building the Porcupine checker failed");
        out
    })
}

/// Run Porcupine on `ops`. `true` = linearizable.
pub fn linearizable(ops: &[Op]) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(ops).unwrap()).unwrap();
    let out = Command::new(checker())
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("porcupine: {}", text.trim());
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!(
            "checker failed ({other:?}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
