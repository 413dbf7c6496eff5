//! The workload every backend gets: keys, key states, a seeded random source, latency
//! percentiles, and what the process and its directory use (memory, disk).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rc_node::leaderless::dvv::{KeyState, Sibling};

/// The actor that wrote every state: one node, incarnation 1, as in a one-node store.
const ACTOR: &str = "n0~1";

/// The `i`th key: `key-00000042`. Keys sort in the order of `i`.
pub fn key(i: u64) -> String {
    format!("key-{i:08}")
}

/// A key state with one sibling holding `value_bytes` bytes, written by [`ACTOR`] at `counter`.
pub fn state(rng: &mut Rng, counter: u64, value_bytes: usize) -> KeyState {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value: String = (0..value_bytes)
        .map(|_| char::from(ALPHABET[(rng.next() % 64) as usize]))
        .collect();
    let ts = (1_700_000_000_000u64 + counter) << 16;
    KeyState {
        siblings: vec![Sibling {
            node: ACTOR.to_string(),
            counter,
            ts,
            value: Some(value),
        }],
        clock: BTreeMap::from([(ACTOR.to_string(), counter)]),
    }
}

/// Bytes of one record as stored (key plus postcard-encoded state): the unit of the scan's MB/s.
pub fn record_bytes(key: &str, state: &KeyState) -> Result<usize> {
    Ok(key.len() + encode(state)?.len())
}

/// A state as the WAL frames, redb and fjall all hold it: postcard.
pub fn encode(state: &KeyState) -> Result<Vec<u8>> {
    postcard::to_allocvec(state).context("encoding a key state")
}

pub fn decode(bytes: &[u8]) -> Result<KeyState> {
    postcard::from_bytes(bytes).context("decoding a stored key state")
}

/// splitmix64: seeded, so every backend draws the same keys and values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is negligible for n far below 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// p50, p99 and max of a set of latencies.
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> Duration {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        max: samples.last().copied().unwrap_or_default(),
    }
}

/// Memory of this process from /proc/self/status, in KiB: (VmRSS now, VmHWM = peak RSS).
pub fn rss_kib() -> Result<(u64, u64)> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Disk use under `dir`: (sum of file lengths, bytes of allocated blocks).
pub fn disk_bytes(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    // Bounded: a data directory of these stores holds at most a few thousand files.
    let mut visited = 0usize;
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            visited += 1;
            anyhow::ensure!(
                visited < 1_000_000,
                "too many files under {}",
                dir.display()
            );
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            }
            len += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((len, allocated))
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
