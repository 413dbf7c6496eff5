//! Per-key replicated state (a dotted version vector set) and its merge rules. Pure.
//!
//! A key holds a set of *siblings* (values, `None` for a delete's tombstone), each tagged with a
//! dot `(node, counter)` and a hybrid-logical-clock timestamp, plus a *clock*: per node, the
//! highest counter this state has seen. This is Riak's dotted-version-vector set:
//!
//! - a coordinator writes with the client's context: siblings the context covers are superseded,
//!   the rest stay as concurrent values, and the new value gets a dot `(actor, counter)`. Dots
//!   are never reused (Riak's KV679): the actor is the coordinating node *and its incarnation*
//!   (a process run: a node restarted, or with a wiped disk, is a new actor), and the counter is
//!   above the local clock, the context and every dot this incarnation issued before (for any
//!   key), so neither a lost state nor a purged tombstone can make a node issue a dot that some
//!   replica's clock already covers;
//! - replicas merge whole states: a sibling survives unless the other side's clock covers it
//!   without holding it. Merging is commutative, associative and idempotent, so repair, hints
//!   and anti-entropy can deliver states in any order, any number of times.
//!
//! `LastWriteWins` keeps only the sibling with the highest (timestamp, node, counter): concurrent
//! writes lose all but one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ring::{hash, StableHasher};
pub use rc_api::ConflictResolution;

pub type Clock = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sibling {
    pub node: String,
    pub counter: u64,
    /// Hybrid logical clock: physical milliseconds << 16 | logical counter.
    pub ts: u64,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub siblings: Vec<Sibling>,
    pub clock: Clock,
}

fn covered(clock: &Clock, s: &Sibling) -> bool {
    clock.get(&s.node).is_some_and(|c| *c >= s.counter)
}

fn join(a: &Clock, b: &Clock) -> Clock {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
    out
}

fn lww_winner(siblings: impl Iterator<Item = Sibling>) -> Option<Sibling> {
    siblings.max_by(|a, b| (a.ts, &a.node, a.counter).cmp(&(b.ts, &b.node, b.counter)))
}

impl KeyState {
    /// Rough encoded size, to bound pages.
    pub fn approx_bytes(&self) -> usize {
        self.siblings
            .iter()
            .map(|s| 48 + s.node.len() + s.value.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + self.clock.keys().map(|k| k.len() + 12).sum::<usize>()
    }

    /// Values currently visible (tombstones excluded).
    pub fn values(&self) -> Vec<String> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.clone())
            .collect()
    }

    /// Highest timestamp in the state (for the clock and for tombstone purging).
    pub fn max_ts(&self) -> u64 {
        self.siblings.iter().map(|s| s.ts).max().unwrap_or(0)
    }

    /// Every sibling is a tombstone written before `before`.
    pub fn is_dead_before(&self, before: u64) -> bool {
        self.siblings
            .iter()
            .all(|s| s.value.is_none() && s.ts < before)
    }

    /// A digest of the state for anti-entropy (stable: siblings are kept sorted).
    /// The state's encoding is hashed as it is written: the same value as hashing the encoded
    /// bytes, which peers of every version compare.
    pub fn digest(&self, key: &str) -> u64 {
        let state = postcard::serialize_with_flavor(self, StableHasher::new())
            .unwrap_or_else(|_| hash(&[]));
        hash(key.as_bytes()) ^ state.rotate_left(17)
    }

    fn normalized(mut self) -> KeyState {
        self.siblings.sort();
        self.siblings.dedup();
        self
    }

    /// Coordinate a write (a delete when `value` is `None`) on this owner's local state, as
    /// `actor`, whose previous dot (for any key) had counter `issued`. The new dot's counter is
    /// `max(local, context, issued) + 1`: read it back from the result's clock.
    pub fn put(
        &self,
        mode: ConflictResolution,
        actor: &str,
        issued: u64,
        context: &Clock,
        value: Option<String>,
        ts: u64,
    ) -> KeyState {
        let seen = |c: &Clock| c.get(actor).copied().unwrap_or(0);
        let counter = seen(&self.clock).max(seen(context)).max(issued) + 1;
        let new = Sibling {
            node: actor.to_string(),
            counter,
            ts,
            value,
        };
        let mut clock = join(&self.clock, context);
        clock.insert(actor.to_string(), counter);
        let siblings = match mode {
            ConflictResolution::LastWriteWins => {
                lww_winner(self.siblings.iter().cloned().chain(std::iter::once(new)))
                    .into_iter()
                    .collect()
            }
            ConflictResolution::Siblings => self
                .siblings
                .iter()
                .filter(|s| !covered(context, s))
                .cloned()
                .chain(std::iter::once(new))
                .collect(),
        };
        KeyState { siblings, clock }.normalized()
    }

    /// Merge another replica's state into this one.
    pub fn merge(&self, other: &KeyState, mode: ConflictResolution) -> KeyState {
        let clock = join(&self.clock, &other.clock);
        let siblings = match mode {
            ConflictResolution::LastWriteWins => {
                lww_winner(self.siblings.iter().chain(&other.siblings).cloned())
                    .into_iter()
                    .collect()
            }
            ConflictResolution::Siblings => {
                let mut out: Vec<Sibling> = self
                    .siblings
                    .iter()
                    .filter(|s| other.siblings.contains(s) || !covered(&other.clock, s))
                    .cloned()
                    .collect();
                out.extend(
                    other
                        .siblings
                        .iter()
                        .filter(|s| !self.siblings.contains(s) && !covered(&self.clock, s))
                        .cloned(),
                );
                out
            }
        };
        KeyState { siblings, clock }.normalized()
    }
}

