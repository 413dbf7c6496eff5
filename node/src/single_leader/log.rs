//! The in-memory replicated log: entries after the latest snapshot, and the Raft log checks.
//!
//! Pure. Entries are `Arc`ed so a replication sender can take a batch without copying data
//! under the node's lock.

use std::collections::VecDeque;
use std::sync::Arc;

use rc_api::LogPosition;

use crate::storage::Entry;

#[derive(Debug, Default)]
pub struct Log {
    /// Position of the last entry folded into the snapshot (0,0 when there is none).
    base: LogPosition,
    entries: VecDeque<Arc<Entry>>,
}

/// Result of the (prevIndex, prevEpoch) consistency check a follower runs on every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrevCheck {
    Match,
    /// The follower's log ends before `prev`; the leader should back up to `last_index + 1`.
    Missing {
        last_index: u64,
    },
    /// The follower has an entry at prev.index from another epoch; back up before it.
    Conflict {
        index: u64,
    },
}

impl Log {
    pub fn with_base(base: LogPosition) -> Log {
        Log {
            base,
            entries: VecDeque::new(),
        }
    }

    pub fn base(&self) -> LogPosition {
        self.base
    }

    pub fn last(&self) -> LogPosition {
        self.entries
            .back()
            .map(|e| e.position())
            .unwrap_or(self.base)
    }

    /// The epoch of the entry at `index`; `None` if it is past the end or compacted away.
    pub fn epoch_at(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.epoch);
        }
        self.get(index).map(|e| e.epoch)
    }

    pub fn get(&self, index: u64) -> Option<&Arc<Entry>> {
        if index <= self.base.index {
            return None;
        }
        self.entries.get((index - self.base.index - 1) as usize)
    }

    /// Up to `max` entries starting at `from` (which must be after the base).
    pub fn slice(&self, from: u64, max: usize) -> Vec<Arc<Entry>> {
        let start = from.saturating_sub(self.base.index + 1) as usize;
        self.entries.iter().skip(start).take(max).cloned().collect()
    }

    /// Append the next entry. The caller guarantees `entry.index == last().index + 1`.
    pub fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last().index + 1);
        self.entries.push_back(Arc::new(entry));
    }

    /// Drop every entry with index >= `from`. Returns how many were dropped.
    pub fn truncate_from(&mut self, from: u64) -> usize {
        let keep = from.saturating_sub(self.base.index + 1) as usize;
        let dropped = self.entries.len().saturating_sub(keep);
        self.entries.truncate(keep);
        dropped
    }

    /// Forget entries up to and including `upto` (they are in a snapshot now). Returns them,
    /// for the caller to free after it lets go of the node's lock (a snapshot covers 100,000
    /// entries by default: freeing them is a stall of its own).
    pub fn compact_to(&mut self, upto: LogPosition) -> VecDeque<Arc<Entry>> {
        let covered = self
            .entries
            .iter()
            .take_while(|e| e.index <= upto.index)
            .count();
        let after = self.entries.split_off(covered);
        self.base = upto;
        std::mem::replace(&mut self.entries, after)
    }

    /// Replace the whole log by a snapshot's position (a follower that installed a snapshot).
    pub fn reset(&mut self, base: LogPosition) {
        self.entries.clear();
        self.base = base;
    }

    pub fn check_prev(&self, prev: LogPosition) -> PrevCheck {
        let last = self.last();
        if prev.index > last.index {
            return PrevCheck::Missing {
                last_index: last.index,
            };
        }
        if prev.index < self.base.index {
            // Everything up to the base is committed, and committed prefixes agree.
            return PrevCheck::Match;
        }
        match self.epoch_at(prev.index) {
            Some(e) if e == prev.epoch => PrevCheck::Match,
            _ => PrevCheck::Conflict { index: prev.index },
        }
    }

    /// Entries after `index` as a list of records to re-write after a compaction.
    pub fn entries_after(&self, index: u64) -> impl Iterator<Item = &Arc<Entry>> {
        self.entries.iter().filter(move |e| e.index > index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Command;

    fn e(index: u64, epoch: u64) -> Entry {
        Entry {
            index,
            epoch,
            command: Command::Noop,
        }
    }

    fn log_of(epochs: &[u64]) -> Log {
        let mut log = Log::default();
        for (i, ep) in epochs.iter().enumerate() {
            log.append(e(i as u64 + 1, *ep));
        }
        log
    }

    #[test]
    fn prev_check_matches_missing_and_conflicts() {
        let log = log_of(&[1, 1, 2]);
        assert_eq!(
            log.check_prev(LogPosition { epoch: 0, index: 0 }),
            PrevCheck::Match
        );
        assert_eq!(
            log.check_prev(LogPosition { epoch: 2, index: 3 }),
            PrevCheck::Match
        );
        assert_eq!(
            log.check_prev(LogPosition { epoch: 2, index: 5 }),
            PrevCheck::Missing { last_index: 3 }
        );
        assert_eq!(
            log.check_prev(LogPosition { epoch: 3, index: 3 }),
            PrevCheck::Conflict { index: 3 }
        );
    }

    #[test]
    fn truncation_drops_the_suffix_only() {
        let mut log = log_of(&[1, 1, 2, 2]);
        assert_eq!(log.truncate_from(3), 2);
        assert_eq!(log.last(), LogPosition { epoch: 1, index: 2 });
        assert_eq!(log.truncate_from(9), 0);
        log.append(e(3, 3));
        assert_eq!(log.epoch_at(3), Some(3));
    }

    #[test]
    fn compaction_moves_the_base_and_keeps_later_entries_addressable() {
        let mut log = log_of(&[1, 1, 2, 2, 3]);
        let covered = log.compact_to(LogPosition { epoch: 2, index: 3 });
        assert_eq!(
            covered.iter().map(|e| e.index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(log.base(), LogPosition { epoch: 2, index: 3 });
        assert!(log.get(3).is_none());
        assert_eq!(log.epoch_at(3), Some(2));
        assert_eq!(log.get(5).map(|e| e.epoch), Some(3));
        assert_eq!(log.slice(4, 10).len(), 2);
        // A prev below the base is committed history and always matches.
        assert_eq!(
            log.check_prev(LogPosition { epoch: 1, index: 1 }),
            PrevCheck::Match
        );
        assert_eq!(log.truncate_from(5), 1);
        assert_eq!(log.last(), LogPosition { epoch: 2, index: 4 });
    }
}
