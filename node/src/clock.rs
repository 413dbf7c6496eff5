//! The single-leader core's clock: time since boot, *including* time the machine spent
//! suspended (`CLOCK_BOOTTIME`). `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops
//! during a suspend: a leader whose machine slept for a minute would wake believing it heard
//! from its followers a moment ago and keep acknowledging writes (in `Async` mode, alone) until
//! its next round, while the operator has already promoted another node. Self-fencing and
//! contact ages are measured on this clock instead.

use std::ops::Add;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// A point on the boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    pub fn now() -> Instant {
        match clock_gettime(ClockId::CLOCK_BOOTTIME) {
            Ok(t) => Instant(Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_nsec()).unwrap_or(0),
            )),
            // Every Linux since 2.6.39 has it; fall back to the monotonic clock all the same.
            Err(_) => Instant(monotonic()),
        }
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        self.0.checked_sub(d).map(Instant)
    }

    pub fn elapsed(self) -> Duration {
        Instant::now().saturating_duration_since(self)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

fn monotonic() -> Duration {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward_with_the_monotonic_one() {
        let a = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = Instant::now();
        assert!(b.saturating_duration_since(a) >= Duration::from_millis(20));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(
            (a + Duration::from_secs(1)).checked_sub(Duration::from_secs(1)),
            Some(a)
        );
    }
}
