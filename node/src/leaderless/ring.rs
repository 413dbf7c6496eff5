//! Placement: a versioned ring of members, each at `VNODES` pseudo-random tokens on a 64-bit hash
//! circle. A key's preference list is the first N distinct members clockwise from its hash.
//! Pure.
//!
//! During membership changes two lists matter: the *current* owners (normal and leaving members:
//! they hold the data and answer reads) and the *future* owners (normal and joining members).
//! Writes go to both, so data is never only on a node that is about to leave or not yet counted.

use rc_api::{Member, MemberState, Ring};

/// Virtual nodes per member: enough that 3-10 members each own within about ±20% of a fair share.
pub const VNODES: u64 = 128;

/// A stable 64-bit hash (FNV-1a, then the splitmix64 finalizer to spread nearby inputs). Stable
/// across builds and platforms, unlike `std`'s `DefaultHasher`: every node must agree.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write(bytes);
    h.finish()
}

/// [`hash`] over bytes that arrive in pieces: the same value as hashing them joined.
#[derive(Clone, Copy)]
pub struct StableHasher(u64);

impl StableHasher {
    pub const fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Serializing into the hasher: a value's postcard encoding hashed as it is written, with no
/// buffer (anti-entropy digests every key state it shares with a peer).
impl postcard::ser_flavors::Flavor for StableHasher {
    type Output = u64;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.write(&[byte]);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.write(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.finish())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("ring version must be at least 1")]
    ZeroVersion,
    #[error("member {0} appears more than once")]
    DuplicateId(String),
    #[error("address {0} is used by more than one member")]
    DuplicateAddress(String),
    #[error("every member needs a non-empty id and address")]
    EmptyMember,
    #[error("the ring has {owners} normal/leaving members but the replication factor is {n}")]
    TooFewOwners { owners: usize, n: usize },
    #[error("ring version {requested} is older than the installed version {current}")]
    Stale { requested: u64, current: u64 },
    #[error("ring version {0} is already installed with different members")]
    Conflict(u64),
}

/// Quorum settings a node accepts: 1 <= W <= N and 1 <= R <= N.
pub fn check_quorums(n: usize, w: usize, r: usize) -> Result<(), String> {
    if n == 0 || !(1..=n).contains(&w) || !(1..=n).contains(&r) {
        return Err(format!(
            "leaderless quorums need 1 <= W <= N and 1 <= R <= N (got N={n} W={w} R={r})"
        ));
    }
    Ok(())
}

/// Whether every read quorum meets every write quorum (W + R > N): only then does a read see
/// the latest acknowledged write (absent concurrent writes and lost disks).
pub fn quorums_overlap(n: usize, w: usize, r: usize) -> bool {
    w + r > n
}

/// Check a ring before installing it: nothing is changed when this fails.
pub fn validate(ring: &Ring, n: usize) -> Result<(), RingError> {
    if ring.version == 0 {
        return Err(RingError::ZeroVersion);
    }
    let mut ids = std::collections::HashSet::new();
    let mut addrs = std::collections::HashSet::new();
    for m in &ring.members {
        if m.id.trim().is_empty() || m.address.trim().is_empty() {
            return Err(RingError::EmptyMember);
        }
        if !ids.insert(m.id.as_str()) {
            return Err(RingError::DuplicateId(m.id.clone()));
        }
        if !addrs.insert(m.address.as_str()) {
            return Err(RingError::DuplicateAddress(m.address.clone()));
        }
    }
    let owners = ring
        .members
        .iter()
        .filter(|m| m.state != MemberState::Joining)
        .count();
    if owners < n {
        return Err(RingError::TooFewOwners { owners, n });
    }
    Ok(())
}

/// Whether `new` may replace `current`: only a newer version; the same version only if equal.
pub fn check_upgrade(current: Option<&Ring>, new: &Ring) -> Result<bool, RingError> {
    match current {
        None => Ok(true),
        Some(c) if new.version > c.version => Ok(true),
        Some(c) if new.version == c.version && c == new => Ok(false),
        Some(c) if new.version == c.version => Err(RingError::Conflict(c.version)),
        Some(c) => Err(RingError::Stale {
            requested: new.version,
            current: c.version,
        }),
    }
}

