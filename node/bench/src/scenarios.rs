//! Measurements beyond steady load: a leader kill's unavailability, leaderless modes, a join's
//! streaming rate.

use crate::prelude::*;

pub async fn failover_window(http: &reqwest::Client) -> anyhow::Result<Duration> {
    let mut c = start_rc(http, "quorum").await?;
    // Kill the leader, then do exactly what the operator does, without detection delay.
    let killed = Instant::now();
    let _ = c.procs.0[0].kill();
    let _ = c.procs.0[0].wait();
    promote(http, "http", &c.addrs, 1, 2, &[1, 2]).await?;
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
pub async fn bench_leaderless(
    http: &reqwest::Client,
    args: &Args,
    etcd: Option<&[(Figures, Figures)]>,
) -> anyhow::Result<()> {
    let flags = ["--mode", "leaderless"];
    let (cluster, target, admin, scheme) = if args.tls {
        let (c, target, admin) = spawn_tls_nodes(&flags).await?;
        (c, target, admin, "https")
    } else {
        (
            spawn_nodes(http, &flags).await?,
            Target::RC,
            http.clone(),
            "http",
        )
    };
    let RcCluster {
        addrs,
        mut procs,
        _dir,
    } = cluster;
    let members: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"id": format!("n{i}"), "address": a, "state": "normal"}))
        .collect();
    push_ring(&admin, scheme, &addrs, 1, &members).await?;
    let tls = if args.tls { ", TLS" } else { "" };
    println!("rc-node leaderless, 3 nodes, N=3 W=2 R=2, last-write-wins, fsync=always{tls}");
    let servers = Servers {
        target: &target,
        addrs: &addrs,
        procs: &procs,
    };
    for (i, &clients) in args.clients.iter().enumerate() {
        let base = etcd.and_then(|e| e.get(i)).copied();
        let w = load(&servers, clients, args.seconds, true).await;
        row(
            &format!("leaderless put, {clients} clients"),
            w,
            base.map(|b| b.0),
        );
        let r = load(&servers, clients, args.seconds, false).await;
        row(
            &format!("leaderless get, {clients} clients"),
            r,
            base.map(|b| b.1),
        );
    }
    let _ = procs.0[2].kill();
    let _ = procs.0[2].wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let survivors = Servers {
        target: &target,
        addrs: &addrs[..2],
        procs: &procs,
    };
    let w = load(&survivors, 16, args.seconds, true).await;
    row("leaderless put, 16 clients, 1 node down", w, None);
    let r = load(&survivors, 16, args.seconds, false).await;
    row("leaderless get, 16 clients, 1 node down", r, None);
    Ok(())
}

/// A join's streaming rate: 3 members hold `keys` keys of `value_bytes`; a fourth joins and
/// streams every range it will own (page by page from each member).
pub async fn bench_join(
    http: &reqwest::Client,
    keys: usize,
    value_bytes: usize,
) -> anyhow::Result<()> {
    let RcCluster {
        addrs,
        procs: _procs,
        _dir,
    } = spawn_n_nodes(http, 4, &["--mode", "leaderless"]).await?;
    let member =
        |i: usize, state: &str| json!({"id": format!("n{i}"), "address": addrs[i], "state": state});
    let three: Vec<_> = (0..3).map(|i| member(i, "normal")).collect();
    push_ring(http, "http", &addrs[..3], 1, &three).await?;
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
    let status =
        wait_leaderless(http, "http", &addrs[3], |s| s.stream == StreamState::Joined).await?;
    let secs = started.elapsed().as_secs_f64();
    let streamed = status.keys_streamed;
    let mb = streamed as f64 * (value_bytes + 20) as f64 / 1e6;
    println!(
        "leaderless join: {streamed} key copies ({mb:.0} MB of values) streamed into the 4th member in {secs:.1} s = {:.1} MB/s ({keys} keys of {value_bytes} B on 3 members)",
        mb / secs
    );
    Ok(())
}

/// Write stalls from snapshots: the leader holds `keys` keys of 100 bytes while 64 clients
/// write, first with no snapshot at all (the machine's own tail, for comparison), then with one
/// every 100,000 writes (±25% per member; the default waits for as many writes as there are
/// keys, so at 1M keys this is ten times as often: snapshots nearly back to back). Prints the
/// put figures of both (p99.9 and max are the stalls), every snapshot's duration from the
/// leader's log and the leader's peak RSS; then the snapshot transfer to a fourth node.
pub async fn bench_snapshot_stall(
    http: &reqwest::Client,
    keys: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    // 8 s at ~30,000 puts/s crosses a whole snapshot interval (at most 125,000 writes), so
    // that at least one snapshot runs.
    let seconds = seconds.max(8);
    stall_run(http, keys, seconds, None).await?;
    stall_run(http, keys, seconds, Some(100_000)).await
}

