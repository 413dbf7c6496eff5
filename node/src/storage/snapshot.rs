//! Snapshots: the state machine at a log position, written atomically (temp file, fsync, rename,
//! fsync of the directory). Also the unit a leader ships to a follower that is too far behind.
//!
//! A snapshot is written from a [`SnapshotSource`]: an immutable view of the state (an O(1)
//! clone of a persistent map), encoded straight to the file, so the writer can run on its own
//! thread while the node goes on changing its state.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use rc_api::{LogPosition, Voter};

use super::unlink;
use super::wal::WalError;

const FILE: &str = "snapshot.bin";
const TMP: &str = "snapshot.bin.tmp";
/// The previous snapshot while it is freed (see `unlink`); start-up deletes a leftover one.
const OLD: &str = "snapshot.bin.old.removing";

/// The state machine after applying every entry up to and including `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub last: LogPosition,
    /// (key, value, index of the write that produced it), in key order.
    pub items: Vec<(String, String, u64)>,
    /// Single-leader: the configuration entry in force at `last` (its index and voters).
    pub config: Option<(u64, Vec<Voter>)>,
}

/// The state a snapshot file is written from, off the node's lock: it must be an immutable view.
pub trait SnapshotSource: Send + 'static {
    /// The log position the state is at (the default position for leaderless stores).
    fn last(&self) -> LogPosition;
    /// Number of keys, for the log line.
    fn keys(&self) -> usize;
    /// Encode the whole state (the payload: postcard, as `read` decodes it) into `out`.
    fn encode_into(&self, out: &mut dyn Write) -> std::io::Result<()>;
}

/// Encode `value` into `out` with postcard.
pub fn encode_to<T: Serialize + ?Sized>(value: &T, out: &mut dyn Write) -> std::io::Result<()> {
    postcard::to_io(value, out)
        .map(|_| ())
        .map_err(std::io::Error::other)
}

/// A snapshot file's bytes as received from a leader, written back as they are (checked, not
/// decoded and encoded again).
pub struct Received {
    last: LogPosition,
    keys: usize,
    bytes: Vec<u8>,
}

impl Received {
    /// The file's bytes and what was decoded from them (`None`: truncated or corrupt).
    pub fn decode(bytes: Vec<u8>) -> Option<(Snapshot, Received)> {
        let snap: Snapshot = decode(&bytes)?;
        let (last, keys) = (snap.last, snap.items.len());
        Some((snap, Received { last, keys, bytes }))
    }
}

impl SnapshotSource for Received {
    fn last(&self) -> LogPosition {
        self.last
    }
    fn keys(&self) -> usize {
        self.keys
    }
    fn encode_into(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(self.bytes.get(4..).unwrap_or_default())
    }
}

impl SnapshotSource for Snapshot {
    fn last(&self) -> LogPosition {
        self.last
    }
    fn keys(&self) -> usize {
        self.items.len()
    }
    fn encode_into(&self, out: &mut dyn Write) -> std::io::Result<()> {
        encode_to(self, out)
    }
}

/// Decode a snapshot file's bytes: `None` when truncated or corrupt, or when the payload is
/// not exactly one `T` (bytes left over mean it was written as another type).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    decode_payload(payload(bytes)?)
}

/// The payload of a snapshot file's bytes, if its checksum holds.
pub fn payload(bytes: &[u8]) -> Option<&[u8]> {
    let (crc, payload) = bytes.split_at_checked(4)?;
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    (crc == crc32fast::hash(payload)).then_some(payload)
}

/// A payload decoded as exactly one `T`.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// The snapshot in `dir`, decoded as `T` (each mode has its own snapshot type).
pub fn read<T: DeserializeOwned>(dir: &Path) -> Result<Option<T>, WalError> {
    read_as(dir, decode)
}

/// The snapshot in `dir`, decoded by `decode` (`None`: corrupt).
pub fn read_as<T>(dir: &Path, decode: fn(&[u8]) -> Option<T>) -> Result<Option<T>, WalError> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => match decode(&bytes) {
            Some(s) => Ok(Some(s)),
            // Only a fully written snapshot is ever renamed into place, so this is disk damage.
            None => Err(WalError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt snapshot"),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalError::Io { path, source }),
    }
}

/// Raw bytes of the current snapshot file, for shipping to a follower.
pub fn read_bytes(dir: &Path) -> Result<Option<Vec<u8>>, WalError> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WalError::Io { path, source }),
    }
}

/// Write `source` to the snapshot file atomically: a temporary file (CRC, then the payload
/// streamed through the checksum), fsync, rename, fsync of the directory.
pub fn write(dir: &Path, source: &dyn SnapshotSource) -> Result<(), WalError> {
    let tmp = dir.join(TMP);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&[0; 4]).map_err(io(&tmp))?;
    // Buffered above the checksum, so that it and the file see large writes.
    let mut out = BufWriter::with_capacity(
        1 << 20,
        Checksummed {
            inner: SyncedEvery { file, unsynced: 0 },
            crc: crc32fast::Hasher::new(),
        },
    );
    source.encode_into(&mut out).map_err(io(&tmp))?;
    let out = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    let (crc, mut file) = (out.crc.finalize(), out.inner.file);
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&crc.to_le_bytes()))
        .and_then(|_| file.sync_all())
        .map_err(io(&tmp))?;
    // Keep the previous snapshot's blocks linked past the rename, to free them gradually.
    let (path, old) = (dir.join(FILE), dir.join(OLD));
    let kept = match fs::hard_link(&path, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(&old)(e)),
    };
    fs::rename(&tmp, &path).map_err(io(&tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    if kept {
        unlink::remove_gradually(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Bytes a snapshot writes between two syncs of its file. Syncing once at the end would leave
/// the whole file (100+ MB for a million keys) dirty, and the flush would hold up the log's
/// fsyncs on the same disk for as long: writes would stall (p99.9 33 ms against 9 ms, 1 M
/// keys, `rc-bench --stall-keys`). Smaller syncs keep each wait of the log's fsyncs short.
const SYNC_EVERY: usize = 1 << 20;

/// A file synced every [`SYNC_EVERY`] bytes written.
struct SyncedEvery {
    file: File,
    unsynced: usize,
}

impl Write for SyncedEvery {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A writer that checksums what passes through it.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_snapshot_is_written_back_byte_for_byte() -> Result<(), Box<dyn std::error::Error>>
    {
        let (sent, received) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let snap = Snapshot {
            last: LogPosition { epoch: 2, index: 9 },
            items: vec![("k".into(), "v".into(), 9)],
            config: Some((
                1,
                vec![Voter {
                    id: "n0".into(),
                    incarnation: 3,
                }],
            )),
        };
        write(sent.path(), &snap)?;
        let bytes = read_bytes(sent.path())?.ok_or("no snapshot written")?;
        let (decoded, file) = Received::decode(bytes.clone()).ok_or("does not decode")?;
        assert_eq!(decoded, snap);
        write(received.path(), &file)?;
        assert_eq!(read_bytes(received.path())?, Some(bytes.clone()));
        let mut torn = bytes;
        torn.pop();
        assert!(
            Received::decode(torn).is_none(),
            "a cut-short file is refused"
        );
        Ok(())
    }
}
