//! The load generator: N concurrent clients doing puts or gets for a while, and its figures.

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::prelude::*;
use crate::wire::Conn;

#[derive(Clone)]
pub enum Target {
    /// rc-node; with a client configuration, over TLS.
    Rc(Option<Arc<ClientConfig>>),
    Etcd,
}

impl Target {
    /// rc-node over plain HTTP.
    pub const RC: Target = Target::Rc(None);

    fn tls(&self) -> Option<&Arc<ClientConfig>> {
        match self {
            Target::Rc(tls) => tls.as_ref(),
            Target::Etcd => None,
        }
    }

    /// The method, path and body of one put (`write`) or get of `key`.
    fn request(&self, write: bool, key: &str) -> (Method, String, Bytes) {
        const VALUE: &str = "0123456789abcdef";
        let etcd_body = |body: serde_json::Value| Bytes::from(body.to_string());
        match (self, write) {
            (Target::Rc(_), true) => (
                Method::PUT,
                format!("/v1/kv/{key}"),
                Bytes::from_static(br#"{"value":"0123456789abcdef"}"#),
            ),
            (Target::Rc(_), false) => (Method::GET, format!("/v1/kv/{key}"), Bytes::new()),
            (Target::Etcd, true) => (
                Method::POST,
                "/v3/kv/put".to_owned(),
                etcd_body(json!({"key": b64(key), "value": b64(VALUE)})),
            ),
            (Target::Etcd, false) => (
                Method::POST,
                "/v3/kv/range".to_owned(),
                etcd_body(json!({"key": b64(key)})),
            ),
        }
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
    /// The load generator's own CPU time per acknowledged request.
    pub client_cpu_us_per_op: f64,
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

/// One request on the task's connection (opened first if there is none; dropped after a
/// failure, so the next request opens a fresh one): whether it succeeded (a 404 is an answer).
async fn one_op(
    conn: &mut Option<Conn>,
    target: &Target,
    addr: &str,
    write: bool,
    key: &str,
) -> bool {
    let (method, path, body) = target.request(write, key);
    let answer = async {
        let open = match conn.take() {
            Some(open) => open,
            None => Conn::open(addr, target.tls()).await?,
        };
        let open = conn.insert(open);
        open.call(method, &path, body).await
    };
    match answer.await {
        Ok(status) => status.is_success() || status == StatusCode::NOT_FOUND,
        Err(_) => {
            *conn = None;
            false
        }
    }
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
            let mut conn = None;
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("key-{c}-{}", n % 1000);
                n += 1;
                let t = Instant::now();
                if one_op(&mut conn, &target, &addr, write, &key).await {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let me = std::process::id();
    let (cpu_before, client_before) = (procs.cpu_seconds(), cpu_seconds(me));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = procs.cpu_seconds() - cpu_before;
    let client_cpu = cpu_seconds(me) - client_before;
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
        client_cpu_us_per_op: client_cpu * 1e6 / all.len() as f64,
    }
}

pub fn row(label: &str, f: Figures, base: Option<Figures>) {
    let figures = format!(
        "{label:<38} {:>8.0} ops/s  p50 {:>6.2}  p99 {:>6.2}  p99.9 {:>7.2}  max {:>7.2} ms  cpu {:>4.0} us/op (client {:.0})",
        f.ops_per_s, f.p50_ms, f.p99_ms, f.p999_ms, f.max_ms, f.cpu_us_per_op, f.client_cpu_us_per_op
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
