//! The disk as the run found it: the latency of a 4 KiB append plus fdatasync, with no store in
//! between. Printed before and after the phases, so that a run whose disk was slow (another
//! process syncing, the host's cache) shows it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bench::ms;
use crate::workload::percentiles;

/// Up to 500 appends, each followed by fdatasync, within 2 s; print p50/p99/max.
pub fn fdatasync(dir: &Path, when: &str) -> Result<()> {
    let path = dir.join("fdatasync-probe");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut samples = Vec::with_capacity(500);
    while samples.len() < 500 && started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    let n = samples.len();
    let p = percentiles(&mut samples);
    println!(
        "disk probe {when}: {n} x (4 KiB append + fdatasync): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(p.p50),
        ms(p.p99),
        ms(p.max)
    );
    Ok(())
}
