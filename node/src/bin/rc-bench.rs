//! rc-bench: start a local 3-node rc-node cluster and measure it (a benchmark, not a test).
//!
//! Prints write and read throughput and p50/p99 latency at 1, 16 and 64 concurrent clients for
//! `Async` and `Quorum` replication, and the unavailability window of a leader kill with an
//! immediate promote. With `--etcd`, runs the same load against a 3-member etcd cluster
//! (JSON gateway) on this machine and prints our figures over etcd's.
//!
//! Run: `cargo run --release -p rc-node --bin rc-bench -- [--etcd] [--seconds 3]`

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

const TOKEN: &str = "bench-token-0123456789";

#[derive(Parser, Debug)]
#[command(about = "Benchmark a local 3-node rc-node cluster (optionally against etcd)")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Concurrent client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Also run the load against a 3-member etcd cluster.
    #[arg(long)]
    etcd: bool,
    /// etcd binary (default: $RC_KUBE_BIN/etcd, ~/.cache/rc-kube/*/etcd, then PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// What to measure: single-leader `async`, `quorum`, and `leaderless` (N=3, W=2, R=2).
    #[arg(long, value_delimiter = ',', default_value = "async,quorum,leaderless")]
    modes: Vec<String>,
    /// Keys (1 KiB values) on the 3 members before a fourth joins, for the join's streaming rate.
    #[arg(long, default_value_t = 50_000)]
    join_keys: usize,
}

/// Processes started here; killed by PID on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[derive(Clone, Copy)]
enum Target {
    Rc,
    Etcd,
}

#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn wait_http(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer within 20 s")
}

struct RcCluster {
    addrs: Vec<String>,
    procs: Procs,
    _dir: tempfile::TempDir,
}

