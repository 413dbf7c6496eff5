//! Failure detector, pure (no I/O): turns probe results into up/down verdicts.
//!
//! One lost probe is not a failure: a GC-like pause, a dropped packet or a busy peer loses one
//! now and then, and marking the member down would send its writes to hints and its reads to
//! spares for nothing. A member becomes *suspect* after `misses` probes in a row fail; it is
//! declared down only if no other member can reach it either (SWIM's indirect probe), so a
//! fault on the path between two nodes does not take a healthy member out. One successful
//! probe, direct or indirect, brings it back up.

use std::collections::HashMap;

/// Consecutive failed probes before a member is suspected.
pub const MISSES: u32 = 3;

/// What the prober must do after a probe result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do (verdict unchanged or still counting misses).
    Wait,
    /// The member is up.
    Up,
    /// Ask other members to probe it (`on_indirect` with their answers).
    ProbeIndirectly,
}

#[derive(Debug, Default)]
pub struct Detector {
    misses: HashMap<String, u32>,
}

impl Detector {
    /// A direct probe of `member` came back (`ok`) or failed.
    pub fn on_probe(&mut self, member: &str, ok: bool) -> Next {
        if ok {
            self.misses.remove(member);
            return Next::Up;
        }
        let n = self.misses.entry(member.to_string()).or_insert(0);
        *n += 1;
        if *n >= MISSES {
            Next::ProbeIndirectly
        } else {
            Next::Wait
        }
    }

    /// Answers of the indirect probes of a suspect: down only if nobody reached it. With no
    /// other member to ask, the direct misses decide.
    pub fn on_indirect(&mut self, member: &str, reached: &[bool]) -> bool {
        let up = reached.iter().any(|r| *r);
        if up {
            self.misses.remove(member);
        }
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_two_lost_probes_do_not_suspect_a_member() {
        let mut d = Detector::default();
        assert_eq!(d.on_probe("n1", false), Next::Wait);
        assert_eq!(d.on_probe("n1", false), Next::Wait);
        assert_eq!(d.on_probe("n1", true), Next::Up);
        // The count starts again after a success.
        assert_eq!(d.on_probe("n1", false), Next::Wait);
        assert_eq!(d.on_probe("n1", false), Next::Wait);
        assert_eq!(d.on_probe("n1", false), Next::ProbeIndirectly);
    }

    #[test]
    fn a_suspect_that_another_member_reaches_stays_up() {
        let mut d = Detector::default();
        for _ in 0..MISSES {
            d.on_probe("n1", false);
        }
        assert!(d.on_indirect("n1", &[false, true]));
        // Reached indirectly: its misses are forgiven.
        assert_eq!(d.on_probe("n1", false), Next::Wait);
    }

    #[test]
    fn a_suspect_nobody_reaches_is_down_and_stays_suspect_until_a_probe_succeeds() {
        let mut d = Detector::default();
        for _ in 0..MISSES {
            d.on_probe("n1", false);
        }
        assert!(!d.on_indirect("n1", &[false, false]));
        assert!(!d.on_indirect("n1", &[]));
        assert_eq!(d.on_probe("n1", false), Next::ProbeIndirectly);
        assert_eq!(d.on_probe("n1", true), Next::Up);
    }

    #[test]
    fn members_are_counted_separately() {
        let mut d = Detector::default();
        d.on_probe("n1", false);
        d.on_probe("n1", false);
        assert_eq!(d.on_probe("n2", false), Next::Wait);
        assert_eq!(d.on_probe("n1", false), Next::ProbeIndirectly);
    }
}
