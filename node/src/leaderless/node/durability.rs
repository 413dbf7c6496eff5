//! A leaderless node's durable side: recovery from the data directory, queuing records to the
//! WAL with compaction into snapshots now and then, and the restore marker that keeps a node
//! which lost its data from answering reads until it has streamed its ranges back.

use super::*;

/// File in the data directory while the node's data is incomplete: created when the node starts
/// on an empty directory or drops its data after a decommission, removed once it has streamed
/// its ranges in. It is a file, not a log record, so a crash in between leaves it in place.
const RESTORE_MARKER: &str = "restore-pending";

/// What the data directory held.
pub(super) struct Recovered {
    pub store: BTreeMap<String, KeyState>,
    pub ring: Option<Ring>,
    pub hints: BTreeMap<u64, Hint>,
    pub next_hint: u64,
    /// Past every timestamp in the store.
    pub hlc: Hlc,
    pub restoring: bool,
    /// The WAL segment to continue writing.
    pub segment: u64,
}

/// Replay the snapshot and log; a node starting on an empty directory is restoring.
pub(super) fn recover(cfg: &LeaderlessConfig) -> Result<Recovered, WalError> {
    let recovered = wal::recover(&cfg.data_dir)?;
    if recovered.snapshot.is_none() && recovered.records.is_empty() {
        write_marker(&cfg.data_dir)?;
    }
    let restoring = cfg.data_dir.join(RESTORE_MARKER).exists();
    let mut store = BTreeMap::new();
    if let Some(snap) = &recovered.snapshot {
        for (key, encoded, _) in &snap.items {
            if let Some(state) = decode_state(encoded) {
                store.insert(key.clone(), state);
            }
        }
    }
    let (mut ring, mut hints, mut next_hint) = (None, BTreeMap::new(), 0);
    for rec in recovered.records {
        match rec {
            WalRecord::KeyState { key, state } => {
                store.insert(key, state);
            }
            WalRecord::Ring(r) => ring = Some(r),
            WalRecord::Hint(h) => {
                next_hint = next_hint.max(h.id + 1);
                hints.insert(h.id, h);
            }
            WalRecord::HintDone { id } => {
                hints.remove(&id);
            }
            WalRecord::Entry(_) | WalRecord::Truncate { .. } | WalRecord::Meta(_) => {}
        }
    }
    let mut hlc = Hlc::default();
    for s in store.values() {
        hlc.observe(s.max_ts());
    }
    tracing::info!(
        keys = store.len(),
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
        segment: recovered.segment,
    })
}

impl LeaderlessNode {
    /// Queue records; compacts the log into a snapshot now and then. Returns the WAL sequence.
    pub(super) fn persist(&self, g: &mut Inner, records: Vec<WalRecord>) -> u64 {
        g.since_compaction += records.len() as u64;
        let mut seq = g.wal.submit(WalOp::Append(records));
        if g.since_compaction >= self.cfg.compact_every {
            g.since_compaction = 0;
            let items = g
                .store
                .iter()
                .map(|(k, s)| (k.clone(), encode_state(s), 0))
                .collect();
            let snapshot = Snapshot {
                last: LogPosition::default(),
                items,
                config: None,
            };
            let mut tail: Vec<WalRecord> = g.ring.iter().cloned().map(WalRecord::Ring).collect();
            tail.extend(g.hints.values().cloned().map(WalRecord::Hint));
            seq = g.wal.submit(WalOp::Compact {
                snapshot: Box::new(snapshot),
                tail,
            });
        }
        seq
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
            let compact = self.cfg.compact_every;
            g.since_compaction = compact;
            self.persist(&mut g, Vec::new())
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

fn encode_state(s: &KeyState) -> String {
    postcard::to_allocvec(s)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_state(hex: &str) -> Option<KeyState> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    postcard::from_bytes(&bytes?).ok()
}
