//! Quorum arithmetic for single-leader replication. Pure.

use std::time::Instant;

use rc_api::Replication;

/// Members needed for a majority of a cluster of `size` (leader included).
pub fn majority(size: usize) -> usize {
    size / 2 + 1
}

/// The highest index held durably by at least `need` members, given the leader's own durable
/// index and each follower's acknowledged match index.
pub fn index_held_by(need: usize, own: u64, follower_matches: &[u64]) -> u64 {
    let mut all: Vec<u64> = follower_matches.to_vec();
    all.push(own);
    all.sort_unstable_by(|a, b| b.cmp(a));
    if need == 0 || need > all.len() {
        return 0;
    }
    all[need - 1]
}

/// What the leader may treat as committed under `mode`.
///
/// `in_sync[i]` says whether follower `i` answered within the fence timeout; `All` waits for
/// every in-sync follower but never for less than a majority.
pub fn commit_candidate(mode: Replication, own: u64, matches: &[u64], in_sync: &[bool]) -> u64 {
    let size = matches.len() + 1;
    let quorum = index_held_by(majority(size), own, matches);
    match mode {
        Replication::Async => own,
        Replication::Quorum => quorum,
        Replication::All => {
            let all_in_sync = matches
                .iter()
                .zip(in_sync)
                .filter(|(_, s)| **s)
                .map(|(m, _)| *m)
                .fold(own, u64::min);
            all_in_sync.min(quorum)
        }
    }
}

/// The latest instant at which a majority (the leader counting as "now") was known to be with
/// the leader: the `majority - 1`-th newest follower contact. `None` if no majority ever was.
pub fn quorum_contact(now: Instant, contacts: &[Option<Instant>]) -> Option<Instant> {
    let need_followers = majority(contacts.len() + 1) - 1;
    if need_followers == 0 {
        return Some(now);
    }
    let mut seen: Vec<Instant> = contacts.iter().flatten().copied().collect();
    seen.sort_unstable_by(|a, b| b.cmp(a));
    seen.get(need_followers - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn majorities_of_common_sizes() {
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn quorum_commit_needs_a_majority_including_the_leader() {
        // 3 nodes: leader at 10, followers at 7 and 4 -> 7 is on two of three.
        assert_eq!(
            commit_candidate(Replication::Quorum, 10, &[7, 4], &[true, true]),
            7
        );
        // The leader's own durability counts: a leader that has not synced holds back commit.
        assert_eq!(
            commit_candidate(Replication::Quorum, 3, &[7, 7], &[true, true]),
            7
        );
        assert_eq!(
            commit_candidate(Replication::Quorum, 3, &[7, 2], &[true, true]),
            3
        );
        // 5 nodes need 3.
        assert_eq!(
            commit_candidate(Replication::Quorum, 9, &[9, 1, 1, 1], &[true; 4]),
            1
        );
    }

    #[test]
    fn all_waits_for_in_sync_followers_but_never_less_than_quorum() {
        assert_eq!(
            commit_candidate(Replication::All, 10, &[9, 5], &[true, true]),
            5
        );
        assert_eq!(
            commit_candidate(Replication::All, 10, &[9, 5], &[true, false]),
            9
        );
        assert_eq!(
            commit_candidate(Replication::All, 10, &[9, 5], &[false, false]),
            9
        );
        assert_eq!(
            commit_candidate(Replication::All, 10, &[1, 0], &[false, false]),
            1
        );
    }

    #[test]
    fn async_commits_on_the_leader_alone() {
        assert_eq!(
            commit_candidate(Replication::Async, 10, &[0, 0], &[false, false]),
            10
        );
    }

    #[test]
    fn quorum_contact_is_the_majority_th_newest_contact() {
        let now = Instant::now();
        let t1 = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        let t2 = now.checked_sub(Duration::from_millis(900)).unwrap_or(now);
        assert_eq!(quorum_contact(now, &[Some(t2), Some(t1)]), Some(t1));
        assert_eq!(quorum_contact(now, &[None, Some(t2)]), Some(t2));
        assert_eq!(quorum_contact(now, &[None, None]), None);
        // Single node: always in contact with itself.
        assert_eq!(quorum_contact(now, &[]), Some(now));
        // 5 nodes: two followers needed.
        assert_eq!(
            quorum_contact(now, &[Some(t1), None, Some(t2), None]),
            Some(t2)
        );
    }
}
