//! rc-history: a client that records a history of a live single-leader cluster for the
//! Porcupine checker (`tests/linearizability`), for fault tests outside cargo (the end-to-end
//! suite's membership section).
//!
//! Clients put unique values and read keys linearizably, each against the node it believes
//! leads; a refusal that names no leader or points elsewhere sends it to the next address. The
//! addresses (`host:port`, one per line) are re-read from `--targets` every 200 ms, so the
//! caller can follow pods that come and go. When `--stop` no longer exists (or after
//! `--max-seconds`), every key is read once more and the history is written to `--out` as JSON:
//! `{"client","op","key","value","found","call","ret","unknown"}`.
//!
//! Outcomes: 200 is done; 307, `no_leader`, `leader_fenced`, `leader_handing_over` and refused
//! connections certainly did nothing (left out); anything else (timeout, `outcome_unknown`, a
//! broken connection) may have happened and is recorded as unknown. Failed reads are left out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Record a linearizability history against a single-leader cluster")]
struct Args {
    /// File with one node address (`host:port`) per line, re-read while running.
    #[arg(long)]
    targets: PathBuf,
    /// Where the JSON history goes.
    #[arg(long)]
    out: PathBuf,
    /// Keep running while this file exists.
    #[arg(long)]
    stop: PathBuf,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// Keys are `<prefix><n>`: histories recorded one after another against one cluster need
    /// distinct keys, or a read would see the previous history's values.
    #[arg(long, default_value = "h")]
    key_prefix: String,
    /// Pause between one client's operations, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// Stop after this long even if `--stop` still exists.
    #[arg(long, default_value_t = 1800)]
    max_seconds: u64,
    /// The cluster CA (PEM): talk HTTPS and verify the nodes with it.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// With --ca-file: the name the nodes' certificate must carry (they are dialled by IP).
    #[arg(long, default_value = "localhost")]
    server_name: String,
}

#[derive(Debug, Clone, Serialize)]
struct Record {
    client: usize,
    op: &'static str,
    key: String,
    value: String,
    found: bool,
    call: i64,
    ret: i64,
    unknown: bool,
}

enum Outcome {
    Done {
        value: Option<String>,
    },
    /// Certainly had no effect (or a read that failed): left out of the history.
    NotApplied,
    Unknown,
}

struct Shared {
    /// `http`, or `https` with --ca-file.
    scheme: &'static str,
    targets: Mutex<Vec<String>>,
    history: Mutex<Vec<Record>>,
    start: Instant,
    acked: AtomicU64,
    unknown: AtomicU64,
}

impl Shared {
    fn now(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }
    fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// The client and the scheme to use: HTTPS verified with `--ca-file`, else plain HTTP.
fn http_client(args: &Args) -> anyhow::Result<(reqwest::Client, &'static str)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_millis(500));
    let Some(ca) = &args.ca_file else {
        return Ok((http.build()?, "http"));
    };
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let tls = rc_tls::client::client_config(&pem, &args.server_name)?;
    Ok((http.use_preconfigured_tls(tls).build()?, "https"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (http, scheme) = http_client(&args)?;
    let shared = Arc::new(Shared {
        scheme,
        targets: Mutex::new(read_targets(&args.targets)),
        history: Mutex::new(Vec::new()),
        start: Instant::now(),
        acked: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
    });
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let running = || args.stop.exists() && Instant::now() < deadline;
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let (shared, http, keys, pause) = (shared.clone(), http.clone(), args.keys, args.pause_ms);
        let prefix = args.key_prefix.clone();
        let stop = args.stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut leader = 0usize;
            let mut n = 0u64;
            while stop.exists() && Instant::now() < deadline {
                n += 1;
                let key = format!("{prefix}{}", (n as usize * 7 + client * 13) % keys);
                let put = n.is_multiple_of(2);
                let value = format!("c{client}-{n}");
                let op = Op {
                    put,
                    key: &key,
                    value: &value,
                };
                run(&shared, &http, client, &mut leader, op).await;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    while running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = read_targets(&args.targets);
        if !fresh.is_empty() {
            if let Ok(mut t) = shared.targets.lock() {
                *t = fresh;
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    // A final read of every key: a write acknowledged and then lost shows up here.
    let mut leader = 0usize;
    for k in 0..args.keys {
        let key = format!("{}{k}", args.key_prefix);
        for _ in 0..50 {
            let before = shared.history.lock().map(|h| h.len()).unwrap_or(0);
            let op = Op {
                put: false,
                key: &key,
                value: "",
            };
            run(&shared, &http, args.clients, &mut leader, op).await;
            if shared.history.lock().map(|h| h.len()).unwrap_or(0) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let history = shared.history.lock().map(|h| h.clone()).unwrap_or_default();
    std::fs::write(&args.out, serde_json::to_vec(&history)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "history: {} operations, {} acknowledged puts, {} unknown outcomes",
        history.len(),
        shared.acked.load(Ordering::Relaxed),
        shared.unknown.load(Ordering::Relaxed)
    );
    Ok(())
}

fn read_targets(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Clone, Copy)]
struct Op<'a> {
    put: bool,
    key: &'a str,
    value: &'a str,
}

/// One operation, against the believed leader and then the others, recorded once.
async fn run(
    shared: &Shared,
    http: &reqwest::Client,
    client: usize,
    leader: &mut usize,
    op: Op<'_>,
) {
    let targets = shared.targets();
    if targets.is_empty() {
        return;
    }
    for attempt in 0..targets.len() {
        let i = (*leader + attempt) % targets.len();
        let call = shared.now();
        let outcome = send(http, shared.scheme, &targets[i], op).await;
        let ret = shared.now();
        let record = |value: String, found: bool, unknown: bool| Record {
            client,
            op: if op.put { "put" } else { "get" },
            key: op.key.to_owned(),
            value,
            found,
            call,
            ret,
            unknown,
        };
        match outcome {
            Outcome::Done { value } => {
                *leader = i;
                let rec = if op.put {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                    record(op.value.to_owned(), true, false)
                } else {
                    let found = value.is_some();
                    record(value.unwrap_or_default(), found, false)
                };
                push(shared, rec);
                return;
            }
            Outcome::NotApplied => continue,
            Outcome::Unknown => {
                if op.put {
                    shared.unknown.fetch_add(1, Ordering::Relaxed);
                    push(shared, record(op.value.to_owned(), true, true));
                }
                return;
            }
        }
    }
}

fn push(shared: &Shared, record: Record) {
    if let Ok(mut h) = shared.history.lock() {
        h.push(record);
    }
}

async fn send(http: &reqwest::Client, scheme: &str, target: &str, op: Op<'_>) -> Outcome {
    let url = if op.put {
        format!("{scheme}://{target}/v1/kv/{}", op.key)
    } else {
        format!(
            "{scheme}://{target}/v1/kv/{}?consistency=linearizable",
            op.key
        )
    };
    let request = if op.put {
        http.put(&url).json(&json!({ "value": op.value }))
    } else {
        http.get(&url)
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Outcome::NotApplied,
        Err(_) if !op.put => return Outcome::NotApplied,
        Err(_) => return Outcome::Unknown,
    };
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let refused = serde_json::from_value::<rc_api::ErrorBody>(body.clone())
        .is_ok_and(|b| b.error.code.write_not_applied());
    match (status, refused) {
        (200, _) => Outcome::Done {
            value: body["value"].as_str().map(str::to_owned),
        },
        (404, _) if !op.put => Outcome::Done { value: None },
        (307, _) | (_, true) => Outcome::NotApplied,
        _ if !op.put => Outcome::NotApplied,
        _ => Outcome::Unknown,
    }
}
