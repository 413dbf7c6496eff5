//! The load generator: N concurrent clients doing puts or gets for a while, and its figures.

use crate::prelude::*;

#[derive(Clone)]
pub enum Target {
    /// rc-node; with a client configuration, over TLS.
    Rc(Option<Arc<ClientConfig>>),
    Etcd,
}

impl Target {
    /// rc-node over plain HTTP.
    pub const RC: Target = Target::Rc(None);

    fn scheme(&self) -> &'static str {
        match self {
            Target::Rc(Some(_)) => "https",
            _ => "http",
        }
    }

    /// A client of its own for one load task (no connection shared between tasks).
    fn client(&self) -> reqwest::Client {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
        match self {
            Target::Rc(Some(tls)) => builder.use_preconfigured_tls((**tls).clone()),
            _ => builder,
        }
        .build()
        .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// The slowest request: the longest stall a client saw.
    pub max_ms: f64,
    /// The servers' CPU time (all processes and threads, user and system) per acknowledged
    /// request: what a request costs, less swayed by a noisy host than ops/s.
    pub cpu_us_per_op: f64,
}

pub fn b64(s: &str) -> String {
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

pub async fn one_op(
    http: &reqwest::Client,
    target: &Target,
    addr: &str,
    write: bool,
    key: &str,
) -> bool {
    let scheme = target.scheme();
    let r = match (target, write) {
        (Target::Rc(_), true) => {
            http.put(format!("{scheme}://{addr}/v1/kv/{key}"))
                .json(&json!({"value": "0123456789abcdef"}))
                .send()
                .await
        }
        (Target::Rc(_), false) => {
            http.get(format!("{scheme}://{addr}/v1/kv/{key}"))
                .send()
                .await
        }
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

/// What a load runs against: the endpoints the clients spread over, and the processes that
/// serve them (their CPU time is counted).
pub struct Servers<'a> {
    pub target: &'a Target,
    pub addrs: &'a [String],
    pub procs: &'a Procs,
}

/// `clients` closed-loop clients for `secs` seconds against `servers`.
pub async fn load(servers: &Servers<'_>, clients: usize, secs: u64, write: bool) -> Figures {
    let Servers {
        target,
        addrs,
        procs,
    } = servers;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (stop, errors, addr) = (stop.clone(), errors.clone(), addrs[c % addrs.len()].clone());
        let target = (*target).clone();
        tasks.push(tokio::spawn(async move {
            let http = target.client();
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{c}-{}", n % 1000);
                n += 1;
                let t = Instant::now();
                if one_op(&http, &target, &addr, write, &key).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let cpu_before = procs.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = procs.cpu_seconds() - cpu_before;
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
        p999_ms: pct(0.999),
        max_ms: pct(1.0),
        cpu_us_per_op: cpu * 1e6 / all.len() as f64,
    }
}

pub fn row(label: &str, f: Figures, base: Option<Figures>) {
    let figures = format!(
        "{label:<38} {:>8.0} ops/s  p50 {:>6.2}  p99 {:>6.2}  p99.9 {:>7.2}  max {:>7.2} ms  cpu {:>4.0} us/op",
        f.ops_per_s, f.p50_ms, f.p99_ms, f.p999_ms, f.max_ms, f.cpu_us_per_op
    );
    match base {
        Some(b) if b.ops_per_s > 0.0 => println!(
            "{figures}   x{:.2} throughput, x{:.2} p99 vs etcd",
            f.ops_per_s / b.ops_per_s,
            f.p99_ms / b.p99_ms.max(1e-9)
        ),
        _ => println!("{figures}"),
    }
}
