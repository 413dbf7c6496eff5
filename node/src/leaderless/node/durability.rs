//! A leaderless node's durable side: recovery from the data directory, queuing records to the
//! WAL with compaction into snapshots now and then, and the restore marker that keeps a node
//! which lost its data from answering reads until it has streamed its ranges back.

use super::*;
use crate::random::random_seed;
use crate::storage::compaction::snapshot_interval;
use crate::storage::snapshot::{self, Snapshot};

/// File in the data directory while the node's data is incomplete: created when the node starts
/// on an empty directory or drops its data after a decommission, removed once it has streamed
/// its ranges in. It is a file, not a log record, so a crash in between leaves it in place.
const RESTORE_MARKER: &str = "restore-pending";

/// The store as a snapshot file holds it: every key's state, the hints, the ring. Written from
/// a [`StoreView`], read back as this.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StoreSnapshot {
    pub keys: Vec<(String, Arc<KeyState>)>,
    pub hints: Vec<Hint>,
    pub ring: Option<Ring>,
}

impl StoreSnapshot {
    /// A snapshot file's bytes in either format: this one, or the one nodes wrote before snapshots moved off the write path
    /// (the single-leader `Snapshot` shape, each state hex-encoded postcard, hints and ring in
    /// the log). A node upgraded in place reads its old snapshot instead of refusing to start.
    fn decode(bytes: &[u8]) -> Option<StoreSnapshot> {
        let payload = snapshot::payload(bytes)?;
        if let Some(current) = snapshot::decode_payload(payload) {
            return Some(current);
        }
        let old: Snapshot = snapshot::decode_payload(payload)?;
        let keys = old.items.into_iter().map(|(key, hex, _)| {
            let state = postcard::from_bytes(&decode_hex(&hex)?).ok()?;
            Some((key, state))
        });
        Some(StoreSnapshot {
            keys: keys.collect::<Option<_>>()?,
            hints: Vec::new(),
            ring: None,
        })
    }
}

/// Bytes from lower-case hex (the old snapshot format); `None` if it is not hex.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// O(1) clones of the store's persistent maps, encoded off the lock as a [`StoreSnapshot`].
struct StoreView {
    store: Store,
    hints: Hints,
    ring: Option<Ring>,
}

impl SnapshotSource for StoreView {
    fn last(&self) -> LogPosition {
        LogPosition::default()
    }
    fn keys(&self) -> usize {
        self.store.len()
    }
    fn encode_into(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let shape = (
            Seq(self.store.iter().map(|(k, s)| (k, &**s))),
            Seq(self.hints.iter().map(|(_, h)| h)),
            &self.ring,
        );
        crate::storage::snapshot::encode_to(&shape, out)
    }
}

/// Items written as a sequence (postcard needs the length first, hence `ExactSizeIterator`).
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: ExactSizeIterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// Key-state records after which the next snapshot is due, drawn for a store of `keys`.
pub(super) fn next_compaction(cfg: &LeaderlessConfig, keys: usize) -> u64 {
    snapshot_interval(cfg.compact_every, keys, random_seed())
}

/// What the data directory held.
pub(super) struct Recovered {
    pub store: Store,
    pub ring: Option<Ring>,
    pub hints: Hints,
    pub next_hint: u64,
    /// Past every timestamp in the store.
    pub hlc: Hlc,
    pub restoring: bool,
    /// The WAL segment to continue writing.
    pub segment: u64,
    /// Log records replayed after the snapshot: they count toward the next one, or a node
    /// restarted more often than it snapshots would grow its log without end.
    pub replayed: u64,
}

/// Replay the snapshot and log; a node starting on an empty directory is restoring.
pub(super) fn recover(cfg: &LeaderlessConfig) -> Result<Recovered, WalError> {
    let snap = wal::open_as(&cfg.data_dir, StoreSnapshot::decode)?;
    let empty_snapshot = snap.is_none();
    let snap = snap.unwrap_or_default();
    let mut store: Store = snap.keys.into_iter().collect();
    let mut hints: Hints = snap.hints.into_iter().map(|h| (h.id, h)).collect();
    let mut ring = snap.ring;
    let mut next_hint = hints.keys().next_back().map_or(0, |id| id + 1);
    let mut replayed = 0u64;
    // The log is replayed as it is read: its records are never all in memory at once.
    let segment = wal::replay(&cfg.data_dir, &mut |rec| {
        replayed += 1;
        match rec {
            WalRecord::KeyState { key, state } => {
                store.insert(key, state);
            }
            WalRecord::Ring(r) => ring = Some(r),
            WalRecord::Hint(h) => {
                next_hint = next_hint.max(h.id + 1);
                hints.insert(h.id, h);
            }
            WalRecord::KeyRemoved { key } => {
                store.remove(&key);
            }
            WalRecord::HintDone { id } => {
                hints.remove(&id);
            }
            WalRecord::Entry(_) | WalRecord::Truncate { .. } | WalRecord::Meta(_) => {}
        }
    })?;
    if empty_snapshot && replayed == 0 {
        write_marker(&cfg.data_dir)?;
    }
    let restoring = cfg.data_dir.join(RESTORE_MARKER).exists();
    let mut hlc = Hlc::default();
    for s in store.values() {
        hlc.observe(s.max_ts());
    }
    tracing::info!(
        keys = store.len(),
        records_replayed = replayed,
        hints = hints.len(),
        ring_version = ring.as_ref().map(|r| r.version),
        restoring,
        "recovered leaderless store from disk"
    );
    Ok(Recovered {
        store,
        ring,
        hints,
        next_hint,
        hlc,
        restoring,
        segment,
        replayed,
    })
}

