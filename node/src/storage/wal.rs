//! The write-ahead log: segment files of CRC-framed records, written by one thread with group
//! commit, and replayed at start-up.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload (postcard WalRecord)`. A torn tail of
//! the last segment (a frame cut short by the end of the file, a bad last frame, or zeroes to
//! the end) is what a crash during a write leaves, and is cut off: nothing in it was
//! acknowledged, because every acknowledged write was fsynced after its frame. Damage anywhere
//! else is corruption, and the node refuses to start rather than silently drop what follows.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rc_api::LogPosition;

use serde::de::DeserializeOwned;

use super::compaction::SnapshotJob;
pub use super::compaction::{Compaction, SnapshotCallback};
use super::WalRecord;
use super::{snapshot, unlink};

/// How writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync before a batch counts as durable; concurrent writes share one sync.
    Always,
    /// Count a batch as durable once written to the OS; fsync on this interval. A machine crash
    /// (not a process crash) can lose up to one interval of acknowledged writes.
    Interval(Duration),
}

/// Work for the writer thread, executed strictly in submission order.
pub enum WalOp {
    Append(Vec<WalRecord>),
    Compact(Compaction),
}

/// Called by the writer thread with the highest sequence number that is now durable.
pub type DurableCallback = Box<dyn Fn(u64) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a log record: {0}")]
    Encode(#[from] postcard::Error),
    #[error("write-ahead log {path} is corrupt at byte {offset} ({reason}), before its tail: refusing to start, since records after it would be lost silently. The data on this volume cannot be trusted: replace the member (delete its PersistentVolumeClaim and pod) so that it rejoins empty, as a learner")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:012}.log"))
}

pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(n) = n.parse::<u64>() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Make sure `dir` exists, delete what a crash left half-removed, and read the snapshot.
pub fn open<S: DeserializeOwned>(dir: &Path) -> Result<Option<S>, WalError> {
    open_as(dir, snapshot::decode)
}

/// As [`open`], with the snapshot file's bytes decoded by `decode` (`None`: corrupt).
pub fn open_as<S>(dir: &Path, decode: fn(&[u8]) -> Option<S>) -> Result<Option<S>, WalError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    unlink::clean_up(dir).map_err(io_err(dir))?;
    snapshot::read_as(dir, decode)
}

/// Hand every record of every segment to `apply`, in order, with one segment in memory at a
/// time; cut a torn tail off the last segment. Returns the number of the segment to continue.
pub fn replay(dir: &Path, apply: &mut dyn FnMut(WalRecord)) -> Result<u64, WalError> {
    let segs = segments(dir)?;
    for (i, (_, path)) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        let (good_len, len) = read_segment(path, last_segment, apply)?;
        if good_len < len {
            tracing::warn!(
                segment = %path.display(), kept_bytes = good_len, dropped_bytes = len - good_len,
                "cutting a torn tail off the write-ahead log (a crash during a write)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(good_len).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
    }
    Ok(segs.last().map(|(n, _)| *n).unwrap_or(1))
}

/// Hand the segment's valid records to `out`; return the length of its valid prefix and of
/// the file. Only the last segment may end in a torn tail; any other damage is an error.
fn read_segment(
    path: &Path,
    last_segment: bool,
    out: &mut dyn FnMut(WalRecord),
) -> Result<(u64, u64), WalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let total = bytes.len();
    let mut offset = 0usize;
    while offset < total {
        let rest = &bytes[offset..];
        let frame = parse_frame(rest);
        let problem = match frame {
            Ok((rec, used)) => {
                out(rec);
                offset += used;
                continue;
            }
            Err(problem) => problem,
        };
        // A frame cut short, or bad and ending exactly at the end of the file, was the last
        // one written; zeroes to the end are a file extended but never written.
        let last_frame = match problem {
            FrameProblem::CutShort => true,
            FrameProblem::BadChecksum { len } => 8 + len == rest.len(),
            FrameProblem::Undecodable => false,
        };
        let torn = last_segment && (last_frame || rest.iter().all(|b| *b == 0));
        if !torn {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                offset: offset as u64,
                reason: problem.describe(),
            });
        }
        return Ok((offset as u64, total as u64));
    }
    Ok((total as u64, total as u64))
}

