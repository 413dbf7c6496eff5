//! The leaderless coordinator's decisions, pure (the I/O that carries them out is in
//! `node/coordinator.rs`): where a write goes and how many acknowledgements it needs, which
//! owners a read asks and when it has heard enough.
//!
//! The rules, in one place:
//! - a node that owns the key coordinates the write; any other forwards it to an owner, in ring
//!   order (the next is tried when one refuses the connection: it never saw the write);
//! - a write needs W acknowledgements *plus one per pending owner* (a joining member, or the next
//!   owner of a leaving member's range): Cassandra's rule, so a member that becomes an owner
//!   holds every write acknowledged before it did. The coordinator counts itself once, when its
//!   own write is durable;
//! - a read asks R live owners (this node first: no network hop) and one spare more only for
//!   each that fails: asking all N would triple read traffic for nothing in the common case.

use rc_api::Member;

use super::ring::Layout;

/// Where a write goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRoute {
    /// This node owns the key: write locally, replicate to `replicas`, succeed with `need`
    /// acknowledgements (this node's own included).
    Coordinate { replicas: Vec<Member>, need: usize },
    /// This node does not own the key: forward to the owners, in this order.
    Forward(Vec<Member>),
}

/// Route a write of `key` coordinated on `me` with write quorum `w`.
pub fn route_write(layout: &Layout, key: &str, me: &str, w: usize) -> WriteRoute {
    let owners = layout.owners(key);
    if !owners.iter().any(|m| m.id == me) {
        return WriteRoute::Forward(owners.into_iter().cloned().collect());
    }
    let targets = layout.write_targets(key);
    let pending = targets
        .iter()
        .filter(|t| !owners.iter().any(|o| o.id == t.id))
        .count();
    WriteRoute::Coordinate {
        replicas: targets
            .into_iter()
            .filter(|m| m.id != me)
            .cloned()
            .collect(),
        need: w + pending,
    }
}

/// Acknowledgements of a coordinated write. Starts at one: the coordinator's own durable write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTally {
    pub acks: usize,
    pub need: usize,
}

impl WriteTally {
    pub fn new(need: usize) -> Self {
        WriteTally { acks: 1, need }
    }

    pub fn record(&mut self, ok: bool) {
        self.acks += usize::from(ok);
    }

    pub fn reached(&self) -> bool {
        self.acks >= self.need
    }
}

/// The owners a read asks first, and the spares it asks when one of those fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub ask: Vec<Member>,
    pub spares: Vec<Member>,
}

/// Plan a read with quorum `r` over the owners believed alive, or say how many there are when
/// fewer than `r`.
pub fn plan_read(mut alive_owners: Vec<Member>, me: &str, r: usize) -> Result<ReadPlan, usize> {
    if alive_owners.len() < r {
        return Err(alive_owners.len());
    }
    alive_owners.sort_by_key(|m| m.id != me);
    let spares = alive_owners.split_off(r);
    Ok(ReadPlan {
        ask: alive_owners,
        spares,
    })
}

/// Answers of a read in progress: done when `r` owners answered, or when none is left to wait
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTally {
    need: usize,
    pub answered: usize,
    in_flight: usize,
}

impl ReadTally {
    pub fn new(need: usize) -> Self {
        ReadTally {
            need,
            answered: 0,
            in_flight: need,
        }
    }

    pub fn record_answer(&mut self) {
        self.answered += 1;
        self.in_flight -= 1;
    }

    /// An owner failed; `asked_spare` says whether a spare was asked in its place.
    pub fn record_failure(&mut self, asked_spare: bool) {
        if !asked_spare {
            self.in_flight -= 1;
        }
    }

    pub fn waiting(&self) -> bool {
        self.answered < self.need && self.in_flight > 0
    }

    pub fn reached(&self) -> bool {
        self.answered >= self.need
    }
}

#[cfg(test)]
mod tests {
    use rc_api::{MemberState, Ring};

    use super::*;

    fn member(id: &str, state: MemberState) -> Member {
        Member {
            id: id.into(),
            address: format!("{id}:7400"),
            state,
        }
    }

    fn layout(states: &[(&str, MemberState)]) -> Layout {
        let members = states.iter().map(|(id, s)| member(id, *s)).collect();
        Layout::new(
            &Ring {
                version: 1,
                members,
            },
            3,
        )
    }