impl LeaderlessNode {
    /// Queue records; compacts the log into a snapshot now and then. Returns the WAL sequence.
    pub(super) fn persist(&self, g: &mut Inner, records: Vec<WalRecord>) -> u64 {
        g.since_compaction += records.len() as u64;
        let seq = g.wal.submit(WalOp::Append(records));
        if g.since_compaction < g.compact_after {
            return seq;
        }
        self.compact(g, true)
    }

    /// Compact the log into a snapshot of the whole store. In the background (a periodic one)
    /// the lock is held only for O(1) clones of the maps and the log goes on at once; otherwise
    /// the snapshot is durable before anything after it.
    fn compact(&self, g: &mut Inner, background: bool) -> u64 {
        g.since_compaction = 0;
        g.compact_after = next_compaction(&self.cfg, g.store.len());
        let view = StoreView {
            store: g.store.clone(),
            hints: g.hints.clone(),
            ring: g.ring.clone(),
        };
        g.wal.submit(WalOp::Compact(Compaction {
            snapshot: Box::new(view),
            tail: Vec::new(),
            background,
        }))
    }

    pub(crate) async fn wait_durable(&self, seq: u64) {
        let mut rx = self.durable.subscribe();
        let _ = rx.wait_for(|d| *d >= seq).await;
    }

    pub fn is_restoring(&self) -> bool {
        self.lock().restoring
    }

    /// The node's ranges are streamed back in: it may answer reads again.
    pub(crate) fn finish_restore(&self) {
        let path = self.cfg.data_dir.join(RESTORE_MARKER);
        if let Err(e) = std::fs::remove_file(&path).and_then(|_| sync_dir(&self.cfg.data_dir)) {
            tracing::error!(error = %e, "could not remove the restore marker; will stream again");
            return;
        }
        let mut g = self.lock();
        if g.restoring {
            tracing::info!("restored: every range this node owns is streamed in; serving reads");
        }
        g.restoring = false;
    }

    /// After a decommission handed every range to its next owners: drop the data, so that if
    /// this member is added back it streams current data instead of offering stale copies (a
    /// key deleted and purged meanwhile would otherwise come back through it). It stays
    /// restoring, answering no reads, while the ring still names it leaving (an owner): see
    /// `streaming::stream_in_now`.
    pub(crate) async fn drop_all_data(&self) {
        if let Err(e) = write_marker(&self.cfg.data_dir) {
            tracing::error!(error = %e, "could not write the restore marker; keeping the data");
            return;
        }
        let seq = {
            let mut g = self.lock();
            g.restoring = true;
            let keys = g.store.len();
            g.store.clear();
            g.hints.clear();
            tracing::info!(
                keys,
                "dropped local data after handing it to the next owners"
            );
            self.compact(&mut g, false)
        };
        self.wait_durable(seq).await;
    }
}

fn write_marker(dir: &std::path::Path) -> Result<(), WalError> {
    let path = dir.join(RESTORE_MARKER);
    std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .and_then(|_| sync_dir(dir))
        .map_err(|source| WalError::Io { path, source })
}

fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: &str) -> KeyState {
        let put = |s: &KeyState| {
            s.put(
                ConflictResolution::LastWriteWins,
                "n1",
                0,
                &Clock::new(),
                Some(value.to_owned()),
                7,
            )
        };
        put(&KeyState::default())
    }

    #[test]
    fn a_snapshot_reads_back_in_the_current_and_in_the_old_format() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(|e| WalError::Io {
            path: "tmp".into(),
            source: e,
        })?;
        let (a, b) = (Arc::new(state("a")), Arc::new(state("b")));
        let current = StoreView {
            store: [("a".to_owned(), Arc::clone(&a))].into_iter().collect(),
            hints: Hints::new(),
            ring: None,
        };
        snapshot::write(dir.path(), &current)?;
        let read = wal::open_as(dir.path(), StoreSnapshot::decode)?;
        assert_eq!(
            read.map(|s| s.keys),
            Some(vec![("a".to_owned(), Arc::clone(&a))])
        );

        // The old format: each state hex-encoded postcard in a single-leader `Snapshot`.
        let hex = |s: &KeyState| -> String {
            let bytes = postcard::to_allocvec(s).unwrap_or_default();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let old = Snapshot {
            last: LogPosition::default(),
            items: vec![("a".into(), hex(&a), 0), ("b".into(), hex(&b), 0)],
            config: None,
        };
        snapshot::write(dir.path(), &old)?;
        let read = wal::open_as(dir.path(), StoreSnapshot::decode)?;
        let keys = read.map(|s| s.keys);
        assert_eq!(keys, Some(vec![("a".into(), a), ("b".into(), b)]));

        // Neither format: refused as corrupt, never read as an empty store.
        let neither = Snapshot {
            items: vec![("a".into(), "not hex".into(), 0)],
            ..old
        };
        snapshot::write(dir.path(), &neither)?;
        assert!(wal::open_as(dir.path(), StoreSnapshot::decode).is_err());
        Ok(())
    }
}
