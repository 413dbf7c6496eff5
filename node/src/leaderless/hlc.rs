//! The hybrid logical clock that timestamps leaderless writes. Pure.

/// Hybrid logical clock: never goes backwards, and moves past every timestamp it has seen, so
/// a write that causally follows another gets a larger timestamp even across skewed clocks.
#[derive(Debug, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    pub fn now(&mut self, physical_ms: u64) -> u64 {
        self.last = (self.last + 1).max(physical_ms << 16);
        self.last
    }

    pub fn observe(&mut self, ts: u64) {
        self.last = self.last.max(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hybrid_clock_is_monotonic_and_passes_observed_timestamps() {
        let mut h = Hlc::default();
        let t1 = h.now(1000);
        let t2 = h.now(1000);
        assert!(t2 > t1);
        h.observe((5000 << 16) + 3);
        assert!(h.now(1001) > (5000 << 16) + 3);
    }
}
