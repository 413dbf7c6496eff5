//! Snapshots: the state machine at a log position, written atomically (temp file, fsync, rename,
//! fsync of the directory). Also the unit a leader ships to a follower that is too far behind.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use rc_api::{LogPosition, Voter};

use super::wal::WalError;

const FILE: &str = "snapshot.bin";
const TMP: &str = "snapshot.bin.tmp";

/// The state machine after applying every entry up to and including `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub last: LogPosition,
    /// (key, value, index of the write that produced it), in key order.
    pub items: Vec<(String, String, u64)>,
    /// Single-leader: the configuration entry in force at `last` (its index and voters).
    pub config: Option<(u64, Vec<Voter>)>,
}

impl Snapshot {
    pub fn encode(&self) -> Result<Vec<u8>, WalError> {
        let payload = postcard::to_allocvec(self)?;
        let mut out = Vec::with_capacity(payload.len() + 4);
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// `None` when the bytes are truncated or corrupt.
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let (crc, payload) = bytes.split_at_checked(4)?;
        if u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) != crc32fast::hash(payload) {
            return None;
        }
        postcard::from_bytes(payload).ok()
    }
}

pub fn read(dir: &Path) -> Result<Option<Snapshot>, WalError> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => match Snapshot::decode(&bytes) {
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

pub fn write(dir: &Path, snap: &Snapshot) -> Result<(), WalError> {
    let bytes = snap.encode()?;
    let tmp = dir.join(TMP);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, dir.join(FILE)).map_err(io(&tmp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
