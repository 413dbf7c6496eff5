//! rc-storage-bench: one workload shaped like the leaderless store's (one record per key state,
//! group commits, range scans for streaming and anti-entropy, point reads, restart) against
//! three backends: the node's own write-ahead log with an in-memory map, redb and fjall.
//!
//! Run each backend in its own process, so that the peak RSS it prints is that backend's:
//! `target/release/rc-storage-bench --backend wal` (then `redb`, then `fjall`).
//! docs/storage.md has the figures and the decision they led to.
//!
//! `--shared-map` measures only the in-memory store: what a write costs while a background
//! snapshot shares it (no backend, no disk).

mod backend;
mod bench;
mod fjall_store;
mod probe;
mod redb_store;
mod shared_map;
mod wal_store;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use backend::Backend;
use workload::{mib, Rng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// The node's write-ahead log (FsyncPolicy::Always) plus an in-memory BTreeMap.
    Wal,
    /// redb: one write transaction per batch, Durability::Immediate.
    Redb,
    /// fjall: one write batch per group, PersistMode::SyncData.
    Fjall,
}

#[derive(Debug, Parser)]
#[command(about = "Benchmark storage backends for the leaderless store, one per process")]
struct Args {
    #[arg(long, value_enum, required_unless_present = "shared_map")]
    backend: Option<Kind>,
    /// Measure only the in-memory store's writes while a snapshot shares it (this many a
    /// phase), with key states inline and behind an `Arc`.
    #[arg(long)]
    shared_map: Option<usize>,
    /// Key states loaded (keys `key-00000000`...).
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Records per durable commit while loading (a group commit of this many clients).
    #[arg(long, default_value_t = 64)]
    load_batch: usize,
    /// Records per durable commit in the steady-write phases, one phase each.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Length of each steady-write phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Random point reads.
    #[arg(long, default_value_t = 1_000_000)]
    reads: u64,
    /// Bytes of the value each key state holds.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Parent of the temporary data directory (removed at the end). A real disk, not tmpfs.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Upper bound on the load, the scan and the reads, each.
    #[arg(long, default_value_t = 1200)]
    phase_limit_secs: u64,
}

/// The node's allocator (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.keys > 0, "--keys must be positive");
    anyhow::ensure!(
        args.load_batch > 0 && args.batches.iter().all(|b| *b > 0),
        "batches must be positive"
    );
    let backend = match (args.backend, args.shared_map) {
        (_, Some(writes)) => {
            shared_map::run(args.keys, writes, args.value_bytes);
            return Ok(());
        }
        (Some(backend), None) => backend,
        (None, None) => anyhow::bail!("--backend or --shared-map is required"),
    };
    let tmp = tempfile::Builder::new()
        .prefix("rc-storage-bench-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a data directory in {}", args.dir.display()))?;
    let dir = tmp.path();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "backend {:?}, {} keys, {}-byte values, data in {} ({cores} cores)",
        backend,
        args.keys,
        args.value_bytes,
        dir.display()
    );
    let mut store: Box<dyn Backend> = match backend {
        Kind::Wal => Box::new(wal_store::WalStore::open(dir)?),
        Kind::Redb => Box::new(redb_store::RedbStore::open(dir)?),
        Kind::Fjall => Box::new(fjall_store::FjallStore::open(dir)?),
    };
    run(&args, store.as_mut(), dir)?;
    drop(store);
    tmp.close().context("removing the data directory")
}

fn run(args: &Args, store: &mut dyn Backend, dir: &std::path::Path) -> Result<()> {
    let limit = Duration::from_secs(args.phase_limit_secs);
    let mut rng = Rng::new(42);
    let sample = workload::state(&mut Rng::new(7), 1, args.value_bytes);
    let record = workload::record_bytes(&workload::key(0), &sample)?;
    probe::fdatasync(dir, "before")?;

    let load = bench::load(
        store,
        &mut rng,
        args.keys,
        args.load_batch,
        args.value_bytes,
        limit,
    )?;
    load.print(&format!("load (batches of {})", args.load_batch));
    let keys = load.records.max(1);
    let (rss_loaded, _) = workload::rss_kib()?;

    for (round, &batch) in args.batches.iter().enumerate() {
        let secs = Duration::from_secs(args.seconds);
        let w = bench::overwrite(
            store,
            &mut rng,
            keys,
            batch,
            args.value_bytes,
            secs,
            2 + round as u64,
        )?;
        w.print(&format!("overwrite (batches of {batch})"));
    }
    let (written_len, written_alloc) = workload::disk_bytes(dir)?;

    read_phases(args, store, &mut rng, keys, record, limit)?;

    for (what, took) in store.restart()? {
        println!("restart: {what}: {:.3} s", took.as_secs_f64());
    }
    // After a restart the store must still hold what was written.
    let probe = workload::key(keys - 1);
    anyhow::ensure!(
        store.get(&probe)?.is_some(),
        "{probe} is missing after the restart"
    );

    let (end_len, end_alloc) = workload::disk_bytes(dir)?;
    println!(
        "disk: after the writes {:.1} MiB ({:.1} MiB allocated); at the end {:.1} MiB ({:.1} MiB allocated)",
        mib(written_len),
        mib(written_alloc),
        mib(end_len),
        mib(end_alloc),
    );
    probe::fdatasync(dir, "after")?;
    let (rss_end, hwm) = workload::rss_kib()?;
    println!(
        "memory: RSS after the load {:.0} MiB, at the end {:.0} MiB; peak RSS (VmHWM) {:.0} MiB",
        rss_loaded as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    Ok(())
}

/// The scan of a third of the keys, then the point reads.
fn read_phases(
    args: &Args,
    store: &dyn Backend,
    rng: &mut Rng,
    keys: u64,
    record: usize,
    limit: Duration,
) -> Result<()> {
    let s = bench::scan(store, keys, limit)?;
    let secs = s.wall.as_secs_f64().max(1e-9);
    println!(
        "scan (a third of the keys, in order): {} keys in {:.3} s: {:.0} keys/s, {:.1} MB/s \
         (at {record} bytes of key + encoded state per record)",
        s.keys,
        secs,
        s.keys as f64 / secs,
        s.keys as f64 * record as f64 / secs / 1e6,
    );

    let r = bench::reads(store, rng, keys, args.reads, limit)?;
    let secs = r.wall.as_secs_f64().max(1e-9);
    println!(
        "get (random keys): {} gets ({} found) in {:.3} s: {:.0} gets/s",
        r.gets,
        r.hits,
        secs,
        r.gets as f64 / secs,
    );
    Ok(())
}
