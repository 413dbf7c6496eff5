//! Leaderless fault test with live writers and a recorder: real rc-node processes on loopback
//! (N=3 W=2 R=2) while a seeded schedule kills (-9, then restarts), pauses (SIGSTOP/SIGCONT)
//! and wipes (kill -9, data directory deleted, restart) one member at a time, and the ring goes
//! 3 -> 5 -> 3 (two members join, later two members are decommissioned). Writers keep writing
//! throughout; every attempt and its outcome is recorded. At the end, after `POST /admin/repair`
//! on every remaining member, every acknowledged write must have survived and every replica
//! must hold the same state.
//!
//! `LEADERLESS_FAULTS_SEED=<n>` replays a fault schedule (the seed is printed on every run;
//! timing still differs between runs, the choices of faults, victims and durations do not).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::leaderless::*;
use common::{Cluster, TOKEN};
use rc_api::{LeaderlessValue, MemberState, StreamState};
use serde_json::{json, Value};

/// Both tests run five processes each; on a small machine they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 8;
/// Hard bounds on every writer/reader loop, whatever happens to the controller.
const MAX_RUN: Duration = Duration::from_secs(120);
const MAX_OPS_PER_TASK: u64 = 200_000;
/// Share of client requests sent to any ring member, the one being faulted included.
const STRAY_PERCENT: u64 = 10;

// ---- seeded randomness -----------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn seed() -> u64 {
    match std::env::var("LEADERLESS_FAULTS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("LEADERLESS_FAULTS_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

// ---- the recorder ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    /// 2xx: the write is durable on W owners.
    Acked,
    /// Refused before anything was written (connection refused, no ring): never applied.
    Failed,
    /// Timeout, 5xx after the coordinator wrote, reset: may or may not have landed.
    Unknown,
}

#[derive(Debug, Clone)]
struct Attempt {
    value: String,
    entry: usize,
    start: Duration,
    end: Duration,
    outcome: Outcome,
    /// Siblings mode: the values the read before this write returned (its context covers them).
    read: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    LastWriteWins,
    Siblings,
}

struct Shared {
    t0: Instant,
    addrs: Vec<String>,
    http: reqwest::Client,
    /// Per key, every write attempt in issue order (one writer per key, sequential).
    history: Mutex<BTreeMap<String, Vec<Attempt>>>,
    /// Nodes writers and readers may send to (ring members not being faulted right now).
    targets: Mutex<Vec<usize>>,
    /// The ring members: one request in `STRAY_PERCENT` goes to any of them, faulty or not
    /// (refused by a killed node, stuck in a stopped one, served by a restoring one).
    members: Mutex<Vec<usize>>,
    /// (node, paused at, resumed at): a request stuck in a stopped process runs on resume.
    pauses: Mutex<Vec<(usize, Duration, Option<Duration>)>>,
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
    reads: AtomicU64,
    reads_ok: AtomicU64,
    late_reads: AtomicU64,
}

impl Shared {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn violation(&self, what: String) {
        eprintln!("[{:7.2}s] VIOLATION {what}", self.now().as_secs_f64());
        self.violations.lock().unwrap().push(what);
    }

    fn pick_target(&self, rng: &mut Rng) -> usize {
        let t = if rng.chance(STRAY_PERCENT) {
            self.members.lock().unwrap()
        } else {
            self.targets.lock().unwrap()
        };
        t[rng.below(t.len())]
    }

    fn set_members(&self, nodes: &[usize]) {
        *self.members.lock().unwrap() = nodes.to_vec();
        self.set_targets(nodes);
    }

    fn set_targets(&self, nodes: &[usize]) {
        *self.targets.lock().unwrap() = nodes.to_vec();
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("http://{}{}", self.addrs[node], path)
    }

    /// Index of the last acknowledged attempt on `key` so far.
    fn last_acked(&self, key: &str) -> Option<usize> {
        let h = self.history.lock().unwrap();
        h.get(key)?
            .iter()
            .rposition(|a| a.outcome == Outcome::Acked)
    }

    fn begin(&self, key: &str, value: &str, entry: usize, read: Vec<String>) {
        let start = self.now();
        self.history
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .push(Attempt {
                value: value.to_string(),
                entry,
                start,
                end: start,
                outcome: Outcome::Pending,
                read,
            });
    }

