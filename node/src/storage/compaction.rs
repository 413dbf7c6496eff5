//! Compaction (docs/design.md §9): a snapshot of the state, after which the log needs only a
//! tail. The writer thread starts the next segment; the snapshot is written there or on a
//! thread of its own, and the older segments go once it is durable.

use std::path::PathBuf;
use std::time::Instant;

use rc_api::LogPosition;

use super::snapshot::SnapshotSource;
use super::unlink;
use super::wal::{io_err, segments, WalError};
use super::WalRecord;

/// The fewest writes between snapshots when `RC_SNAPSHOT_EVERY` is not set.
pub const SNAPSHOT_EVERY_FLOOR: u64 = 100_000;

/// Writes (a batch counts its operations) after which a snapshot is due: `every` when set;
/// otherwise as many as the state holds keys, and at least [`SNAPSHOT_EVERY_FLOOR`]. Give or
/// take a quarter, drawn from `random`: members apply the same writes at nearly the same time,
/// and must not all write their snapshots at once.
///
/// A snapshot rewrites the whole state, so a fixed interval makes every write pay for
/// `keys / interval` key rewrites (10 at 1M keys and 100,000), which grows with the store. An
/// interval that grows with it keeps that at most one (and a third), and keeps the log, which
/// recovery replays and the disk holds beside the snapshot, about the state's own size.
pub fn snapshot_interval(every: Option<u64>, keys: usize, random: u64) -> u64 {
    let every = every
        .unwrap_or_else(|| SNAPSHOT_EVERY_FLOOR.max(keys as u64))
        .max(1);
    every - every / 4 + random % (every / 2 + 1)
}

/// A snapshot to write, and the records the log still needs after it.
pub struct Compaction {
    pub snapshot: Box<dyn SnapshotSource>,
    /// Records still needed after the snapshot: they start the next segment.
    pub tail: Vec<WalRecord>,
    /// Write the snapshot on a background thread. The writer starts the next segment at once
    /// and appends go on into it; the older segments stay until the snapshot is durable, so a
    /// crash before then replays them (the tail repeats some of their records, which replay
    /// skips). [`SnapshotCallback`] reports the snapshot's position once it is durable.
    /// Otherwise (a state replaced wholesale: installed from a leader, or discarded) the
    /// snapshot is durable before anything submitted after it.
    pub background: bool,
}

impl std::fmt::Debug for Compaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compaction")
            .field("last", &self.snapshot.last())
            .field("keys", &self.snapshot.keys())
            .field("tail", &self.tail.len())
            .field("background", &self.background)
            .finish()
    }
}

/// Called from the snapshot thread once a background snapshot is durable (and the segments
/// before it deleted), with its position.
pub type SnapshotCallback = Box<dyn Fn(LogPosition) + Send + Sync>;

/// A snapshot written, or being written, and the segment that follows it.
pub(super) struct SnapshotJob {
    pub dir: PathBuf,
    pub source: Box<dyn SnapshotSource>,
    pub tail_records: usize,
    pub segment: u64,
    pub waited_ms: u64,
}

impl SnapshotJob {
    /// The snapshot is durable: remove the segments before it, log, and report.
    pub fn finish(
        &self,
        started: Instant,
        on_snapshot: Option<&(dyn Fn(LogPosition) + Send + Sync)>,
    ) -> Result<(), WalError> {
        // All at once: replay must never see some of the covered segments without the others
        // (a leaderless store replays whole key states, which a later snapshot supersedes).
        let covered: Vec<PathBuf> = segments(&self.dir)?
            .into_iter()
            .filter(|(n, _)| *n < self.segment)
            .map(|(_, path)| path)
            .collect();
        unlink::discard_all(&covered).map_err(io_err(&self.dir))?;
        let last = self.source.last();
        tracing::info!(
            snapshot_index = last.index,
            keys = self.source.keys(),
            tail_records = self.tail_records,
            segment = self.segment,
            background = on_snapshot.is_some(),
            took_ms = started.elapsed().as_millis() as u64,
            appends_waited_ms = self.waited_ms,
            "compacted the log into a snapshot"
        );
        if let Some(report) = on_snapshot {
            report(last);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_interval_is_kept_and_the_default_grows_with_the_state() {
        // (setting, keys held, the interval drawn around)
        for (every, keys, around) in [
            (Some(40), 5_000_000, 40),
            (Some(1), 10, 1),
            (None, 0, SNAPSHOT_EVERY_FLOOR),
            (None, 99_999, SNAPSHOT_EVERY_FLOOR),
            (None, 1_000_000, 1_000_000),
        ] {
            let (low, high) = (around - around / 4, around + around / 4);
            assert_eq!(snapshot_interval(every, keys, 0), low);
            assert_eq!(snapshot_interval(every, keys, around / 2), high);
            for random in [1, 7, 12_345, u64::MAX] {
                let drawn = snapshot_interval(every, keys, random);
                assert!((low..=high).contains(&drawn), "{drawn} for {around}");
            }
        }
    }
}