/// Token positions of the members a filter admits, sorted for clockwise walks.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    tokens: Vec<(u64, usize)>,
    members: Vec<Member>,
}

impl Placement {
    pub fn new(members: &[Member], admit: impl Fn(MemberState) -> bool) -> Placement {
        let members: Vec<Member> = members.iter().filter(|m| admit(m.state)).cloned().collect();
        let mut tokens = Vec::with_capacity(members.len() * VNODES as usize);
        for (i, m) in members.iter().enumerate() {
            for v in 0..VNODES {
                tokens.push((hash(format!("{}#{v}", m.id).as_bytes()), i));
            }
        }
        tokens.sort_unstable();
        Placement { tokens, members }
    }

    /// The first `n` distinct members clockwise from the key's hash.
    pub fn preference_list(&self, key: &str, n: usize) -> Vec<&Member> {
        let mut out: Vec<&Member> = Vec::with_capacity(n);
        if self.tokens.is_empty() {
            return out;
        }
        let h = hash(key.as_bytes());
        let start = self.tokens.partition_point(|(t, _)| *t < h);
        for k in 0..self.tokens.len() {
            let (_, i) = self.tokens[(start + k) % self.tokens.len()];
            let m = &self.members[i];
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }
}

/// Current and future placements of one ring version.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub current: Placement,
    pub future: Placement,
    pub n: usize,
}

impl Layout {
    pub fn new(ring: &Ring, n: usize) -> Layout {
        Layout {
            current: Placement::new(&ring.members, |s| s != MemberState::Joining),
            future: Placement::new(&ring.members, |s| s != MemberState::Leaving),
            n,
        }
    }

    /// Members that own `key` now: they answer reads and count toward W.
    pub fn owners(&self, key: &str) -> Vec<&Member> {
        self.current.preference_list(key, self.n)
    }

    /// Members that will own `key` once every joining/leaving member is done.
    pub fn future_owners(&self, key: &str) -> Vec<&Member> {
        self.future.preference_list(key, self.n)
    }

    /// Everyone a write must reach: current owners, then future owners not among them.
    pub fn write_targets(&self, key: &str) -> Vec<&Member> {
        let mut out = self.owners(key);
        for m in self.future_owners(key) {
            if !out.iter().any(|o| o.id == m.id) {
                out.push(m);
            }
        }
        out
    }

    /// Whether `id` owns `key` now or will once every joining/leaving member is done: the keys
    /// a member streams in before it is counted (a joiner owns only the latter; a member that
    /// lost its data answers reads for the former, as a current owner, once it has restored).
    pub fn owns_now_or_later(&self, key: &str, id: &str) -> bool {
        self.write_targets(key).iter().any(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize, state: MemberState) -> Member {
        Member {
            id: format!("n{i}"),
            address: format!("10.0.0.{i}:7400"),
            state,
        }
    }

    fn ring(count: usize) -> Ring {
        Ring {
            version: 1,
            members: (0..count).map(|i| member(i, MemberState::Normal)).collect(),
        }
    }

    #[test]
    fn preference_lists_hold_n_distinct_members() {
        let layout = Layout::new(&ring(5), 3);
        for k in 0..1000 {
            let owners = layout.owners(&format!("key{k}"));
            assert_eq!(owners.len(), 3);
            let mut ids: Vec<_> = owners.iter().map(|m| &m.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), 3);
        }
    }

    #[test]
    fn keys_spread_within_a_quarter_of_a_fair_share() {
        for members in [3, 5, 8] {
            let p = Placement::new(&ring(members).members, |_| true);
            let mut counts = vec![0usize; members];
            let keys = 20_000;
            for k in 0..keys {
                let first = &p.preference_list(&format!("user:{k}"), 1)[0].id;
                counts[first[1..].parse::<usize>().unwrap_or(0)] += 1;
            }
            let fair = keys as f64 / members as f64;
            for c in counts {
                assert!(
                    (c as f64 - fair).abs() < 0.25 * fair,
                    "{members} members: {c} vs fair {fair}"
                );
            }
        }
    }