fn node_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("exe dir")?.join("rc-node");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p rc-node`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Start three rc-node processes with `flags` on free loopback ports; wait until they answer.
async fn spawn_nodes(http: &reqwest::Client, flags: &[&str]) -> anyhow::Result<RcCluster> {
    spawn_n_nodes(http, 3, flags).await
}

async fn spawn_n_nodes(
    http: &reqwest::Client,
    n: usize,
    flags: &[&str],
) -> anyhow::Result<RcCluster> {
    let dir = tempfile::tempdir()?;
    let bin = node_bin()?;
    let mut procs = Procs(Vec::new());
    let mut addrs = Vec::new();
    for i in 0..n {
        let addr = format!("127.0.0.1:{}", free_port()?);
        procs.0.push(
            Command::new(&bin)
                .args([
                    "--node-id",
                    &format!("n{i}"),
                    "--listen",
                    &addr,
                    "--admin-token",
                    TOKEN,
                ])
                .args(["--log-level", "warn"])
                .args(flags)
                .arg("--data-dir")
                .arg(dir.path().join(format!("n{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        addrs.push(addr);
    }
    for a in &addrs {
        wait_http(http, &format!("http://{a}/healthz")).await?;
    }
    Ok(RcCluster {
        addrs,
        procs,
        _dir: dir,
    })
}

async fn start_rc(http: &reqwest::Client, replication: &str) -> anyhow::Result<RcCluster> {
    let c = spawn_nodes(http, &["--replication", replication]).await?;
    promote(http, &c.addrs, 0, 1, &[0, 1, 2]).await?;
    Ok(c)
}

/// The operator's failover steps: fence `alive` at `epoch`, promote `leader`, others follow.
async fn promote(
    http: &reqwest::Client,
    addrs: &[String],
    leader: usize,
    epoch: u64,
    alive: &[usize],
) -> anyhow::Result<()> {
    for &i in alive {
        http.post(format!("http://{}/admin/epoch", addrs[i]))
            .bearer_auth(TOKEN)
            .json(&json!({"epoch": epoch}))
            .send()
            .await?;
    }
    let followers: Vec<_> = (0..addrs.len())
        .filter(|j| *j != leader)
        .map(|j| json!({"id": format!("n{j}"), "address": addrs[j]}))
        .collect();
    let r = http
        .post(format!("http://{}/admin/promote", addrs[leader]))
        .bearer_auth(TOKEN)
        .json(&json!({"epoch": epoch, "followers": followers}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("promote failed: {}", r.text().await?);
    }
    // Wait until the leader serves linearizable reads (its no-op committed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let r = http
            .get(format!("http://{}/v1/kv/warmup", addrs[leader]))
            .send()
            .await?;
        if r.status().as_u16() == 404 || r.status().is_success() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("leader did not become ready")
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn one_op(
    http: &reqwest::Client,
    target: Target,
    addr: &str,
    write: bool,
    key: &str,
) -> bool {
    let r = match (target, write) {
        (Target::Rc, true) => {
            http.put(format!("http://{addr}/v1/kv/{key}"))
                .json(&json!({"value": "0123456789abcdef"}))
                .send()
                .await
        }
        (Target::Rc, false) => http.get(format!("http://{addr}/v1/kv/{key}")).send().await,
        (Target::Etcd, true) => {
            http.post(format!("http://{addr}/v3/kv/put"))
                .json(&json!({"key": b64(key), "value": b64("0123456789abcdef")}))
                .send()
                .await
        }
        (Target::Etcd, false) => {
            http.post(format!("http://{addr}/v3/kv/range"))
                .json(&json!({"key": b64(key)}))
                .send()
                .await
        }
    };
    r.is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 404)
}

/// `clients` closed-loop clients for `secs` seconds against `addr`.
async fn load(target: Target, addrs: &[String], clients: usize, secs: u64, write: bool) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, errors, addr) = (stop.clone(), errors.clone(), addrs[c % addrs.len()].clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{c}-{}", n % 1000);
                n += 1;
                let t = Instant::now();
                if one_op(&http, target, &addr, write, &key).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    if all.is_empty() {
        return Figures::default();
    }
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    let errs = errors.load(Ordering::Relaxed);
    if errs > 0 {
        eprintln!("  ({errs} failed requests)");
    }
    Figures {
        ops_per_s: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn row(label: &str, f: Figures, base: Option<Figures>) {
    match base {
        Some(b) if b.ops_per_s > 0.0 => println!(
            "{label:<34} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms   x{:.2} throughput, x{:.2} p50 vs etcd",
            f.ops_per_s, f.p50_ms, f.p99_ms, f.ops_per_s / b.ops_per_s, f.p50_ms / b.p50_ms.max(1e-9)
        ),
        _ => println!("{label:<34} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms", f.ops_per_s, f.p50_ms, f.p99_ms),
    }
}

fn etcd_bin(arg: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    if let Ok(dir) = std::env::var("RC_KUBE_BIN") {
        return Ok(Path::new(&dir).join("etcd"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let cache = Path::new(&home).join(".cache/rc-kube");
        if let Ok(rd) = std::fs::read_dir(&cache) {
            for e in rd.flatten() {
                let p = e.path().join("etcd");
                if p.exists() {
                    return Ok(p);
                }
            }
        }
    }
    Ok(PathBuf::from("etcd"))
}

async fn start_etcd(
    http: &reqwest::Client,
    bin: &Path,
) -> anyhow::Result<(Vec<String>, Procs, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port()?, free_port()?));
    }
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Procs(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        procs.0.push(
            Command::new(bin)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args([
                    "--initial-cluster",
                    &cluster.join(","),
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    let addrs: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("127.0.0.1:{c}"))
        .collect();
    for a in &addrs {
        wait_http(http, &format!("http://{a}/health")).await?;
    }
    Ok((addrs, procs, dir))
}

/// Find the etcd leader's client address (the gateway forwards, but the leader avoids a hop).
async fn etcd_leader(http: &reqwest::Client, addrs: &[String]) -> String {
    for a in addrs {
        if let Ok(r) = http
            .post(format!("http://{a}/v3/maintenance/status"))
            .json(&json!({}))
            .send()
            .await
        {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["leader"] == v["header"]["member_id"] {
                    return a.clone();
                }
            }
        }
    }
    addrs[0].clone()
}

async fn failover_window(http: &reqwest::Client) -> anyhow::Result<Duration> {
    let mut c = start_rc(http, "quorum").await?;
    // Kill the leader, then do exactly what the operator does, without detection delay.
    let killed = Instant::now();
    let _ = c.procs.0[0].kill();
    let _ = c.procs.0[0].wait();
    promote(http, &c.addrs, 1, 2, &[1, 2]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = http
            .put(format!("http://{}/v1/kv/after-failover", c.addrs[1]))
            .json(&json!({"value": "x"}))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("no write succeeded within 10 s of the failover");
        }
    }
    Ok(killed.elapsed())
}

/// Leaderless: 3 nodes, N=3 W=2 R=2, clients spread over every coordinator; then one node down.
async fn bench_leaderless(http: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let RcCluster {
        addrs,
        mut procs,
        _dir,
    } = spawn_nodes(http, &["--mode", "leaderless"]).await?;
    let members: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"id": format!("n{i}"), "address": a, "state": "normal"}))
        .collect();
    push_ring(http, &addrs, 1, &members).await?;
    println!("rc-node leaderless, 3 nodes, N=3 W=2 R=2, last-write-wins, fsync=always");
    for &clients in &args.clients {
        let w = load(Target::Rc, &addrs, clients, args.seconds, true).await;
        row(&format!("leaderless put, {clients} clients"), w, None);
        let r = load(Target::Rc, &addrs, clients, args.seconds, false).await;
        row(&format!("leaderless get, {clients} clients"), r, None);
    }
    let _ = procs.0[2].kill();
    let _ = procs.0[2].wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = &addrs[..2];
    let w = load(Target::Rc, alive, 16, args.seconds, true).await;
    row("leaderless put, 16 clients, 1 node down", w, None);
    let r = load(Target::Rc, alive, 16, args.seconds, false).await;
    row("leaderless get, 16 clients, 1 node down", r, None);
    Ok(())
}

/// Push ring `version` to every node at `addrs`, then wait until each has it and has restored
/// (a node with an empty disk streams its ranges before it serves reads).
async fn push_ring(
    http: &reqwest::Client,
    addrs: &[String],
    version: u64,
    members: &[serde_json::Value],
) -> anyhow::Result<()> {
    for a in addrs {
        http.put(format!("http://{a}/admin/ring"))
            .bearer_auth(TOKEN)
            .json(&json!({"version": version, "members": members}))
            .send()
            .await?
            .error_for_status()?;
    }
    for a in addrs {
        wait_leaderless(http, a, |s| {
            s["ring_version"] == version && s["restoring"] == false
        })
        .await?;
    }
    Ok(())
}

/// Poll `/admin/status` of a leaderless node until `check` holds for its `leaderless` part.
async fn wait_leaderless(
    http: &reqwest::Client,
    addr: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://{addr}/admin/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if check(&v["leaderless"]) {
                    return Ok(v["leaderless"].clone());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr}: leaderless status never reached the expected state")
}

/// A join's streaming rate: 3 members hold `keys` keys of `value_bytes`; a fourth joins and
/// streams every range it will own (page by page from each member).
async fn bench_join(http: &reqwest::Client, keys: usize, value_bytes: usize) -> anyhow::Result<()> {
    let RcCluster {
        addrs,
        procs: _procs,
        _dir,
    } = spawn_n_nodes(http, 4, &["--mode", "leaderless"]).await?;
    let member =
        |i: usize, state: &str| json!({"id": format!("n{i}"), "address": addrs[i], "state": state});
    let three: Vec<_> = (0..3).map(|i| member(i, "normal")).collect();
    push_ring(http, &addrs[..3], 1, &three).await?;
    let value = "x".repeat(value_bytes);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (http, addr, value, next) = (
            http.clone(),
            addrs[c % 3].clone(),
            value.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= keys {
                    return Ok::<_, anyhow::Error>(());
                }
                http.put(format!("http://{addr}/v1/kv/bulk-{i:08}"))
                    .json(&json!({ "value": value }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut joining = three.clone();
    joining.push(member(3, "joining"));
    let started = Instant::now();
    for a in &addrs {
        http.put(format!("http://{a}/admin/ring"))
            .bearer_auth(TOKEN)
            .json(&json!({"version": 2, "members": joining}))
            .send()
            .await?
            .error_for_status()?;
    }
    let status = wait_leaderless(http, &addrs[3], |s| s["stream"] == "joined").await?;
    let secs = started.elapsed().as_secs_f64();
    let streamed = status["keys_streamed"].as_u64().unwrap_or(0);
    let mb = streamed as f64 * (value_bytes + 20) as f64 / 1e6;
    println!(
        "leaderless join: {streamed} key copies ({mb:.0} MB of values) streamed into the 4th member in {secs:.1} s = {:.1} MB/s ({keys} keys of {value_bytes} B on 3 members)",
        mb / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let etcd = if args.etcd {
        let bin = etcd_bin(&args.etcd_bin)?;
        println!("starting a 3-member etcd cluster ({})", bin.display());
        let (addrs, procs, dir) = start_etcd(&http, &bin).await?;
        let leader = etcd_leader(&http, &addrs).await;
        let mut figures = Vec::new();
        for &clients in &args.clients {
            let w = load(
                Target::Etcd,
                std::slice::from_ref(&leader),
                clients,
                args.seconds,
                true,
            )
            .await;
            let r = load(
                Target::Etcd,
                std::slice::from_ref(&leader),
                clients,
                args.seconds,
                false,
            )
            .await;
            row(&format!("etcd put, {clients} clients"), w, None);
            row(
                &format!("etcd get (linearizable), {clients} clients"),
                r,
                None,
            );
            figures.push((w, r));
        }
        drop(procs);
        drop(dir);
        Some(figures)
    } else {
        None
    };
    for mode in &args.modes {
        if mode == "leaderless" {
            bench_leaderless(&http, &args).await?;
            bench_join(&http, args.join_keys, 1024).await?;
            continue;
        }
        let c = start_rc(&http, mode).await?;
        println!("rc-node, 3 nodes, replication={mode}, fsync=always (group commit)");
        for (i, &clients) in args.clients.iter().enumerate() {
            let base = etcd.as_ref().and_then(|e| e.get(i)).copied();
            let leader = &c.addrs[..1];
            let w = load(Target::Rc, leader, clients, args.seconds, true).await;
            row(&format!("rc put, {clients} clients"), w, base.map(|b| b.0));
            let r = load(Target::Rc, leader, clients, args.seconds, false).await;
            row(
                &format!("rc get (linearizable), {clients} clients"),
                r,
                base.map(|b| b.1),
            );
        }
        drop(c);
    }
    let mut windows = Vec::new();
    for _ in 0..3 {
        windows.push(failover_window(&http).await?);
    }
    windows.sort();
    println!(
        "leader kill -> first acknowledged write on the new leader (immediate fence+promote): median {:.1} ms over {} runs",
        windows[1].as_secs_f64() * 1000.0,
        windows.len()
    );
    Ok(())
}
