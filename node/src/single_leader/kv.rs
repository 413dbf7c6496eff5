//! The state machine: an ordered in-memory map rebuilt from the snapshot plus the log.
//!
//! Pure. Keys map to their value and the log index of the write that set it. The map is
//! persistent (structurally shared), so a snapshot of it is an O(1) clone taken under the node
//! lock and encoded on another thread while writes go on.

use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use rc_api::{KeyValue, LogPosition, Voter};

use crate::storage::snapshot::{Received, Snapshot, SnapshotSource};
use crate::storage::{Command, Op};

/// Key → (value, index of the write that set it). `Arc<str>` so that copying a shared node of
/// the map on write (while a snapshot holds the old one) copies pointers, not strings.
type Map = OrdMap<Arc<str>, (Arc<str>, u64)>;

#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: Map,
}

/// What applying one command did, reported back to the client that proposed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// For a single delete: whether the key existed.
    pub deleted: Option<bool>,
}

impl KvStore {
    pub fn from_snapshot(snap: &Snapshot) -> KvStore {
        let map = snap
            .items
            .iter()
            .map(|(k, v, i)| (Arc::from(k.as_str()), (Arc::from(v.as_str()), *i)))
            .collect();
        KvStore { map }
    }

    /// Keys held.
    pub fn key_count(&self) -> usize {
        self.map.len()
    }

    /// The state at `last`, to be written as a snapshot: O(1), whatever the number of keys.
    pub fn snapshot(&self, last: LogPosition, config: Option<(u64, Vec<Voter>)>) -> KvSnapshot {
        KvSnapshot {
            last,
            config,
            map: self.map.clone(),
        }
    }

    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        match command {
            Command::Noop | Command::Config(_) => Applied::default(),
            Command::Put { key, value } => {
                self.put(key, value, index);
                Applied::default()
            }
            Command::Delete { key } => Applied {
                deleted: Some(self.map.remove(key.as_str()).is_some()),
            },
            Command::Batch(ops) => {
                for op in ops {
                    match op {
                        Op::Put { key, value } => self.put(key, value, index),
                        Op::Delete { key } => {
                            self.map.remove(key.as_str());
                        }
                    }
                }
                Applied::default()
            }
        }
    }

    fn put(&mut self, key: &str, value: &str, index: u64) {
        self.map.insert(Arc::from(key), (Arc::from(value), index));
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.map.get(key).map(|(v, i)| KeyValue {
            key: key.to_string(),
            value: v.to_string(),
            mod_index: *i,
        })
    }

    /// Up to `limit` keys starting with `prefix`, in order; the flag says whether more matched.
    pub fn scan(&self, prefix: &str, limit: usize) -> (Vec<KeyValue>, bool) {
        let mut items = Vec::new();
        let range = self
            .map
            .range::<_, str>((Bound::Included(prefix), Bound::Unbounded));
        for (k, (v, i)) in range {
            if !k.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                return (items, true);
            }
            items.push(KeyValue {
                key: k.to_string(),
                value: v.to_string(),
                mod_index: *i,
            });
        }
        (items, false)
    }
}

/// The state machine at one log position: what a snapshot file is written from. It encodes to
/// the bytes of the equivalent [`Snapshot`], so readers decode it as one.
pub struct KvSnapshot {
    last: LogPosition,
    config: Option<(u64, Vec<Voter>)>,
    map: Map,
}

impl SnapshotSource for KvSnapshot {
    fn last(&self) -> LogPosition {
        self.last
    }
    fn keys(&self) -> usize {
        self.map.len()
    }
    fn encode_into(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        // Field for field the shape of `Snapshot`: postcard writes structs as their fields.
        let shape = (self.last, Items(&self.map), &self.config);
        crate::storage::snapshot::encode_to(&shape, out)
    }
}

/// A snapshot received from a leader, made ready before the node's lock is taken: the state
/// machine built from it, and the file's bytes to write back as they came.
pub struct ReceivedSnapshot {
    pub last: LogPosition,
    pub config: Option<(u64, Vec<Voter>)>,
    pub kv: KvStore,
    pub file: Received,
}

impl ReceivedSnapshot {
    /// `None` when the bytes are truncated or corrupt.
    pub fn decode(bytes: Vec<u8>) -> Option<ReceivedSnapshot> {
        let (snap, file) = Received::decode(bytes)?;
        Some(ReceivedSnapshot {
            last: snap.last,
            kv: KvStore::from_snapshot(&snap),
            config: snap.config,
            file,
        })
    }
}

/// The map as `Snapshot::items`: a sequence of (key, value, index).
struct Items<'a>(&'a Map);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, (v, i)) in self.0.iter() {
            seq.serialize_element(&(&**k, &**v, *i))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn a_snapshot_encodes_as_the_snapshot_it_is_read_back_as(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut kv = KvStore::default();
        kv.apply(1, &put("b", "2"));
        kv.apply(2, &put("a", "1"));
        let last = LogPosition { epoch: 3, index: 2 };
        let config = Some((
            1,
            vec![Voter {
                id: "n0".into(),
                incarnation: 4,
            }],
        ));
        let view = kv.snapshot(last, config.clone());
        // Writes after the view do not reach it.
        kv.apply(3, &put("c", "3"));
        let mut bytes = Vec::new();
        view.encode_into(&mut bytes)?;
        let back: Snapshot = postcard::from_bytes(&bytes)?;
        let items = vec![("a".into(), "1".into(), 2), ("b".into(), "2".into(), 1)];
        assert_eq!(
            back,
            Snapshot {
                last,
                items,
                config
            }
        );
        assert_eq!(
            KvStore::from_snapshot(&back).get("a").map(|v| v.mod_index),
            Some(2)
        );
        Ok(())
    }

    #[test]
    fn scan_returns_prefix_matches_in_order_with_a_more_flag() {
        let mut kv = KvStore::default();
        for (i, k) in ["b/2", "a/1", "b/1", "b/3", "c"].iter().enumerate() {
            kv.apply(i as u64 + 1, &put(k, "x"));
        }
        let (items, more) = kv.scan("b/", 2);
        assert_eq!(
            items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["b/1", "b/2"]
        );
        assert!(more);
        let (items, more) = kv.scan("b/", 3);
        assert_eq!(items.len(), 3);
        assert!(!more);
    }

    #[test]
    fn delete_reports_whether_the_key_existed_and_batch_applies_in_order() {
        let mut kv = KvStore::default();
        kv.apply(1, &put("a", "1"));
        assert_eq!(
            kv.apply(2, &Command::Delete { key: "a".into() }).deleted,
            Some(true)
        );
        assert_eq!(
            kv.apply(3, &Command::Delete { key: "a".into() }).deleted,
            Some(false)
        );
        kv.apply(
            4,
            &Command::Batch(vec![
                Op::Put {
                    key: "x".into(),
                    value: "1".into(),
                },
                Op::Delete { key: "x".into() },
                Op::Put {
                    key: "y".into(),
                    value: "2".into(),
                },
            ]),
        );
        assert!(kv.get("x").is_none());
        assert_eq!(
            kv.get("y").map(|v| (v.value, v.mod_index)),
            Some(("2".into(), 4))
        );
    }
}
