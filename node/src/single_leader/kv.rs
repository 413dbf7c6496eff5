//! The state machine: an ordered in-memory map rebuilt from the snapshot plus the log.
//!
//! Pure. Keys map to their value and the log index of the write that set it.

use std::collections::BTreeMap;
use std::ops::Bound;

use rc_api::KeyValue;

use crate::storage::snapshot::Snapshot;
use crate::storage::{Command, Op};

#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: BTreeMap<String, (String, u64)>,
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
            .map(|(k, v, i)| (k.clone(), (v.clone(), *i)))
            .collect();
        KvStore { map }
    }

    pub fn to_items(&self) -> Vec<(String, String, u64)> {
        self.map
            .iter()
            .map(|(k, (v, i))| (k.clone(), v.clone(), *i))
            .collect()
    }

    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        match command {
            Command::Noop | Command::Config(_) => Applied::default(),
            Command::Put { key, value } => {
                self.map.insert(key.clone(), (value.clone(), index));
                Applied::default()
            }
            Command::Delete { key } => Applied {
                deleted: Some(self.map.remove(key).is_some()),
            },
            Command::Batch(ops) => {
                for op in ops {
                    match op {
                        Op::Put { key, value } => {
                            self.map.insert(key.clone(), (value.clone(), index));
                        }
                        Op::Delete { key } => {
                            self.map.remove(key);
                        }
                    }
                }
                Applied::default()
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.map.get(key).map(|(v, i)| KeyValue {
            key: key.to_string(),
            value: v.clone(),
            mod_index: *i,
        })
    }

    /// Up to `limit` keys starting with `prefix`, in order; the flag says whether more matched.
    pub fn scan(&self, prefix: &str, limit: usize) -> (Vec<KeyValue>, bool) {
        let mut items = Vec::new();
        let range = self
            .map
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        for (k, (v, i)) in range {
            if !k.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                return (items, true);
            }
            items.push(KeyValue {
                key: k.clone(),
                value: v.clone(),
                mod_index: *i,
            });
        }
        (items, false)
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
