//! What a write costs the leaderless node's in-memory store while a background snapshot shares
//! it. The store is a persistent map (imbl), so taking the snapshot is O(1); afterwards the
//! first write to each node of the map copies that node's entries (up to 64). Measured with
//! whole key states stored inline, and with states behind an `Arc` as the node keeps them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rc_node::leaderless::dvv::KeyState;

use crate::workload::{key, state, Rng};

/// Print the cost per write with states inline and behind an `Arc`: while a snapshot shares
/// the map, and once it is gone.
pub fn run(keys: u64, writes: usize, value_bytes: usize) {
    println!(
        "in-memory store, {keys} keys of {value_bytes}-byte values, {writes} random writes a phase"
    );
    for (what, (during, after)) in [
        ("states inline", measure(keys, writes, value_bytes, |s| s)),
        (
            "states behind Arc",
            measure(keys, writes, value_bytes, Arc::new),
        ),
    ] {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / writes as f64;
        println!(
            "  {what:<18} {:>6.2} us per write while a snapshot shares the map, {:>6.2} after",
            per(during),
            per(after)
        );
    }
}

/// (writes while a clone of the map is alive, the same number of writes after it is dropped).
fn measure<V: Clone>(
    keys: u64,
    writes: usize,
    value_bytes: usize,
    wrap: impl Fn(KeyState) -> V,
) -> (Duration, Duration) {
    let mut rng = Rng::new(7);
    let mut map: imbl::OrdMap<String, V> = (0..keys)
        .map(|i| (key(i), wrap(state(&mut rng, 1, value_bytes))))
        .collect();
    // The writes are made before the clock starts: only the map's work is timed.
    let mut phase = |counter| -> Vec<(String, V)> {
        (0..writes)
            .map(|_| {
                let k = key(rng.below(keys));
                (k, wrap(state(&mut rng, counter, value_bytes)))
            })
            .collect()
    };
    let (first, second) = (phase(2), phase(3));
    let snapshot = map.clone();
    let started = Instant::now();
    for (k, v) in first {
        map.insert(k, v);
    }
    let during = started.elapsed();
    drop(snapshot);
    let started = Instant::now();
    for (k, v) in second {
        map.insert(k, v);
    }
    (during, started.elapsed())
}
