//! Property tests of the leaderless key state over random histories: puts and deletes through
//! any replica with contexts read from any replica, merges in any order, tombstone purges and
//! wiped replicas (a wiped replica is a new dot actor, as a restarted node is).
//!
//! Laws checked: dots are never issued twice; merge is commutative, associative and idempotent;
//! a digest is the hash of the encoded state (what peers of any version compare); and no
//! acknowledged value is lost unless a later write's context covered it. Replica 0 stands
//! for the write quorum that acknowledged each write: it receives every write, is never wiped,
//! and its state is merged with all others at the end.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const REPLICAS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A write coordinated by `coord` (a delete when `value` is false), with the context of a
    /// read from replica `read` (or none).
    Put {
        coord: usize,
        read: Option<usize>,
        value: bool,
    },
    /// Anti-entropy, read repair, a hint: `from`'s state merged into `to`.
    Merge { from: usize, to: usize },
    /// A tombstone-only state dropped (any replica but the quorum).
    Purge { replica: usize },
    /// A replica's disk lost: empty state, new actor.
    Wipe { replica: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..REPLICAS;
    let other = 1..REPLICAS;
    prop_oneof![
        4 => (r.clone(), proptest::option::of(r.clone()), proptest::bool::weighted(0.8))
            .prop_map(|(coord, read, value)| Op::Put { coord, read, value }),
        3 => (r.clone(), r).prop_map(|(from, to)| Op::Merge { from, to }),
        1 => other.clone().prop_map(|replica| Op::Purge { replica }),
        1 => other.prop_map(|replica| Op::Wipe { replica }),
    ]
}

struct Replica {
    state: KeyState,
    actor: String,
    issued: u64,
}

/// What a run left: every replica's state, the dots issued, and each acknowledged write with
/// the context it was made with (to tell which values later writes superseded).
struct History {
    states: Vec<KeyState>,
    dots: Vec<(String, u64)>,
    acked: Vec<Sibling>,
    contexts: Vec<Clock>,
}

fn run(mode: ConflictResolution, ops: &[Op]) -> History {
    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica {
            state: KeyState::default(),
            actor: format!("r{i}~0"),
            issued: 0,
        })
        .collect();
    let (mut dots, mut acked, mut contexts) = (Vec::new(), Vec::new(), Vec::new());
    for (ts, op) in (1u64..).zip(ops) {
        match op.clone() {
            Op::Put { coord, read, value } => {
                let context = read
                    .map(|r| replicas[r].state.clock.clone())
                    .unwrap_or_default();
                let value = value.then(|| format!("v{ts}"));
                let c = &mut replicas[coord];
                let new = c
                    .state
                    .put(mode, &c.actor, c.issued, &context, value.clone(), ts);
                c.issued = new.clock.get(&c.actor).copied().unwrap_or(0);
                dots.push((c.actor.clone(), c.issued));
                acked.push(Sibling {
                    node: c.actor.clone(),
                    counter: c.issued,
                    ts,
                    value,
                });
                contexts.push(context);
                c.state = new.clone();
                // Acknowledged: the quorum holds it.
                replicas[0].state = replicas[0].state.merge(&new, mode);
            }
            Op::Merge { from, to } => {
                let incoming = replicas[from].state.clone();
                replicas[to].state = replicas[to].state.merge(&incoming, mode);
            }
            Op::Purge { replica } => {
                if replicas[replica].state.is_dead_before(u64::MAX) {
                    replicas[replica].state = KeyState::default();
                }
            }
            Op::Wipe { replica } => {
                let generation = replicas[replica].actor.len() as u64 + ts;
                replicas[replica] = Replica {
                    state: KeyState::default(),
                    actor: format!("r{replica}~{generation}"),
                    issued: 0,
                };
            }
        }
    }
    History {
        states: replicas.into_iter().map(|r| r.state).collect(),
        dots,
        acked,
        contexts,
    }
}

fn covered(clock: &Clock, s: &Sibling) -> bool {
    clock.get(&s.node).is_some_and(|c| *c >= s.counter)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn dots_are_never_reused(ops in proptest::collection::vec(op(), 1..60)) {
        let dots = run(ConflictResolution::Siblings, &ops).dots;
        let unique: BTreeSet<_> = dots.iter().collect();
        prop_assert_eq!(unique.len(), dots.len());
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        ops in proptest::collection::vec(op(), 1..60),
        lww in any::<bool>(),
    ) {
        let mode = if lww { ConflictResolution::LastWriteWins } else { ConflictResolution::Siblings };
        let s = run(mode, &ops).states;
        let (a, b, c) = (&s[1], &s[2], &s[3]);
        prop_assert_eq!(a.merge(b, mode), b.merge(a, mode));
        prop_assert_eq!(a.merge(b, mode).merge(c, mode), a.merge(&b.merge(c, mode), mode));
        prop_assert_eq!(a.merge(a, mode), a.clone());
    }

    #[test]
    fn a_digest_is_the_hash_of_the_encoded_state(
        ops in proptest::collection::vec(op(), 1..60),
        key in "[a-z0-9/]{0,40}",
    ) {
        for state in run(ConflictResolution::Siblings, &ops).states {
            let encoded = postcard::to_allocvec(&state).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected = hash(key.as_bytes()) ^ hash(&encoded).rotate_left(17);
            prop_assert_eq!(state.digest(&key), expected);
        }
    }

    #[test]
    fn no_acknowledged_value_is_lost_unless_a_later_write_superseded_it(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let History { states, acked, contexts, .. } = run(ConflictResolution::Siblings, &ops);
        let all = states
            .iter()
            .fold(KeyState::default(), |acc, s| acc.merge(s, ConflictResolution::Siblings));
        for (i, sibling) in acked.iter().enumerate() {
            let Some(value) = &sibling.value else { continue };
            let superseded = contexts[i + 1..].iter().any(|c| covered(c, sibling));
            if !superseded {
                prop_assert!(
                    all.values().contains(value),
                    "acknowledged {value} ({}, {}) lost: {:?}", sibling.node, sibling.counter, all
                );
            }
        }
    }
}
