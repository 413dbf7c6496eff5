//! The phases, the same for every backend: load, steady overwrites, a range scan, point reads.
//! Every loop is bounded in count and in time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::backend::Backend;
use crate::workload::{self, percentiles, Percentiles, Rng};

/// Commits of one phase: how many, how many records, how long, and each commit's latency.
pub struct Writes {
    pub commits: u64,
    pub records: u64,
    pub wall: Duration,
    pub latency: Percentiles,
}

impl Writes {
    pub fn print(&self, what: &str) {
        let secs = self.wall.as_secs_f64().max(1e-9);
        println!(
            "{what}: {} records in {} commits, {:.2} s: {:.0} commits/s, {:.0} records/s; \
             commit latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.records,
            self.commits,
            secs,
            self.commits as f64 / secs,
            self.records as f64 / secs,
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
        );
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Write keys `0..keys` in order, `batch` records per durable commit, within `limit`.
pub fn load(
    b: &mut dyn Backend,
    rng: &mut Rng,
    keys: u64,
    batch: usize,
    value_bytes: usize,
    limit: Duration,
) -> Result<Writes> {
    let started = Instant::now();
    let mut samples = Vec::with_capacity((keys as usize).div_ceil(batch.max(1)));
    let (mut next, mut commits) = (0u64, 0u64);
    while next < keys && started.elapsed() < limit {
        let end = (next + batch as u64).min(keys);
        let group = (next..end)
            .map(|i| (workload::key(i), workload::state(rng, 1, value_bytes)))
            .collect();
        let t = Instant::now();
        b.commit(group)?;
        samples.push(t.elapsed());
        commits += 1;
        next = end;
    }
    Ok(Writes {
        commits,
        records: next,
        wall: started.elapsed(),
        latency: percentiles(&mut samples),
    })
}

/// Overwrite random keys of `0..keys`, `batch` per durable commit, for `secs` (and at most
/// `max_commits` commits). `round` makes each phase's states newer than the last one's.
pub fn overwrite(
    b: &mut dyn Backend,
    rng: &mut Rng,
    keys: u64,
    batch: usize,
    value_bytes: usize,
    secs: Duration,
    round: u64,
) -> Result<Writes> {
    const MAX_COMMITS: u64 = 1_000_000;
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut commits, mut records) = (0u64, 0u64);
    while started.elapsed() < secs && commits < MAX_COMMITS {
        let group: Vec<_> = (0..batch)
            .map(|_| {
                let i = rng.below(keys);
                (workload::key(i), workload::state(rng, round, value_bytes))
            })
            .collect();
        records += group.len() as u64;
        let t = Instant::now();
        b.commit(group)?;
        samples.push(t.elapsed());
        commits += 1;
    }
    Ok(Writes {
        commits,
        records,
        wall: started.elapsed(),
        latency: percentiles(&mut samples),
    })
}

/// The scan of a third of the key space.
pub struct Scan {
    pub keys: u64,
    pub wall: Duration,
}

/// Read keys `keys/3 .. 2*keys/3` in order, each with its owned state, within `limit`.
pub fn scan(b: &dyn Backend, keys: u64, limit: Duration) -> Result<Scan> {
    let (from, to) = (workload::key(keys / 3), workload::key(2 * keys / 3));
    let started = Instant::now();
    let mut seen = 0u64;
    b.scan(&from, &to, &mut |k, state| {
        seen += 1;
        black_box((k, &state));
        // Checking the clock costs ~20 ns: do it once per 1024 keys.
        !seen.is_multiple_of(1024) || started.elapsed() < limit
    })?;
    Ok(Scan {
        keys: seen,
        wall: started.elapsed(),
    })
}

pub struct Reads {
    pub gets: u64,
    pub hits: u64,
    pub wall: Duration,
}

/// `count` gets of random keys of `0..keys`, each an owned state, within `limit`.
pub fn reads(
    b: &dyn Backend,
    rng: &mut Rng,
    keys: u64,
    count: u64,
    limit: Duration,
) -> Result<Reads> {
    let started = Instant::now();
    let (mut gets, mut hits) = (0u64, 0u64);
    while gets < count && (!gets.is_multiple_of(1024) || started.elapsed() < limit) {
        let key = workload::key(rng.below(keys));
        if let Some(state) = b.get(&key)? {
            hits += 1;
            black_box(&state);
        }
        gets += 1;
    }
    Ok(Reads {
        gets,
        hits,
        wall: started.elapsed(),
    })
}