    #[test]
    fn adding_a_member_moves_only_keys_to_it() {
        let before = Placement::new(&ring(5).members, |_| true);
        let after = Placement::new(&ring(6).members, |_| true);
        let keys = 10_000;
        let mut moved = 0;
        for k in 0..keys {
            let key = format!("k{k}");
            let (a, b) = (
                &before.preference_list(&key, 1)[0].id,
                &after.preference_list(&key, 1)[0].id,
            );
            if a != b {
                moved += 1;
                assert_eq!(b, "n5", "a key moved between old members");
            }
        }
        // Ideal is 1/6 of the keys.
        let share = moved as f64 / keys as f64;
        assert!((0.10..0.23).contains(&share), "moved {share}");
    }

    #[test]
    fn writes_in_motion_reach_old_and_new_owners() {
        let mut r = ring(3);
        r.members.push(member(3, MemberState::Joining));
        r.members[0].state = MemberState::Leaving;
        let layout = Layout::new(&r, 3);
        for k in 0..500 {
            let key = format!("k{k}");
            let owners = layout.owners(&key);
            assert!(
                owners.iter().all(|m| m.id != "n3"),
                "a joining node owns nothing yet"
            );
            let targets = layout.write_targets(&key);
            for f in layout.future_owners(&key) {
                assert!(targets.iter().any(|t| t.id == f.id));
                assert_ne!(f.id, "n0", "a leaving node owns nothing in the future");
            }
        }
    }

    #[test]
    fn bad_rings_are_rejected_with_reasons() {
        let mut r = ring(3);
        assert_eq!(validate(&r, 3), Ok(()));
        assert_eq!(
            validate(&r, 4),
            Err(RingError::TooFewOwners { owners: 3, n: 4 })
        );
        r.members[2].id = "n0".into();
        assert_eq!(validate(&r, 3), Err(RingError::DuplicateId("n0".into())));
        let mut r = ring(3);
        r.members[1].address = r.members[0].address.clone();
        assert!(matches!(
            validate(&r, 3),
            Err(RingError::DuplicateAddress(_))
        ));
        let mut r = ring(3);
        r.members[1].id = " ".into();
        assert_eq!(validate(&r, 3), Err(RingError::EmptyMember));
        assert_eq!(
            validate(
                &Ring {
                    version: 0,
                    members: ring(3).members
                },
                3
            ),
            Err(RingError::ZeroVersion)
        );
    }

    #[test]
    fn quorum_settings_are_checked_and_overlap_only_when_w_plus_r_exceeds_n() {
        assert!(check_quorums(3, 2, 2).is_ok());
        assert!(check_quorums(3, 4, 1).is_err());
        assert!(check_quorums(3, 0, 1).is_err());
        assert!(check_quorums(3, 1, 4).is_err());
        assert!(check_quorums(0, 1, 1).is_err());
        assert!(quorums_overlap(3, 2, 2));
        assert!(quorums_overlap(3, 3, 1));
        assert!(!quorums_overlap(3, 1, 2));
        assert!(!quorums_overlap(5, 2, 3));
    }

    #[test]
    fn ring_versions_only_move_forward() {
        let v1 = ring(3);
        let mut v2 = ring(4);
        v2.version = 2;
        assert_eq!(check_upgrade(None, &v1), Ok(true));
        assert_eq!(check_upgrade(Some(&v1), &v2), Ok(true));
        assert_eq!(
            check_upgrade(Some(&v2), &v1),
            Err(RingError::Stale {
                requested: 1,
                current: 2
            })
        );
        assert_eq!(
            check_upgrade(Some(&v1), &v1),
            Ok(false),
            "same ring again is a no-op"
        );
        let mut other = ring(5);
        other.version = 1;
        assert_eq!(
            check_upgrade(Some(&v1), &other),
            Err(RingError::Conflict(1))
        );
    }
}
