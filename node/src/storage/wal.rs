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

use super::snapshot::{self, Snapshot};
use super::WalRecord;

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
    /// Write `snapshot`, start a fresh segment holding `tail` (the records still needed after
    /// it), then delete the older segments and snapshot.
    Compact {
        snapshot: Box<Snapshot>,
        tail: Vec<WalRecord>,
    },
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

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What replay found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Snapshot>,
    pub records: Vec<WalRecord>,
    /// Number of the segment to continue writing.
    pub segment: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:012}.log"))
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
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

/// Read the snapshot and every segment. Cuts a torn tail off the last segment.
pub fn recover(dir: &Path) -> Result<Recovered, WalError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let snapshot = snapshot::read(dir)?;
    let segs = segments(dir)?;
    let mut records = Vec::new();
    for (i, (_, path)) in segs.iter().enumerate() {
        let last_segment = i + 1 == segs.len();
        let (good_len, len) = read_segment(path, last_segment, &mut records)?;
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
    let segment = segs.last().map(|(n, _)| *n).unwrap_or(1);
    Ok(Recovered {
        snapshot,
        records,
        segment,
    })
}

/// Append the segment's valid records to `out`; return the length of its valid prefix and of
/// the file. Only the last segment may end in a torn tail; any other damage is an error.
fn read_segment(
    path: &Path,
    last_segment: bool,
    out: &mut Vec<WalRecord>,
) -> Result<(u64, u64), WalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let total = bytes.len();
    let mut offset = 0usize;
    while offset < total {
        let rest = &bytes[offset..];
        let frame = parse_frame(rest);
        let problem = match frame {
            Ok((rec, used)) => {
                out.push(rec);
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

fn sync_dir(dir: &Path) -> Result<(), WalError> {
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
                WalOp::Compact { snapshot, tail } => {
                    self.flush(buf)?;
                    self.compact(&snapshot, &tail)?;
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
            self.file.sync_data().map_err(io_err(&path))?;
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Crash-safe order: snapshot renamed into place, then the new segment synced, then old files
    /// removed. A crash in between leaves extra old records, which replay skips or overrides.
    fn compact(&mut self, snap: &Snapshot, tail: &[WalRecord]) -> Result<(), WalError> {
        let started = std::time::Instant::now();
        let path = segment_path(&self.dir, self.segment);
        self.file.sync_data().map_err(io_err(&path))?;
        snapshot::write(&self.dir, snap)?;
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
        for (n, old) in segments(&self.dir)? {
            if n < next {
                fs::remove_file(&old).map_err(io_err(&old))?;
            }
        }
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = next;
        self.unsynced = false;
        // Appends queued behind a compaction wait for it: its duration is a write stall.
        tracing::info!(
            snapshot_index = snap.last.index,
            keys = snap.items.len(),
            tail_records = tail.len(),
            segment = next,
            took_ms = started.elapsed().as_millis() as u64,
            "compacted the log into a snapshot"
        );
        Ok(())
    }
}

/// A node that cannot write its log must not go on acknowledging anything.
fn fatal(e: &WalError) -> ! {
    tracing::error!(error = %e, "write-ahead log failed; stopping the node to protect data");
    std::process::exit(70)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Command, Entry, Meta};
    use std::sync::{Arc, Mutex};

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
        let durable = Arc::new(Mutex::new(0));
        let d = durable.clone();
        let wal = Wal::start(
            dir,
            segment,
            FsyncPolicy::Always,
            Box::new(move |s| *d.lock().unwrap_or_else(|p| p.into_inner()) = s),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        (wal, durable)
    }

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
        let rec = recover(dir.path())?;
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
        let rec = recover(dir.path())?;
        assert_eq!(rec.records, vec![entry(1, 1), entry(2, 1)]);
        // The cut is persistent: a second recovery sees the same and the file is clean.
        let again = recover(dir.path())?;
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
        assert_eq!(recover(dir.path())?.records.len(), 3);
        // One flipped byte in the first frame's payload: later frames are intact, so this is
        // not a torn write. Refuse, and say where.
        let mut flipped = good.clone();
        flipped[10] ^= 0xff;
        fs::write(&path, &flipped).map_err(io_err(&path))?;
        match recover(dir.path()) {
            Err(WalError::Corrupt { offset: 0, .. }) => {}
            other => unreachable!("expected corruption at byte 0, got {other:?}"),
        }
        // The same damage in the last frame is a torn write: cut it, keep the rest.
        let mut last = good.clone();
        let n = last.len();
        last[n - 2] ^= 0xff;
        fs::write(&path, &last).map_err(io_err(&path))?;
        assert_eq!(recover(dir.path())?.records, vec![entry(1, 1), entry(2, 1)]);
        Ok(())
    }

    #[test]
    fn compaction_keeps_snapshot_and_tail_only() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(io_err(Path::new("tmp")))?;
        let (mut wal, durable) = start(dir.path(), 1);
        wal.submit(WalOp::Append((1..=10).map(|i| entry(i, 1)).collect()));
        let snap = Snapshot {
            last: rc_api::LogPosition { epoch: 1, index: 8 },
            items: vec![("k1".into(), "v".into(), 1)],
            config: None,
        };
        wal.submit(WalOp::Compact {
            snapshot: Box::new(snap.clone()),
            tail: vec![entry(9, 1), entry(10, 1)],
        });
        let seq = wal.submit(WalOp::Append(vec![entry(11, 1)]));
        wait_durable(&durable, seq);
        drop(wal);
        let rec = recover(dir.path())?;
        assert_eq!(rec.snapshot, Some(snap));
        assert_eq!(rec.records, vec![entry(9, 1), entry(10, 1), entry(11, 1)]);
        assert_eq!(rec.segment, 2);
        assert_eq!(segments(dir.path())?.len(), 1);
        Ok(())
    }
}
