//! Backend (a): what the leaderless node does. The whole store in an ordered in-memory map,
//! made durable by the node's own write-ahead log (`rc_node::storage::wal`,
//! FsyncPolicy::Always: one fdatasync per group), compacted now and then into a snapshot file
//! of every key's state, replayed on start.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use rc_node::leaderless::dvv::KeyState;
use rc_node::storage::snapshot::{self, SnapshotSource};
use rc_node::storage::wal::{self, Compaction, FsyncPolicy, Wal, WalOp};
use rc_node::storage::WalRecord;
use serde::Serialize;

use crate::backend::{Backend, Visit};

/// How long a commit or a snapshot may take before the benchmark gives up.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(120);

type Map = BTreeMap<String, KeyState>;

pub struct WalStore {
    dir: PathBuf,
    /// Shared with a snapshot being written (an O(1) view, as the node's persistent map gives);
    /// otherwise the only reference, so a commit changes it in place.
    store: Arc<Map>,
    wal: Wal,
    durable: mpsc::Receiver<u64>,
    durable_seq: u64,
    snapshots: mpsc::Receiver<()>,
}

/// The snapshot file's payload, as read back: every key's state in key order, then the hints
/// and the ring (the leaderless node's snapshot shape; the benchmark has neither).
type StoreSnapshot = (Vec<(String, KeyState)>, Vec<()>, Option<()>);

/// The map as a snapshot source: encoded straight into the file, off the map's owner.
struct StoreView(Arc<Map>);

/// The map written as a sequence of (key, state) pairs.
struct Pairs<'a>(&'a Map);

impl Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl SnapshotSource for StoreView {
    fn last(&self) -> rc_api::LogPosition {
        Default::default()
    }
    fn keys(&self) -> usize {
        self.0.len()
    }
    fn encode_into(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let shape = (Pairs(&self.0), Vec::<()>::new(), None::<()>);
        snapshot::encode_to(&shape, out)
    }
}

/// The writer thread on `segment`, reporting durable sequence numbers and durable snapshots.
fn start(dir: &Path, segment: u64) -> Result<(Wal, mpsc::Receiver<u64>, mpsc::Receiver<()>)> {
    let (tx, durable) = mpsc::channel();
    let (snap_tx, snapshots) = mpsc::channel();
    let wal = Wal::start(
        dir,
        segment,
        FsyncPolicy::Always,
        Box::new(move |seq| {
            let _ = tx.send(seq);
        }),
        Box::new(move |_| {
            let _ = snap_tx.send(());
        }),
    )?;
    Ok((wal, durable, snapshots))
}

/// What the node's recovery does with the key states: read the snapshot, then replay the log
/// onto it record by record as it is read.
fn recover(dir: &Path) -> Result<(Map, u64, usize)> {
    let snapshot: Option<StoreSnapshot> = wal::open(dir)?;
    let mut store: Map = snapshot
        .map(|(keys, _, _)| keys.into_iter().collect())
        .unwrap_or_default();
    let mut replayed = 0;
    let segment = wal::replay(dir, &mut |rec| {
        replayed += 1;
        if let WalRecord::KeyState { key, state } = rec {
            store.insert(key, Arc::unwrap_or_clone(state));
        }
    })?;
    Ok((store, segment, replayed))
}

impl WalStore {
    pub fn open(dir: &Path) -> Result<WalStore> {
        let (store, segment, _) = recover(dir)?;
        let (wal, durable, snapshots) = start(dir, segment)?;
        Ok(WalStore {
            dir: dir.to_path_buf(),
            store: Arc::new(store),
            wal,
            durable,
            durable_seq: 0,
            snapshots,
        })
    }

    fn wait_durable(&mut self, seq: u64) -> Result<()> {
        while self.durable_seq < seq {
            self.durable_seq = self
                .durable
                .recv_timeout(DURABLE_TIMEOUT)
                .map_err(|e| anyhow!("the WAL writer did not report seq {seq} durable: {e}"))?;
        }
        Ok(())
    }

    /// Stop the writer (every submission durable) and recover as a start does.
    fn stop_and_recover(&mut self) -> Result<(Duration, usize)> {
        self.wait_durable(self.wal.last_seq())?;
        // A restart: the old process's map is gone before the new one reads the disk.
        self.store = Arc::new(Map::new());
        let started = Instant::now();
        let (store, segment, replayed) = recover(&self.dir)?;
        let took = started.elapsed();
        let (wal, durable, snapshots) = start(&self.dir, segment)?;
        // Replacing the handle drops the old sender: the old writer thread ends.
        self.wal = wal;
        (self.durable, self.snapshots, self.durable_seq) = (durable, snapshots, 0);
        self.store = Arc::new(store);
        Ok((took, replayed))
    }

    /// One compaction of the whole map. Returns how long appends behind it waited (until its
    /// sequence number was durable) and how long until the snapshot itself was durable.
    fn compact(&mut self, background: bool) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        let seq = self.wal.submit(WalOp::Compact(Compaction {
            snapshot: Box::new(StoreView(self.store.clone())),
            tail: Vec::new(),
            background,
        }));
        self.wait_durable(seq)?;
        let stall = started.elapsed();
        if background {
            self.snapshots
                .recv_timeout(DURABLE_TIMEOUT)
                .map_err(|e| anyhow!("the background snapshot was not reported durable: {e}"))?;
        }
        Ok((stall, started.elapsed()))
    }
}

impl Backend for WalStore {
    fn commit(&mut self, batch: Vec<(String, KeyState)>) -> Result<()> {
        let mut records = Vec::with_capacity(batch.len());
        // In place unless a snapshot still holds the map (then this clones it, once).
        let store = Arc::make_mut(&mut self.store);
        for (key, state) in batch {
            store.insert(key.clone(), state.clone());
            records.push(WalRecord::KeyState {
                key,
                state: state.into(),
            });
        }
        let seq = self.wal.submit(WalOp::Append(records));
        self.wait_durable(seq)
    }

    fn get(&self, key: &str) -> Result<Option<KeyState>> {
        Ok(self.store.get(key).cloned())
    }

    fn scan(&self, from: &str, to: &str, visit: &mut Visit) -> Result<()> {
        for (k, s) in self
            .store
            .range::<str, _>((Bound::Included(from), Bound::Excluded(to)))
        {
            if !visit(k, s.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<Vec<(String, Duration)>> {
        let keys = self.store.len();
        let (replay, records) = self.stop_and_recover()?;
        let (_, foreground) = self.compact(false)?;
        let (stall, background) = self.compact(true)?;
        let (from_snapshot, _) = self.stop_and_recover()?;
        Ok(vec![
            (
                format!("recover: replay a log of {records} records"),
                replay,
            ),
            (
                format!("compact ({keys} keys): encode + write + fsync the snapshot"),
                foreground,
            ),
            ("compact in the background: appends stalled".into(), stall),
            (
                "compact in the background: snapshot durable".into(),
                background,
            ),
            (
                "recover: read the snapshot (empty log tail)".into(),
                from_snapshot,
            ),
        ])
    }
}
