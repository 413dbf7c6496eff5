//! What the benchmark asks of a backend: the operations the leaderless store performs.

use std::time::{Duration, Instant};

use anyhow::Result;
use rc_node::leaderless::dvv::KeyState;

/// A store of key states. Every backend keeps the node's record encoding (postcard).
pub trait Backend {
    /// Make `batch` durable: one durable commit (one fdatasync, or what the store does for
    /// one), as a group commit of `batch.len()` concurrent writes would.
    fn commit(&mut self, batch: Vec<(String, KeyState)>) -> Result<()>;

    /// The state of `key`, owned (what a read or a merge needs).
    fn get(&self, key: &str) -> Result<Option<KeyState>>;

    /// Visit the keys in `from..to` in key order with their owned states (what a stream page or
    /// an anti-entropy digest needs), until `visit` returns false.
    fn scan(&self, from: &str, to: &str, visit: &mut Visit) -> Result<()>;

    /// Restart figures: stop and start again on the same directory (and for the WAL, compact
    /// into a snapshot), each step timed. Returns (what, how long) pairs, in order.
    fn restart(&mut self) -> Result<Vec<(String, Duration)>>;
}

/// What a scan calls for each key in order, with its owned state; `false` stops the scan.
pub type Visit<'a> = dyn FnMut(&str, KeyState) -> bool + 'a;

/// `f`'s result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let started = Instant::now();
    let t = f()?;
    Ok((t, started.elapsed()))
}