enum FrameProblem {
    CutShort,
    BadChecksum { len: usize },
    Undecodable,
}

impl FrameProblem {
    fn describe(&self) -> &'static str {
        match self {
            FrameProblem::CutShort => "a frame cut short",
            FrameProblem::BadChecksum { .. } => "a checksum mismatch",
            FrameProblem::Undecodable => "a record that does not decode",
        }
    }
}

/// One frame at the start of `bytes`: the record and the bytes it used.
fn parse_frame(bytes: &[u8]) -> Result<(WalRecord, usize), FrameProblem> {
    let header = bytes.get(..8).ok_or(FrameProblem::CutShort)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(8..8 + len).ok_or(FrameProblem::CutShort)?;
    if crc32fast::hash(payload) != crc {
        return Err(FrameProblem::BadChecksum { len });
    }
    let rec = postcard::from_bytes::<WalRecord>(payload).map_err(|_| FrameProblem::Undecodable)?;
    Ok((rec, 8 + len))
}

pub fn encode_frame(rec: &WalRecord, buf: &mut Vec<u8>) -> Result<(), WalError> {
    let payload = postcard::to_allocvec(rec)?;
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// Handle to the writer thread. Submissions are numbered 1, 2, 3...; the callback reports the
/// highest number that is durable.
pub struct Wal {
    tx: mpsc::Sender<(u64, WalOp)>,
    next_seq: u64,
}

impl Wal {
    /// Start the writer thread, appending to segment `segment` in `dir`.
    pub fn start(
        dir: &Path,
        segment: u64,
        policy: FsyncPolicy,
        on_durable: DurableCallback,
        on_snapshot: SnapshotCallback,
    ) -> Result<Wal, WalError> {
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        sync_dir(dir)?;
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            segment,
            file,
            policy,
            last_sync: Instant::now(),
            unsynced: false,
            snapshotting: None,
            on_snapshot: Arc::from(on_snapshot),
        };
        thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx, on_durable))
            .map_err(io_err(dir))?;
        Ok(Wal { tx, next_seq: 0 })
    }

    /// Queue `op`; returns its sequence number.
    pub fn submit(&mut self, op: WalOp) -> u64 {
        self.next_seq += 1;
        // A closed channel means the writer died on an I/O error; it already logged and aborted.
        let _ = self.tx.send((self.next_seq, op));
        self.next_seq
    }

    /// Sequence number of the last submission.
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    file: File,
    policy: FsyncPolicy,
    last_sync: Instant,
    unsynced: bool,
    /// The background snapshot being written, if any: one at a time, in order.
    snapshotting: Option<thread::JoinHandle<()>>,
    on_snapshot: Arc<dyn Fn(LogPosition) + Send + Sync>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<(u64, WalOp)>, on_durable: DurableCallback) {
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            let first = match self.policy {
                FsyncPolicy::Always => rx.recv().ok(),
                FsyncPolicy::Interval(every) => match rx.recv_timeout(every) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.sync_if_due(true) {
                            fatal(&e);
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(first) = first else { return };
            // Group commit: take everything queued behind the first op into the same sync.
            let mut batch = vec![first];
            while let Ok(op) = rx.try_recv() {
                batch.push(op);
                if batch.len() >= 4096 {
                    break;
                }
            }
            let last_seq = batch.last().map(|(s, _)| *s).unwrap_or(0);
            if let Err(e) = self.write_batch(batch, &mut buf) {
                fatal(&e);
            }
            on_durable(last_seq);
        }
    }

    fn write_batch(&mut self, batch: Vec<(u64, WalOp)>, buf: &mut Vec<u8>) -> Result<(), WalError> {
        buf.clear();
        for (_, op) in batch {
            match op {
                WalOp::Append(records) => {
                    for rec in &records {
                        encode_frame(rec, buf)?;
                    }
                }
                WalOp::Compact(compaction) => {
                    self.flush(buf)?;
                    self.compact(compaction)?;
                }
            }
        }
        self.flush(buf)?;
        self.sync_if_due(false)
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if !buf.is_empty() {
            let path = segment_path(&self.dir, self.segment);
            self.file.write_all(buf).map_err(io_err(&path))?;
            self.unsynced = true;
            buf.clear();
        }
        Ok(())
    }

    fn sync_if_due(&mut self, timer: bool) -> Result<(), WalError> {
        if !self.unsynced {
            return Ok(());
        }
        let due = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => timer || self.last_sync.elapsed() >= every,
        };
        if due {
            let path = segment_path(&self.dir, self.segment);
            let started = Instant::now();
            self.file.sync_data().map_err(io_err(&path))?;
            let took = started.elapsed();
            if took >= SLOW_SYNC {
                let took_ms = took.as_millis() as u64;
                tracing::warn!(took_ms, segment = self.segment, "slow log fsync");
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Crash-safe order: the snapshot renamed into place and the next segment synced before
    /// the older files are removed. A crash in between leaves extra old records, which replay
    /// skips or overrides.
    fn compact(&mut self, c: Compaction) -> Result<(), WalError> {
        // One snapshot at a time: an older one must not land after a newer one.
        if let Some(previous) = self.snapshotting.take() {
            let _ = previous.join();
        }
        let started = Instant::now();
        let path = segment_path(&self.dir, self.segment);
        self.file.sync_data().map_err(io_err(&path))?;
        if !c.background {
            snapshot::write(&self.dir, &*c.snapshot)?;
        }
        let next = self.roll(&c.tail)?;
        // Appends queued behind a compaction wait for this part: it is their stall.
        let waited_ms = started.elapsed().as_millis() as u64;
        let job = SnapshotJob {
            dir: self.dir.clone(),
            source: c.snapshot,
            tail_records: c.tail.len(),
            segment: next,
            waited_ms,
        };
        if !c.background {
            return job.finish(started, None);
        }
        let on_snapshot = self.on_snapshot.clone();
        let handle = thread::Builder::new()
            .name("wal-snapshot".into())
            .spawn(move || {
                crate::idle::lower_priority("snapshot");
                let started = Instant::now();
                if let Err(e) = snapshot::write(&job.dir, &*job.source)
                    .and_then(|_| job.finish(started, Some(&*on_snapshot)))
                {
                    fatal(&e);
                }
            })
            .map_err(io_err(&self.dir))?;
        self.snapshotting = Some(handle);
        Ok(())
    }

    /// Start segment `self.segment + 1` holding `tail`, synced, and write to it from now on.
    fn roll(&mut self, tail: &[WalRecord]) -> Result<u64, WalError> {
        let next = self.segment + 1;
        let next_path = segment_path(&self.dir, next);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&next_path)
            .map_err(io_err(&next_path))?;
        let mut buf = Vec::new();
        for rec in tail {
            encode_frame(rec, &mut buf)?;
        }
        file.write_all(&buf).map_err(io_err(&next_path))?;
        file.sync_all().map_err(io_err(&next_path))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = next;
        self.unsynced = false;
        Ok(next)
    }
}

/// A node that cannot write its log must not go on acknowledging anything.
/// A log fsync that takes this long is logged (etcd warns of a slow fdatasync likewise): every
/// write waiting for it was held up as long, and the cause is the disk, not the node.
const SLOW_SYNC: Duration = Duration::from_millis(250);

pub(super) fn fatal(e: &WalError) -> ! {
    tracing::error!(error = %e, "write-ahead log failed; stopping the node to protect data");
    std::process::exit(70)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::snapshot::Snapshot;
    use crate::storage::{Command, Entry, Meta};
    use std::sync::Mutex;

    /// What replay found on disk, all at once: the snapshot, the records after it, and the
    /// segment to continue writing.
    #[derive(Debug)]
    struct Recovered {
        snapshot: Option<Snapshot>,
        records: Vec<WalRecord>,
        segment: u64,
    }

    fn recovered(dir: &Path) -> Result<Recovered, WalError> {
        let snapshot = open(dir)?;
        let mut records = Vec::new();
        let segment = replay(dir, &mut |rec| records.push(rec))?;
        Ok(Recovered {
            snapshot,
            records,
            segment,
        })
    }

    fn entry(index: u64, epoch: u64) -> WalRecord {
        WalRecord::Entry(Entry {
            index,
            epoch,
            command: Command::Put {
                key: format!("k{index}"),
                value: "v".into(),
            },
        })
    }

    fn wait_durable(durable: &Arc<Mutex<u64>>, seq: u64) {
        for _ in 0..500 {
            if *durable.lock().unwrap_or_else(|p| p.into_inner()) >= seq {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        unreachable!("writer did not report seq {seq} durable within 1 s");
    }

    fn start(dir: &Path, segment: u64) -> (Wal, Arc<Mutex<u64>>) {
        let (wal, durable, _) = start_reporting(dir, segment);
        (wal, durable)
    }

    /// A writer, the highest durable sequence, and the positions of background snapshots.
    fn start_reporting(dir: &Path, segment: u64) -> (Wal, Arc<Mutex<u64>>, Reported) {
        let durable = Arc::new(Mutex::new(0));
        let snapshots: Reported = Arc::default();
        let (d, s) = (durable.clone(), snapshots.clone());
        let wal = Wal::start(
            dir,
            segment,
            FsyncPolicy::Always,
            Box::new(move |seq| *d.lock().unwrap_or_else(|p| p.into_inner()) = seq),
            Box::new(move |at| s.lock().unwrap_or_else(|p| p.into_inner()).push(at)),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        (wal, durable, snapshots)
    }

    type Reported = Arc<Mutex<Vec<LogPosition>>>;

    #[test]
    fn records_survive_a_restart_in_order() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        wal.submit(WalOp::Append(vec![WalRecord::Meta(Meta {
            epoch: 3,
            leader: None,
            incarnation: 7,
        })]));
        wal.submit(WalOp::Append(vec![entry(1, 3), entry(2, 3)]));
        let seq = wal.submit(WalOp::Append(vec![
            WalRecord::Truncate { from: 2 },
            entry(2, 4),
        ]));
        wait_durable(&durable, seq);
        drop(wal);
        let rec = recovered(dir.path())?;
        assert_eq!(rec.records.len(), 5);
        assert_eq!(rec.records[3], WalRecord::Truncate { from: 2 });
        assert_eq!(rec.records[4], entry(2, 4));
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        let seq = wal.submit(WalOp::Append(vec![entry(1, 1), entry(2, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        // Simulate a crash in the middle of writing a third frame.
        let path = segment_path(dir.path(), 1);
        let mut torn = Vec::new();
        encode_frame(&entry(3, 1), &mut torn)?;
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&torn[..torn.len() - 3])
            .map_err(io_err(&path))?;
        drop(f);
        let rec = recovered(dir.path())?;
        assert_eq!(rec.records, vec![entry(1, 1), entry(2, 1)]);
        // The cut is persistent: a second recovery sees the same and the file is clean.
        let again = recovered(dir.path())?;
        assert_eq!(again.records.len(), 2);
        Ok(())
    }

    #[test]
    fn corruption_before_the_tail_refuses_to_start_and_zeroes_at_the_end_are_a_torn_tail(
    ) -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        let seq = wal.submit(WalOp::Append(vec![entry(1, 1), entry(2, 1), entry(3, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let good = fs::read(&path).map_err(io_err(&path))?;
        // Zeroes after the last frame (a file extended but never written): cut, start.
        let mut zeroed = good.clone();
        zeroed.extend_from_slice(&[0u8; 64]);
        fs::write(&path, &zeroed).map_err(io_err(&path))?;
        assert_eq!(recovered(dir.path())?.records.len(), 3);
        // One flipped byte in the first frame's payload: later frames are intact, so this is
        // not a torn write. Refuse, and say where.
        let mut flipped = good.clone();
        flipped[10] ^= 0xff;
        fs::write(&path, &flipped).map_err(io_err(&path))?;
        match recovered(dir.path()) {
            Err(WalError::Corrupt { offset: 0, .. }) => {}
            other => unreachable!("expected corruption at byte 0, got {other:?}"),
        }
        // The same damage in the last frame is a torn write: cut it, keep the rest.
        let mut last = good.clone();
        let n = last.len();
        last[n - 2] ^= 0xff;
        fs::write(&path, &last).map_err(io_err(&path))?;
        assert_eq!(
            recovered(dir.path())?.records,
            vec![entry(1, 1), entry(2, 1)]
        );
        Ok(())
    }

    fn snap(index: u64) -> Snapshot {
        Snapshot {
            last: LogPosition { epoch: 1, index },
            items: vec![("k1".into(), "v".into(), 1)],
            config: None,
        }
    }

    fn compact(wal: &mut Wal, at: u64, tail: Vec<WalRecord>, background: bool) -> u64 {
        wal.submit(WalOp::Compact(Compaction {
            snapshot: Box::new(snap(at)),
            tail,
            background,
        }))
    }

    #[test]
    fn compaction_keeps_snapshot_and_tail_only() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        wal.submit(WalOp::Append((1..=10).map(|i| entry(i, 1)).collect()));
        compact(&mut wal, 8, vec![entry(9, 1), entry(10, 1)], false);
        let seq = wal.submit(WalOp::Append(vec![entry(11, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        let rec = recovered(dir.path())?;
        assert_eq!(rec.snapshot, Some(snap(8)));
        assert_eq!(rec.records, vec![entry(9, 1), entry(10, 1), entry(11, 1)]);
        assert_eq!(rec.segment, 2);
        assert_eq!(segments(dir.path())?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_background_snapshot_keeps_old_segments_until_it_is_durable_then_reports(
    ) -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable, reported) = start_reporting(dir.path(), 1);
        wal.submit(WalOp::Append((1..=10).map(|i| entry(i, 1)).collect()));
        compact(&mut wal, 8, vec![entry(9, 1), entry(10, 1)], true);
        let seq = wal.submit(WalOp::Append(vec![entry(11, 1)]));
        wait_durable(&durable, seq);
        // The appends after the compaction went into the next segment whether or not the
        // snapshot has landed; once it reports, the older segment is gone.
        for _ in 0..500 {
            if !reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let at = reported.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(at, vec![LogPosition { epoch: 1, index: 8 }]);
        // A second one waits for the first, and lands after it.
        compact(&mut wal, 11, Vec::new(), true);
        let seq = wal.submit(WalOp::Append(vec![entry(12, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        std::thread::sleep(Duration::from_millis(200));
        let rec = recovered(dir.path())?;
        assert_eq!(rec.snapshot, Some(snap(11)));
        assert_eq!(rec.records, vec![entry(12, 1)]);
        assert_eq!(segments(dir.path())?.len(), 1);
        Ok(())
    }

    #[test]
    fn before_a_background_snapshot_lands_replay_sees_every_record() -> Result<(), WalError> {
        // What a crash between the roll and the snapshot's rename leaves: the old segment, then
        // the new one starting with the tail (a repeat of records the old one holds).
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        let seq = wal.submit(WalOp::Append((1..=3).map(|i| entry(i, 1)).collect()));
        wait_durable(&durable, seq);
        drop(wal);
        let (mut wal, durable) = start(dir.path(), 2);
        let seq = wal.submit(WalOp::Append(vec![entry(3, 1), entry(4, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        let rec = recovered(dir.path())?;
        assert_eq!(rec.snapshot, None);
        let indexes: Vec<u64> = rec
            .records
            .iter()
            .filter_map(|r| match r {
                WalRecord::Entry(e) => Some(e.index),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![1, 2, 3, 3, 4]);
        Ok(())
    }
}
