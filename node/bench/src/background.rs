//! Leaderless stalls from background work on a large store: three members each hold `keys`
//! keys while 64 clients write; first with nothing in the background (the machine's own
//! tail), then through snapshots every ~100,000 writes (±25 % per member; the default waits
//! for as many writes as the store holds keys, so at 1M keys this is nearly back to back),
//! then with an anti-entropy round every second on every member (bucket digests of every
//! shared key, the tombstone purge pass and the cleanup pass: each walks the store).

use crate::prelude::*;

/// Keys per preload call.
const PAGE: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Background {
    Nothing,
    Snapshots,
    AntiEntropy,
}

pub async fn bench_leaderless_background(
    http: &reqwest::Client,
    keys: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    for work in [
        Background::Nothing,
        Background::Snapshots,
        Background::AntiEntropy,
    ] {
        background_run(http, keys, seconds, work).await?;
    }
    Ok(())
}

async fn background_run(
    http: &reqwest::Client,
    keys: usize,
    seconds: u64,
    work: Background,
) -> anyhow::Result<()> {
    let (anti_entropy, snapshots, label) = match work {
        Background::Nothing => ("0", "1000000000000", "nothing in the background"),
        Background::Snapshots => ("0", "100000", "snapshots every ~100,000 writes"),
        Background::AntiEntropy => ("1", "1000000000000", "anti-entropy every 1 s"),
    };
    let flags = [
        "--mode",
        "leaderless",
        "--anti-entropy-interval-seconds",
        anti_entropy,
        "--snapshot-every",
        snapshots,
        "--log-level",
        "info",
    ];
    let c = spawn_nodes(http, &flags).await?;
    let members: Vec<_> = c
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"id": format!("n{i}"), "address": a, "state": "normal"}))
        .collect();
    push_ring(http, "http", &c.addrs, 1, &members).await?;
    let loaded = Instant::now();
    for addr in &c.addrs {
        preload_states(http, addr, keys).await?;
    }
    println!(
        "rc-node leaderless, 3 members, {keys} keys of 100 bytes on each (loaded in {:.1} s), {label}",
        loaded.elapsed().as_secs_f64()
    );
    let rounds = || async {
        let s = wait_leaderless(http, "http", &c.addrs[0], |_| true).await;
        s.map_or(0, |s| s.anti_entropy_rounds)
    };
    let n0_log = c._dir.path().join("n0.log");
    let (rounds_before, snapshots_before) = (rounds().await, snapshot_times(&n0_log).len());
    let servers = Servers {
        target: &Target::RC,
        addrs: &c.addrs,
        procs: &c.procs,
    };
    let f = load(&servers, 64, seconds, true).await;
    row(&format!("leaderless put, 64 clients, {label}"), f, None);
    let rss = peak_rss_mib(c.procs.0[0].id()).unwrap_or(0);
    match work {
        Background::Nothing => println!("  n0 peak RSS {rss} MiB"),
        Background::Snapshots => {
            let during = snapshot_times(&n0_log).split_off(snapshots_before);
            let took: Vec<u64> = during.iter().map(|t| t.0).collect();
            println!(
                "  snapshots on n0 during the run: {} written in the background in {took:?} ms; n0 peak RSS {rss} MiB",
                during.len()
            );
            if during.is_empty() {
                bail!("no snapshot ran during the measurement: its figures say nothing");
            }
        }
        Background::AntiEntropy => {
            let ran = rounds().await - rounds_before;
            let log = std::fs::read_to_string(&n0_log).unwrap_or_default();
            let failed = log.matches("anti-entropy exchange failed").count();
            println!(
                "  anti-entropy rounds on n0 during the run: {ran} ({failed} exchanges failed); n0 peak RSS {rss} MiB"
            );
            if ran == 0 {
                bail!("no anti-entropy round ran during the measurement: its figures say nothing");
            }
        }
    }
    Ok(())
}

/// `keys` keys straight into one member's store through the internal replicate call (as
/// streaming and hints deliver states): one page of merged states per call, no quorum.
async fn preload_states(http: &reqwest::Client, addr: &str, keys: usize) -> anyhow::Result<()> {
    let value = "v".repeat(100);
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64)
        << 16;
    for start in (0..keys).step_by(PAGE) {
        let page: Vec<_> = (start..(start + PAGE).min(keys))
            .map(|i| {
                let state = json!({
                    "siblings": [{"node": "preload~1", "counter": 1, "ts": ts, "value": value}],
                    "clock": {"preload~1": 1},
                });
                json!([format!("bulk-{i:08}"), state])
            })
            .collect();
        http.post(format!("http://{addr}/internal/v1/replicate"))
            .bearer_auth(TOKEN)
            .json(&page)
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}