    fn ids(members: &[Member]) -> Vec<&str> {
        members.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn an_owner_coordinates_with_w_acks_and_a_non_owner_forwards_in_ring_order(
    ) -> Result<(), String> {
        use MemberState::Normal;
        let l = layout(&[("a", Normal), ("b", Normal), ("c", Normal), ("d", Normal)]);
        for key in ["k1", "k2", "k3", "k4", "k5"] {
            let owners: Vec<String> = l.owners(key).iter().map(|m| m.id.clone()).collect();
            let outsider = ["a", "b", "c", "d"]
                .into_iter()
                .find(|id| !owners.iter().any(|o| o == id))
                .unwrap_or_default();
            assert_eq!(
                route_write(&l, key, outsider, 2),
                WriteRoute::Forward(l.owners(key).into_iter().cloned().collect())
            );
            let WriteRoute::Coordinate { replicas, need } = route_write(&l, key, &owners[0], 2)
            else {
                return Err(format!("{key}: an owner coordinates"));
            };
            assert_eq!(need, 2, "no pending owner: W");
            assert_eq!(ids(&replicas), vec![&owners[1][..], &owners[2][..]]);
        }
        Ok(())
    }

    #[test]
    fn a_pending_owner_raises_the_write_quorum_by_one() -> Result<(), String> {
        use MemberState::{Joining, Normal};
        let l = layout(&[("a", Normal), ("b", Normal), ("c", Normal), ("j", Joining)]);
        let mut raised = 0;
        for i in 0..200 {
            let key = format!("key-{i}");
            let owners = l.owners(&key);
            let me = owners[0].id.clone();
            let WriteRoute::Coordinate { replicas, need } = route_write(&l, &key, &me, 2) else {
                return Err(format!("{key}: an owner coordinates"));
            };
            let joining_targeted = replicas.iter().any(|m| m.id == "j");
            assert_eq!(need, 2 + usize::from(joining_targeted), "{key}");
            assert!(
                !replicas.iter().any(|m| m.id == me),
                "never sends to itself"
            );
            raised += usize::from(joining_targeted);
        }
        assert!(raised > 0, "the joining member takes over some keys");
        Ok(())
    }

    #[test]
    fn the_write_tally_counts_the_coordinator_once_and_each_ack() {
        let mut t = WriteTally::new(3);
        assert!(!t.reached());
        t.record(false);
        t.record(true);
        assert!(!t.reached());
        t.record(true);
        assert!(t.reached());
        assert_eq!(t.acks, 3);
    }

    #[test]
    fn a_read_asks_itself_first_and_keeps_the_rest_as_spares() -> Result<(), usize> {
        use MemberState::Normal;
        let owners = vec![
            member("a", Normal),
            member("b", Normal),
            member("me", Normal),
        ];
        let plan = plan_read(owners.clone(), "me", 2)?;
        assert_eq!(ids(&plan.ask), vec!["me", "a"]);
        assert_eq!(ids(&plan.spares), vec!["b"]);
        assert_eq!(plan_read(owners[..1].to_vec(), "me", 2), Err(1));
        Ok(())
    }

    #[test]
    fn a_read_waits_for_r_answers_while_any_ask_is_in_flight() {
        let mut t = ReadTally::new(2);
        t.record_answer();
        t.record_failure(true); // a spare replaces the failed owner
        assert!(t.waiting());
        t.record_answer();
        assert!(!t.waiting() && t.reached());

        let mut t = ReadTally::new(2);
        t.record_answer();
        t.record_failure(false); // no spare left
        assert!(!t.waiting() && !t.reached());
    }

    /// Every subset of `items` of size `k`.
    fn subsets<T: Clone>(items: &[T], k: usize) -> Vec<Vec<T>> {
        if k == 0 {
            return vec![Vec::new()];
        }
        if items.len() < k {
            return Vec::new();
        }
        let mut out = subsets(&items[1..], k - 1);
        for s in &mut out {
            s.insert(0, items[0].clone());
        }
        out.extend(subsets(&items[1..], k));
        out
    }

    fn any_state() -> impl proptest::strategy::Strategy<Value = MemberState> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(MemberState::Normal),
            1 => Just(MemberState::Joining),
            1 => Just(MemberState::Leaving),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Across a ring change (members joining and leaving at once), a write acknowledged by
        /// any `need` of its targets (the coordinator among them) meets every read quorum of R
        /// owners, read under the same ring (its current owners) or under the next one (the
        /// change done), whenever W + R > N; and a member that restores streams back every key
        /// it answers reads for as a current owner.
        #[test]
        fn every_read_quorum_meets_every_acknowledged_write_across_a_ring_change(
            states in proptest::collection::vec(any_state(), 3..8),
            w in 1usize..=3,
            key in "[a-z0-9]{1,8}",
        ) {
            let n = 3;
            let r = n - w + 1;
            let members: Vec<Member> = states
                .iter()
                .enumerate()
                .map(|(i, s)| member(&format!("m{i}"), *s))
                .collect();
            let now = Ring { version: 1, members: members.clone() };
            let next = Ring {
                version: 2,
                members: members
                    .iter()
                    .filter(|m| m.state != MemberState::Leaving)
                    .map(|m| member(&m.id, MemberState::Normal))
                    .collect(),
            };
            proptest::prop_assume!(crate::leaderless::ring::validate(&now, n).is_ok());
            proptest::prop_assume!(crate::leaderless::ring::validate(&next, n).is_ok());
            let (l, l_next) = (Layout::new(&now, n), Layout::new(&next, n));
            let owners: Vec<String> = l.owners(&key).iter().map(|m| m.id.clone()).collect();
            let owners_next: Vec<String> =
                l_next.owners(&key).iter().map(|m| m.id.clone()).collect();
            for m in &members {
                proptest::prop_assert!(
                    !owners.contains(&m.id) || l.owns_now_or_later(&key, &m.id),
                    "{} answers reads for {key} but would not restore it", m.id
                );
            }
            let me = owners[0].clone();
            let WriteRoute::Coordinate { replicas, need } = route_write(&l, &key, &me, w) else {
                return Err(proptest::test_runner::TestCaseError::fail("an owner coordinates"));
            };
            let replicas: Vec<String> = replicas.into_iter().map(|m| m.id).collect();
            for acked in subsets(&replicas, need - 1) {
                let acked: Vec<String> = acked.into_iter().chain([me.clone()]).collect();
                for (ring, owners) in [("same", &owners), ("next", &owners_next)] {
                    for read in subsets(owners, r) {
                        proptest::prop_assert!(
                            read.iter().any(|m| acked.contains(m)),
                            "{ring} ring: read {read:?} misses write acked by {acked:?} \
                             (N={n} W={w} R={r}, states {states:?})"
                        );
                    }
                }
            }
        }
    }
}