    fn end(&self, key: &str, outcome: Outcome) {
        let end = self.now();
        let mut h = self.history.lock().unwrap();
        let a = h.get_mut(key).unwrap().last_mut().unwrap();
        a.outcome = outcome;
        a.end = end;
    }

    /// An attempt whose outcome is unknown and that was in flight while some node was stopped:
    /// its request can sit in the stopped process and be applied on resume, after later writes
    /// (the client gave up on it). Under last-write-wins it then wins, legitimately.
    fn may_land_late(&self, a: &Attempt) -> bool {
        a.outcome == Outcome::Unknown
            && self
                .pauses
                .lock()
                .unwrap()
                .iter()
                .any(|(_, from, to)| *from < a.end && to.is_none_or(|to| to > a.start))
    }
}

/// Send one write and classify the answer.
async fn put_attempt(
    sh: &Shared,
    node: usize,
    key: &str,
    value: &str,
    ctx: Option<&str>,
) -> Outcome {
    let mut body = json!({ "value": value });
    if let Some(ctx) = ctx {
        body["context"] = json!(ctx);
    }
    let r = sh
        .http
        .put(sh.url(node, &format!("/v1/kv/{key}")))
        .json(&body)
        .send()
        .await;
    match r {
        Ok(resp) if resp.status().is_success() => Outcome::Acked,
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or("").to_string();
            if status < 500 {
                sh.violation(format!(
                    "put {key}={value} via n{node}: unexpected {status} {body}"
                ));
                Outcome::Failed
            } else if code == "no_ring" {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        }
        Err(e) if e.is_connect() => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// `GET /v1/kv/{key}` (default R): `Some(None)` = 404, `None` = the read failed.
async fn read(sh: &Shared, node: usize, key: &str) -> Option<Option<LeaderlessValue>> {
    let resp = sh
        .http
        .get(sh.url(node, &format!("/v1/kv/{key}")))
        .send()
        .await
        .ok()?;
    match resp.status().as_u16() {
        200 => Some(Some(resp.json().await.ok()?)),
        404 => Some(None),
        _ => None,
    }
}

fn keys_of(task: usize) -> Vec<String> {
    (0..KEYS_PER_WRITER)
        .map(|k| format!("k{task}-{k}"))
        .collect()
}

/// Last-write-wins writer: blind sequential writes of increasing values to its own keys.
async fn lww_writer(sh: Arc<Shared>, task: usize, seed: u64) {
    let mut rng = Rng(seed ^ (task as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let keys = keys_of(task);
    for seq in 1..=MAX_OPS_PER_TASK {
        if sh.stop.load(Ordering::Relaxed) || sh.now() > MAX_RUN {
            break;
        }
        let key = &keys[rng.below(keys.len())];
        let node = sh.pick_target(&mut rng);
        let value = format!("w{task}-{seq}");
        sh.begin(key, &value, node, Vec::new());
        let outcome = put_attempt(&sh, node, key, &value, None).await;
        sh.end(key, outcome);
        tokio::time::sleep(rng.ms(0, 3)).await;
    }
}

/// Last-write-wins reader: a quorum read must return the last value acknowledged before it
/// started, or a later attempt.
async fn lww_reader(sh: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed ^ 0x5EED_0F5E_ED00);
    for _ in 0..MAX_OPS_PER_TASK {
        if sh.stop.load(Ordering::Relaxed) || sh.now() > MAX_RUN {
            break;
        }
        let keys = keys_of(rng.below(WRITERS));
        let key = &keys[rng.below(keys.len())];
        let node = sh.pick_target(&mut rng);
        let acked = sh.last_acked(key);
        let started = sh.now();
        sh.reads.fetch_add(1, Ordering::Relaxed);
        let got = read(&sh, node, key).await;
        tokio::time::sleep(rng.ms(2, 8)).await;
        let Some(got) = got else { continue };
        sh.reads_ok.fetch_add(1, Ordering::Relaxed);
        let h = sh
            .history
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default();
        let at = format!("read of {key} via n{node} at {:.2}s", started.as_secs_f64());
        match (got, acked) {
            (None, None) => {}
            (None, Some(i)) => sh.violation(format!(
                "{at}: absent, but {} was acknowledged at {:.2}s",
                h[i].value,
                h[i].end.as_secs_f64()
            )),
            (Some(v), acked) => {
                if v.siblings.len() != 1 {
                    sh.violation(format!("{at}: last-write-wins returned {:?}", v.siblings));
                    continue;
                }
                let value = &v.siblings[0];
                let Some(j) = h.iter().position(|a| &a.value == value) else {
                    sh.violation(format!("{at}: {value} was never written"));
                    continue;
                };
                if h[j].outcome == Outcome::Failed {
                    sh.violation(format!("{at}: {value} was refused, yet it is there"));
                }
                if let Some(i) = acked.filter(|i| j < *i) {
                    if sh.may_land_late(&h[j]) {
                        sh.late_reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sh.violation(format!(
                            "{at}: stale {value} ({:?}, {:.2}-{:.2}s via n{}), but {} was acknowledged at {:.2}s (via n{})",
                            h[j].outcome,
                            h[j].start.as_secs_f64(),
                            h[j].end.as_secs_f64(),
                            h[j].entry,
                            h[i].value,
                            h[i].end.as_secs_f64(),
                            h[i].entry
                        ));
                    }
                }
            }
        }
    }
}

/// The values `read` covers: what was read and, transitively, what those writes had read.
fn ancestors(h: &[Attempt], read: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = read.to_vec();
    while let Some(v) = todo.pop() {
        if out.insert(v.clone()) {
            if let Some(a) = h.iter().find(|a| a.value == v) {
                todo.extend(a.read.iter().cloned());
            }
        }
    }
    out
}

/// Siblings writer: read (quorum), then write with the context it read. The read must cover
/// the last value acknowledged before it started.
async fn siblings_writer(sh: Arc<Shared>, task: usize, seed: u64) {
    let mut rng = Rng(seed ^ (task as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let keys = keys_of(task);
    for seq in 1..=MAX_OPS_PER_TASK {
        if sh.stop.load(Ordering::Relaxed) || sh.now() > MAX_RUN {
            break;
        }
        let key = &keys[rng.below(keys.len())];
        let node = sh.pick_target(&mut rng);
        let acked = sh.last_acked(key);
        let started = sh.now();
        sh.reads.fetch_add(1, Ordering::Relaxed);
        let Some(got) = read(&sh, node, key).await else {
            tokio::time::sleep(rng.ms(5, 20)).await;
            continue;
        };
        sh.reads_ok.fetch_add(1, Ordering::Relaxed);
        let (read_set, ctx) = match &got {
            Some(v) => (v.siblings.clone(), Some(v.context.clone())),
            None => (Vec::new(), None),
        };
        {
            let h = sh
                .history
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .unwrap_or_default();
            let at = format!("read of {key} via n{node} at {:.2}s", started.as_secs_f64());
            for v in &read_set {
                if !h
                    .iter()
                    .any(|a| &a.value == v && a.outcome != Outcome::Failed)
                {
                    sh.violation(format!("{at}: {v} was never written (or was refused)"));
                }
            }
            if let Some(i) = acked {
                let covered = ancestors(&h, &read_set);
                if !covered.contains(&h[i].value) {
                    sh.violation(format!(
                        "{at}: {:?} neither holds nor supersedes {}, acknowledged at {:.2}s (via n{})",
                        read_set,
                        h[i].value,
                        h[i].end.as_secs_f64(),
                        h[i].entry
                    ));
                }
            }
        }
        let value = format!("w{task}-{seq}");
        let node = sh.pick_target(&mut rng);
        sh.begin(key, &value, node, read_set);
        let outcome = put_attempt(&sh, node, key, &value, ctx.as_deref()).await;
        sh.end(key, outcome);
        tokio::time::sleep(rng.ms(0, 3)).await;
    }
}

// ---- faults and membership changes -----------------------------------------------------------

#[derive(Default)]
struct Faults {
    kills: usize,
    pauses: usize,
    wipes: usize,
    /// Every fault and ring change, timestamped, for the failure message.
    events: Vec<String>,
}

fn log(sh: &Shared, f: &mut Faults, what: String) {
    let line = format!("[{:7.2}s] {what}", sh.now().as_secs_f64());
    eprintln!("{line}");
    f.events.push(line);
}

/// Faults on `members` for `dur`, one node at a time; every fault is healed before the next
/// and before returning. With `wipe`, one of them is a wipe.
#[allow(clippy::too_many_arguments)]
async fn fault_phase(
    c: &mut Cluster,
    sh: &Shared,
    rng: &mut Rng,
    f: &mut Faults,
    members: &[usize],
    ring_version: u64,
    dur: Duration,
    mut wipe: bool,
) {
    let end = Instant::now() + dur;
    for _ in 0..1000 {
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(rng.ms(150, 600)).await;
        let v = members[rng.below(members.len())];
        let left = end.saturating_duration_since(Instant::now());
        let others: Vec<usize> = members.iter().copied().filter(|m| *m != v).collect();
        let hold = rng.ms(300, 1800);
        if wipe && (rng.chance(35) || left < Duration::from_secs(3)) {
            wipe = false;
            f.wipes += 1;
            sh.set_targets(&others);
            c.kill9(v);
            std::fs::remove_dir_all(&c.nodes[v].data).unwrap();
            log(sh, f, format!("wipe n{v} (kill -9, data dir deleted)"));
            tokio::time::sleep(hold.min(Duration::from_millis(600))).await;
            c.spawn(v);
            c.wait_up(v).await;
            // Clients may use it at once: it must answer no reads as an owner until restored.
            sh.set_targets(members);
            log(sh, f, format!("n{v} restarted empty"));
            wait_status(c, v, "the wiped node restores", |s| {
                s.ring_version == ring_version && !s.restoring
            })
            .await;
            log(sh, f, format!("n{v} restored its ranges"));
        } else if rng.chance(50) {
            f.kills += 1;
            sh.set_targets(&others);
            c.kill9(v);
            log(sh, f, format!("kill -9 n{v} for {}ms", hold.as_millis()));
            tokio::time::sleep(hold).await;
            c.spawn(v);
            c.wait_up(v).await;
            sh.set_targets(members);
            log(sh, f, format!("n{v} restarted"));
        } else {
            f.pauses += 1;
            sh.set_targets(&others);
            c.pause(v);
            let at = sh.now();
            let slot = {
                let mut p = sh.pauses.lock().unwrap();
                p.push((v, at, None));
                p.len() - 1
            };
            log(sh, f, format!("SIGSTOP n{v} for {}ms", hold.as_millis()));
            tokio::time::sleep(hold).await;
            c.resume(v);
            sh.pauses.lock().unwrap()[slot].2 = Some(sh.now());
            sh.set_targets(members);
            log(sh, f, format!("SIGCONT n{v}"));
        }
    }
}

async fn push_all(c: &Cluster, nodes: &[usize], ring: &Value) {
    for &i in nodes {
        let r = push_ring(c, i, ring).await;
        let status = r.status();
        assert!(
            status.is_success(),
            "ring push to n{i}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
}

async fn decommission(c: &Cluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut posted = 0;
    loop {
        let state = c
            .node_status(i)
            .await
            .and_then(|s| s.leaderless().map(|l| l.stream));
        match state {
            Some(StreamState::Decommissioned) => return,
            Some(StreamState::Streaming) => {}
            _ if posted < 5 => {
                posted += 1;
                let r = c
                    .http
                    .post(c.url(i, "/admin/decommission"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status().is_success(),
                    "decommission n{i}: {}",
                    r.text().await.unwrap_or_default()
                );
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "n{i} was never decommissioned ({state:?})\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn repair(c: &Cluster, i: usize) -> Value {
    let r = c
        .http
        .post(c.url(i, "/admin/repair"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "repair on n{i}: {}", r.status());
    r.json().await.unwrap()
}

async fn get_r3(c: &Cluster, i: usize, key: &str) -> Result<Option<LeaderlessValue>, String> {
    let resp = c
        .http
        .get(c.url(i, &format!("/v1/kv/{key}?r=3")))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 => Ok(Some(resp.json().await.map_err(|e| e.to_string())?)),
        404 => Ok(None),
        s => Err(format!("{s} {}", resp.text().await.unwrap_or_default())),
    }
}

/// Keep the node logs of a failed run where they survive the temp dir, and quote the lines
/// about the keys involved.
fn keep_logs(c: &Cluster, tag: &str, keys: &BTreeSet<String>) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("leaderless_faults-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut quoted = String::new();
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        std::fs::write(dir.join(format!("{}.log", n.id)), &text).unwrap();
        for line in text
            .lines()
            .filter(|l| keys.iter().any(|k| l.contains(k.as_str())))
            .take(20)
        {
            let _ = writeln!(quoted, "{}: {line}", n.id);
        }
    }
    format!("node logs kept in {}\n{quoted}", dir.display())
}

// ---- the test --------------------------------------------------------------------------------

async fn run(mode: Mode) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let tag = format!(
        "{}-{seed}",
        if mode == Mode::LastWriteWins {
            "lww"
        } else {
            "siblings"
        }
    );
    eprintln!("leaderless_faults {mode:?}: seed {seed} (replay: LEADERLESS_FAULTS_SEED={seed})");
    let mut rng = Rng(seed);
    let conflict = match mode {
        Mode::LastWriteWins => "last-write-wins",
        Mode::Siblings => "siblings",
    };
    let args = [
        "--mode",
        "leaderless",
        "--anti-entropy-interval-seconds",
        "2",
        "--conflict-resolution",
        conflict,
        // Background snapshots while nodes are killed, paused and wiped.
        "--snapshot-every",
        "300",
    ];
    // Extra rc-node flags for experiments (e.g. `--write-quorum 1 --read-quorum 1` shows
    // what the checks catch when quorums do not overlap).
    let extra = std::env::var("LEADERLESS_FAULTS_ARGS").unwrap_or_default();
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(extra.split_whitespace())
        .collect();
    let mut c = Cluster::start(5, &args);
    for i in 0..5 {
        c.wait_up(i).await;
    }
    let normal = |ids: &[usize]| -> Vec<(usize, MemberState)> {
        ids.iter().map(|i| (*i, MemberState::Normal)).collect()
    };
    let mut version = 1;
    push_all(&c, &[0, 1, 2], &ring(&c, version, &normal(&[0, 1, 2]))).await;
    for i in 0..3 {
        wait_status(&c, i, "ring v1", |s| s.ring_version == 1 && !s.restoring).await;
    }
    // The fault schedule: which phase wipes a node, which two members leave.
    let wipe_phase = rng.below(3);
    let mut leavers: Vec<usize> = Vec::new();
    while leavers.len() < 2 {
        let l = rng.below(5);
        if !leavers.contains(&l) {
            leavers.push(l);
        }
    }
    leavers.sort();
    let remaining: Vec<usize> = (0..5).filter(|i| !leavers.contains(i)).collect();
    eprintln!("schedule: wipe in phase {wipe_phase}, leaving {leavers:?}, final {remaining:?}");

    let sh = Arc::new(Shared {
        t0: Instant::now(),
        addrs: (0..5).map(|i| c.addr(i)).collect(),
        http: c.http.clone(),
        history: Mutex::default(),
        targets: Mutex::new(vec![0, 1, 2]),
        members: Mutex::new(vec![0, 1, 2]),
        pauses: Mutex::default(),
        violations: Mutex::default(),
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        reads_ok: AtomicU64::new(0),
        late_reads: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let sh = sh.clone();
        tasks.push(match mode {
            Mode::LastWriteWins => tokio::spawn(lww_writer(sh, t, seed)),
            Mode::Siblings => tokio::spawn(siblings_writer(sh, t, seed)),
        });
    }
    if mode == Mode::LastWriteWins {
        tasks.push(tokio::spawn(lww_reader(sh.clone(), seed)));
    }
    let mut f = Faults::default();
    let phase = Duration::from_secs(5);

    // Phase A: three members.
    fault_phase(
        &mut c,
        &sh,
        &mut rng,
        &mut f,
        &[0, 1, 2],
        version,
        phase,
        wipe_phase == 0,
    )
    .await;

    // 3 -> 5: n3 and n4 join (no faults while they stream; the writers keep going).
    version += 1;
    let mut joining = normal(&[0, 1, 2]);
    joining.extend([(3, MemberState::Joining), (4, MemberState::Joining)]);
    log(&sh, &mut f, format!("ring v{version}: n3, n4 joining"));
    push_all(&c, &[0, 1, 2, 3, 4], &ring(&c, version, &joining)).await;
    for j in [3, 4] {
        wait_status(&c, j, "joined", |s| s.stream == StreamState::Joined).await;
    }
    version += 1;
    let all: Vec<usize> = (0..5).collect();
    push_all(&c, &all, &ring(&c, version, &normal(&all))).await;
    sh.set_members(&all);
    log(&sh, &mut f, format!("ring v{version}: five normal members"));

    // Phase C: five members.
    fault_phase(
        &mut c,
        &sh,
        &mut rng,
        &mut f,
        &all,
        version,
        phase,
        wipe_phase == 1,
    )
    .await;

    // 5 -> 3: two members leave.
    version += 1;
    let leaving: Vec<(usize, MemberState)> = all
        .iter()
        .map(|i| {
            let s = if leavers.contains(i) {
                MemberState::Leaving
            } else {
                MemberState::Normal
            };
            (*i, s)
        })
        .collect();
    log(&sh, &mut f, format!("ring v{version}: {leavers:?} leaving"));
    push_all(&c, &all, &ring(&c, version, &leaving)).await;
    for &l in &leavers {
        decommission(&c, l).await;
    }
    log(&sh, &mut f, format!("{leavers:?} decommissioned"));
    version += 1;
    push_all(&c, &all, &ring(&c, version, &normal(&remaining))).await;
    sh.set_members(&remaining);
    log(&sh, &mut f, format!("ring v{version}: {remaining:?}"));
    // The writers' requests still in flight through a leaver finish before it goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for &l in &leavers {
        c.kill9(l);
    }

    // Phase E: the three remaining members.
    fault_phase(
        &mut c,
        &sh,
        &mut rng,
        &mut f,
        &remaining,
        version,
        phase,
        wipe_phase == 2,
    )
    .await;

    // Writers stop; repair; check.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sh.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a writer did not stop")
            .unwrap();
    }
    log(&sh, &mut f, "writers stopped".into());
    for &i in &remaining {
        wait_status(&c, i, "final ring, restored", |s| {
            s.ring_version == version && !s.restoring
        })
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut queued = 0;
        for &i in &remaining {
            queued += lstatus(&c, i).await.hints_queued;
        }
        if queued == 0 {
            break;
        }
        if Instant::now() > deadline {
            log(
                &sh,
                &mut f,
                format!("{queued} hints still queued; repairing anyway"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut repaired = 0;
    for &i in &remaining {
        let r = repair(&c, i).await;
        repaired += r["keys_repaired"].as_u64().unwrap_or(0);
    }
    log(&sh, &mut f, format!("repair: {repaired} keys repaired"));

    let history = sh.history.lock().unwrap().clone();
    let mut bad_keys = BTreeSet::new();
    let mut late_final = 0;
    for (key, h) in &history {
        let mut states = Vec::new();
        for &i in &remaining {
            states.push((i, local(&c, i, key).await));
        }
        let present: Vec<usize> = states
            .iter()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| *i)
            .collect();
        let last_acked = h.iter().rposition(|a| a.outcome == Outcome::Acked);
        if present.len() != remaining.len() && !(present.is_empty() && last_acked.is_none()) {
            sh.violation(format!(
                "{key}: on {present:?} of the final members {remaining:?}"
            ));
            bad_keys.insert(key.clone());
        }
        let first = states.iter().find_map(|(_, s)| s.clone());
        for (i, s) in &states {
            if s.is_some() && s != &first {
                sh.violation(format!(
                    "{key}: replicas differ after repair: n{} {} vs n{i} {}",
                    present[0],
                    first.clone().unwrap_or_default(),
                    s.clone().unwrap_or_default()
                ));
                bad_keys.insert(key.clone());
            }
        }
        // What a full quorum read answers must be that same state.
        let read = get_r3(&c, remaining[0], key).await;
        let final_values: Vec<String> = match &read {
            Ok(Some(v)) => {
                let mut s = v.siblings.clone();
                s.sort();
                s
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                sh.violation(format!("{key}: r=3 read failed after repair: {e}"));
                bad_keys.insert(key.clone());
                continue;
            }
        };
        let local_values = first.as_ref().map(values_of).unwrap_or_default();
        if local_values != final_values {
            sh.violation(format!(
                "{key}: r=3 read {final_values:?} but the replicas hold {local_values:?}"
            ));
            bad_keys.insert(key.clone());
        }
        for v in &final_values {
            match h.iter().find(|a| &a.value == v) {
                None => sh.violation(format!("{key}: final {v} was never written")),
                Some(a) if a.outcome == Outcome::Failed => {
                    sh.violation(format!("{key}: final {v} was refused, yet it is there"))
                }
                Some(_) => continue,
            }
            bad_keys.insert(key.clone());
        }
        let describe = |i: usize| {
            format!(
                "{} ({:?}, {:.2}-{:.2}s via n{})",
                h[i].value,
                h[i].outcome,
                h[i].start.as_secs_f64(),
                h[i].end.as_secs_f64(),
                h[i].entry
            )
        };
        match mode {
            Mode::LastWriteWins => match (final_values.as_slice(), last_acked) {
                ([], None) => {}
                ([], Some(i)) => {
                    sh.violation(format!(
                        "{key}: absent after repair; last acknowledged {}",
                        describe(i)
                    ));
                    bad_keys.insert(key.clone());
                }
                ([v], acked) => {
                    let j = h.iter().position(|a| &a.value == v);
                    if let (Some(j), Some(i)) = (j, acked) {
                        if j < i {
                            if sh.may_land_late(&h[j]) {
                                late_final += 1;
                                eprintln!(
                                    "{key}: final {} is older than the last acknowledged {}, but was in flight across a pause (may land late)",
                                    describe(j),
                                    describe(i)
                                );
                            } else {
                                sh.violation(format!(
                                    "{key}: final {} but {} was acknowledged later (lost write)",
                                    describe(j),
                                    describe(i)
                                ));
                                bad_keys.insert(key.clone());
                            }
                        }
                    }
                }
                (many, _) => {
                    sh.violation(format!("{key}: last-write-wins kept {many:?}"));
                    bad_keys.insert(key.clone());
                }
            },
            Mode::Siblings => {
                // Every acknowledged value is present or superseded by one that is.
                let mut covered: BTreeSet<String> = final_values.iter().cloned().collect();
                for v in &final_values {
                    if let Some(a) = h.iter().find(|a| &a.value == v) {
                        covered.extend(ancestors(h, &a.read));
                    }
                }
                for (i, a) in h.iter().enumerate() {
                    if a.outcome == Outcome::Acked && !covered.contains(&a.value) {
                        sh.violation(format!(
                            "{key}: acknowledged {} is neither in {final_values:?} nor superseded by them",
                            describe(i)
                        ));
                        bad_keys.insert(key.clone());
                    }
                }
            }
        }
    }

    let attempted: usize = history.values().map(Vec::len).sum();
    let count = |o: Outcome| {
        history
            .values()
            .flatten()
            .filter(|a| a.outcome == o)
            .count()
    };
    let violations = sh.violations.lock().unwrap().clone();
    eprintln!(
        "SUMMARY leaderless_faults {mode:?} seed={seed}: {attempted} writes attempted, {} acked, {} unknown, {} refused on {} keys; reads {} ({} answered, {} saw a late-landing write); faults {} (kills {}, pauses {}, wipes {}), ring 3->5->3 leaving {leavers:?}; {late_final} keys end on a late-landing write; {} violations; {:.1}s",
        count(Outcome::Acked),
        count(Outcome::Unknown),
        count(Outcome::Failed),
        history.len(),
        sh.reads.load(Ordering::Relaxed),
        sh.reads_ok.load(Ordering::Relaxed),
        sh.late_reads.load(Ordering::Relaxed),
        f.kills + f.pauses + f.wipes,
        f.kills,
        f.pauses,
        f.wipes,
        violations.len(),
        sh.now().as_secs_f64(),
    );
    assert!(
        count(Outcome::Acked) > 100,
        "too few writes acknowledged to mean anything"
    );
    if !violations.is_empty() {
        let kept = keep_logs(&c, &tag, &bad_keys);
        panic!(
            "seed {seed}: {} violations (replay: LEADERLESS_FAULTS_SEED={seed})\n{}\nfaults:\n{}\n{kept}",
            violations.len(),
            violations.iter().take(40).cloned().collect::<Vec<_>>().join("\n"),
            f.events.join("\n"),
        );
    }
}

/// Visible values of a key state as `local` returns it (tombstones excluded), sorted.
fn values_of(state: &Value) -> Vec<String> {
    let mut out: Vec<String> = state["siblings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_write_wins_keeps_every_acknowledged_write_through_kills_pauses_a_wipe_and_3_5_3() {
    run(Mode::LastWriteWins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_keep_every_acknowledged_value_through_kills_pauses_a_wipe_and_3_5_3() {
    run(Mode::Siblings).await;
}