/// One stall run on a fresh cluster; `every`: the snapshot interval (`None`: never).
async fn stall_run(
    http: &reqwest::Client,
    keys: usize,
    seconds: u64,
    every: Option<u64>,
) -> anyhow::Result<()> {
    let interval = every.unwrap_or(1_000_000_000_000).to_string();
    let flags = [
        "--replication",
        "quorum",
        "--snapshot-every",
        &interval,
        "--log-level",
        "info",
    ];
    let mut c = spawn_nodes(http, &flags).await?;
    promote(http, "http", &c.addrs, 0, 1, &[0, 1, 2]).await?;
    let loaded = Instant::now();
    preload(http, &c.addrs[0], keys, 100).await?;
    let (what, label) = match every {
        Some(n) => (format!("snapshot every ~{n} writes"), "through snapshots"),
        None => ("no snapshots".to_owned(), "no snapshots"),
    };
    println!(
        "rc-node single-leader, Quorum, {keys} keys of 100 bytes preloaded in {:.1} s, {what}",
        loaded.elapsed().as_secs_f64()
    );
    let log = c._dir.path().join("n0.log");
    let before = snapshot_times(&log).len();
    let f = load(
        &Servers {
            target: &Target::RC,
            addrs: &c.addrs[..1],
            procs: &c.procs,
        },
        64,
        seconds,
        true,
    )
    .await;
    row(&format!("rc put, 64 clients, {label}"), f, None);
    if every.is_none() {
        return Ok(());
    }
    let took = snapshot_times(&log);
    let during = &took[before.min(took.len())..];
    let took: Vec<u64> = during.iter().map(|t| t.0).collect();
    let waited: Vec<u64> = during.iter().map(|t| t.1).collect();
    println!(
        "  snapshots during the run: {} written in the background in {took:?} ms; appends waited {waited:?} ms (starting the next log segment); leader peak RSS {} MiB",
        during.len(),
        peak_rss_mib(c.procs.0[0].id()).unwrap_or(0)
    );
    if during.is_empty() {
        bail!("no snapshot ran during the measurement: its figures say nothing about stalls");
    }
    bench_snapshot_transfer(http, &mut c, &flags).await
}

/// A single-leader snapshot transfer: a fourth node, empty, is made a follower (a learner) of
/// a leader whose log starts after its snapshot, so the leader sends it the snapshot file.
/// Prints the file's size and the rate, from the promotion until the node has applied it.
async fn bench_snapshot_transfer(
    http: &reqwest::Client,
    c: &mut RcCluster,
    flags: &[&str],
) -> anyhow::Result<()> {
    let status = |addr: String| async move {
        let s: NodeStatus = http
            .get(format!("http://{addr}/admin/status"))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        s.single_leader()
            .map(|s| (s.commit_index, s.applied_index, s.snapshot_index))
            .ok_or_else(|| anyhow::anyhow!("not a single-leader status"))
    };
    let new = c.add_node(http, flags).await?;
    let (commit, _, snapshot_index) = status(c.addrs[0].clone()).await?;
    let size = std::fs::metadata(c._dir.path().join("n0").join("snapshot.bin"))?.len();
    let started = Instant::now();
    promote(http, "http", &c.addrs, 0, 2, &[0, 1, 2, new]).await?;
    let deadline = started + Duration::from_secs(120);
    while status(c.addrs[new].clone()).await?.1 < commit {
        if Instant::now() > deadline {
            bail!("the new node did not catch up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "single-leader snapshot transfer: a {:.0} MB snapshot (index {snapshot_index}) sent to an empty fourth node and applied, caught up to index {commit} in {secs:.1} s = {:.0} MB/s (fence + promote included)",
        size as f64 / 1e6,
        size as f64 / 1e6 / secs
    );
    Ok(())
}

/// Puts per preload batch.
const BATCH: usize = 200;

/// `keys` keys of `value_bytes` on `addr`, in batches of `BATCH` from 4 concurrent writers.
async fn preload(
    http: &reqwest::Client,
    addr: &str,
    keys: usize,
    value_bytes: usize,
) -> anyhow::Result<()> {
    let value = "v".repeat(value_bytes);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, addr, value) = (http.clone(), addr.to_owned(), value.clone());
        writers.push(tokio::spawn(async move {
            for start in (w * BATCH..keys).step_by(4 * BATCH) {
                let ops: Vec<_> = (start..(start + BATCH).min(keys))
                    .map(|i| json!({"op": "put", "key": format!("key-{i:08}"), "value": value}))
                    .collect();
                let r = http
                    .post(format!("http://{addr}/v1/batch"))
                    .json(&json!({ "ops": ops }))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("preload batch failed: {}", r.text().await?);
                }
            }
            Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    Ok(())
}

/// (`took_ms`, `appends_waited_ms`) of every compaction the node logged so far.
pub fn snapshot_times(log: &Path) -> Vec<(u64, u64)> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("compacted the log into a snapshot"))
        .filter_map(|l| Some((field(l, "took_ms=")?, field(l, "appends_waited_ms=")?)))
        .collect()
}

/// Peak resident set size of process `pid` (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