/// Opaque causal-context token handed to clients: hex of the postcard-encoded (key hash,
/// clock). It is bound to its key: a context read from one key cannot supersede another's values.
pub fn encode_context(key: &str, clock: &Clock) -> String {
    postcard::to_allocvec(&(hash(key.as_bytes()), clock))
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The clock of a token issued for `key`; `None` for garbage or another key's token.
pub fn decode_context(key: &str, token: &str) -> Option<Clock> {
    if token.is_empty() {
        return Some(Clock::new());
    }
    if !token.len().is_multiple_of(2) || token.len() > 64 * 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let (bound, clock): (u64, Clock) = postcard::from_bytes(&bytes?).ok()?;
    (bound == hash(key.as_bytes())).then_some(clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn siblings_keep_concurrent_writes_and_a_context_write_supersedes_them() {
        let empty = KeyState::default();
        // Two coordinators write concurrently (neither saw the other).
        let a = empty.put(
            ConflictResolution::Siblings,
            "n1",
            0,
            &Clock::new(),
            v("a"),
            10,
        );
        let b = empty.put(
            ConflictResolution::Siblings,
            "n2",
            0,
            &Clock::new(),
            v("b"),
            11,
        );
        let merged = a.merge(&b, ConflictResolution::Siblings);
        assert_eq!(merged.values(), vec!["a".to_string(), "b".to_string()]);
        // Merge is order-independent and idempotent.
        assert_eq!(merged, b.merge(&a, ConflictResolution::Siblings));
        assert_eq!(merged, merged.merge(&a, ConflictResolution::Siblings));
        // A client that read both and writes with that context replaces both.
        let resolved = merged.put(
            ConflictResolution::Siblings,
            "n1",
            0,
            &merged.clock,
            v("ab"),
            12,
        );
        assert_eq!(resolved.values(), vec!["ab".to_string()]);
        // Stale replicas merging in old states cannot resurrect a superseded sibling.
        assert_eq!(
            resolved.merge(&a, ConflictResolution::Siblings).values(),
            vec!["ab".to_string()]
        );
        assert_eq!(
            b.merge(&resolved, ConflictResolution::Siblings).values(),
            vec!["ab".to_string()]
        );
    }

    #[test]
    fn a_write_without_context_never_drops_an_acknowledged_value_in_sibling_mode() {
        let s1 = KeyState::default().put(
            ConflictResolution::Siblings,
            "n1",
            0,
            &Clock::new(),
            v("first"),
            1,
        );
        let s2 = s1.put(
            ConflictResolution::Siblings,
            "n1",
            0,
            &Clock::new(),
            v("second"),
            2,
        );
        assert_eq!(
            s2.values().len(),
            2,
            "blind writes are siblings, not overwrites"
        );
    }

    #[test]
    fn last_write_wins_keeps_the_highest_timestamp_only() {
        let a = KeyState::default().put(
            ConflictResolution::LastWriteWins,
            "n1",
            0,
            &Clock::new(),
            v("a"),
            10,
        );
        let b = KeyState::default().put(
            ConflictResolution::LastWriteWins,
            "n2",
            0,
            &Clock::new(),
            v("b"),
            20,
        );
        assert_eq!(
            a.merge(&b, ConflictResolution::LastWriteWins).values(),
            vec!["b".to_string()]
        );
        assert_eq!(
            b.merge(&a, ConflictResolution::LastWriteWins).values(),
            vec!["b".to_string()]
        );
        let deleted = b.put(
            ConflictResolution::LastWriteWins,
            "n1",
            0,
            &Clock::new(),
            None,
            30,
        );
        assert!(deleted.values().is_empty());
        assert!(deleted.is_dead_before(31) && !deleted.is_dead_before(30));
        assert_eq!(
            deleted
                .merge(&a, ConflictResolution::LastWriteWins)
                .values(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn contexts_round_trip_and_garbage_is_rejected() {
        let mut c = Clock::new();
        c.insert("n1".into(), 7);
        c.insert("n2".into(), 300);
        assert_eq!(
            decode_context("k", &encode_context("k", &c)),
            Some(c.clone())
        );
        assert_eq!(decode_context("k", ""), Some(Clock::new()));
        assert_eq!(decode_context("k", "zz"), None);
        assert_eq!(decode_context("k", "abc"), None);
        assert_eq!(
            decode_context("other", &encode_context("k", &c)),
            None,
            "a context is bound to its key"
        );
    }
}

#[cfg(test)]
#[path = "dvv_props.rs"]
mod props;
