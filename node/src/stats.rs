//! Request statistics the node measures about itself: count, mean and p99 response time over a
//! sliding window, plus the in-flight count a leader uses to pick the least-loaded follower.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rc_api::RequestStats;

const WINDOW: usize = 4096;

#[derive(Default)]
pub struct Stats {
    count: AtomicU64,
    inflight: AtomicU32,
    /// Most recent response times in microseconds, a ring buffer of `WINDOW`.
    recent: Mutex<(Vec<u32>, usize)>,
}

/// Decrements the in-flight count when the request ends, however it ends.
pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    pub fn start(&self) -> InFlight<'_> {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn record(&self, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = took.as_micros().min(u32::MAX as u128) as u32;
        let mut g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (buf, next) = &mut *g;
        if buf.len() < WINDOW {
            buf.push(us);
        } else {
            buf[*next] = us;
        }
        *next = (*next + 1) % WINDOW;
    }

    pub fn snapshot(&self) -> RequestStats {
        let mut window = {
            let g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            g.0.clone()
        };
        let count = self.count.load(Ordering::Relaxed);
        if window.is_empty() {
            return RequestStats {
                count,
                mean_ms: 0.0,
                p99_ms: 0.0,
            };
        }
        window.sort_unstable();
        let mean_us = window.iter().map(|&v| v as f64).sum::<f64>() / window.len() as f64;
        let p99 = window[((window.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
        RequestStats {
            count,
            mean_ms: mean_us / 1000.0,
            p99_ms: p99 as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_p99_come_from_the_recent_window() {
        let s = Stats::default();
        for ms in 1..=100 {
            s.record(Duration::from_millis(ms));
        }
        let snap = s.snapshot();
        assert_eq!(snap.count, 100);
        assert!((snap.mean_ms - 50.5).abs() < 1e-9);
        assert!((snap.p99_ms - 99.0).abs() < 1e-9);
        {
            let _g = s.start();
            assert_eq!(s.inflight(), 1);
        }
        assert_eq!(s.inflight(), 0);
    }
}
