//! Quorum arithmetic for single-leader replication. Pure.

use crate::clock::Instant;

pub use rc_api::majority;
use rc_api::Replication;

/// Who counts toward a majority: the size of the voter set in force, and whether the leader is
/// one of its voters (a leader elected from a log whose configuration leaves it out still leads,
/// but does not count itself, as in Raft). Learners never count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voting {
    pub voters: usize,
    pub leader_votes: bool,
}

impl Voting {
    /// Every member votes: `followers` plus the leader.
    pub fn everyone(followers: usize) -> Voting {
        Voting {
            voters: followers + 1,
            leader_votes: true,
        }
    }

    /// Followers needed for a majority, beyond the leader's own vote.
    fn followers_needed(self) -> usize {
        majority(self.voters).saturating_sub(usize::from(self.leader_votes))
    }
}

/// The highest index held durably by a majority of the voters, given the leader's own durable
/// index and the acknowledged match index of each follower that counts as a voter.
pub fn index_held_by_majority(voting: Voting, own: u64, voter_matches: &[u64]) -> u64 {
    let mut held: Vec<u64> = voter_matches.to_vec();
    if voting.leader_votes {
        held.push(own);
    }
    held.sort_unstable_by(|a, b| b.cmp(a));
    let need = majority(voting.voters);
    held.get(need - 1).copied().unwrap_or(0)
}

/// What the leader may treat as committed under `mode`.
///
/// `voter_matches[i]`/`in_sync[i]` describe the followers that count as voters; `in_sync` says
/// whether one answered within the fence timeout. `All` waits for every in-sync voter but
/// never for less than a majority.
pub fn commit_candidate(
    mode: Replication,
    voting: Voting,
    own: u64,
    voter_matches: &[u64],
    in_sync: &[bool],
) -> u64 {
    let quorum = index_held_by_majority(voting, own, voter_matches);
    match mode {
        Replication::Async => own,
        Replication::Quorum => quorum,
        Replication::All => {
            let all_in_sync = voter_matches
                .iter()
                .zip(in_sync)
                .filter(|(_, s)| **s)
                .map(|(m, _)| *m)
                .fold(own, u64::min);
            all_in_sync.min(quorum)
        }
    }
}

/// The latest instant at which a majority of the voters (the leader, if it votes, counting as
/// "now") was known to be with the leader. `contacts`: the followers that count as voters.
/// `None` if no majority ever was.
pub fn quorum_contact(
    now: Instant,
    voting: Voting,
    contacts: &[Option<Instant>],
) -> Option<Instant> {
    let need = voting.followers_needed();
    if need == 0 {
        return Some(now);
    }
    let mut seen: Vec<Instant> = contacts.iter().flatten().copied().collect();
    seen.sort_unstable_by(|a, b| b.cmp(a));
    seen.get(need - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn all(followers: usize) -> Voting {
        Voting::everyone(followers)
    }

    #[test]
    fn majorities_of_common_sizes() {
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn quorum_commit_needs_a_majority_including_the_leader() {
        // 3 nodes: leader at 10, followers at 7 and 4 -> 7 is on two of three.
        assert_eq!(
            commit_candidate(Replication::Quorum, all(2), 10, &[7, 4], &[true, true]),
            7
        );
        // The leader's own durability counts: a leader that has not synced holds back commit.
        assert_eq!(
            commit_candidate(Replication::Quorum, all(2), 3, &[7, 7], &[true, true]),
            7
        );
        assert_eq!(
            commit_candidate(Replication::Quorum, all(2), 3, &[7, 2], &[true, true]),
            3
        );
        // 5 nodes need 3.
        assert_eq!(
            commit_candidate(Replication::Quorum, all(4), 9, &[9, 1, 1, 1], &[true; 4]),
            1
        );
    }

    #[test]
    fn learners_and_a_non_voting_leader_do_not_count() {
        // Voters {leader, b, c}; only b's match is passed (c silent): 2 of 3 hold 7.
        let three = all(2);
        assert_eq!(
            commit_candidate(Replication::Quorum, three, 9, &[7], &[true]),
            7
        );
        // A leader outside its own voter set {b, c} needs both.
        let outside = Voting {
            voters: 2,
            leader_votes: false,
        };
        assert_eq!(
            commit_candidate(Replication::Quorum, outside, 9, &[7, 5], &[true, true]),
            5
        );
        assert_eq!(
            commit_candidate(Replication::Quorum, outside, 9, &[7], &[true]),
            0
        );
        let now = Instant::now();
        assert_eq!(quorum_contact(now, outside, &[Some(now)]), None);
        // A single voting leader commits alone.
        assert_eq!(
            commit_candidate(Replication::Quorum, all(0), 4, &[], &[]),
            4
        );
    }

    #[test]
    fn all_waits_for_in_sync_followers_but_never_less_than_quorum() {
        assert_eq!(
            commit_candidate(Replication::All, all(2), 10, &[9, 5], &[true, true]),
            5
        );
        assert_eq!(
            commit_candidate(Replication::All, all(2), 10, &[9, 5], &[true, false]),
            9
        );
        assert_eq!(
            commit_candidate(Replication::All, all(2), 10, &[9, 5], &[false, false]),
            9
        );
        assert_eq!(
            commit_candidate(Replication::All, all(2), 10, &[1, 0], &[false, false]),
            1
        );
    }

    #[test]
    fn async_commits_on_the_leader_alone() {
        assert_eq!(
            commit_candidate(Replication::Async, all(2), 10, &[0, 0], &[false, false]),
            10
        );
    }

    #[test]
    fn quorum_contact_is_the_majority_th_newest_contact() {
        let now = Instant::now();
        let t1 = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        let t2 = now.checked_sub(Duration::from_millis(900)).unwrap_or(now);
        assert_eq!(quorum_contact(now, all(2), &[Some(t2), Some(t1)]), Some(t1));
        assert_eq!(quorum_contact(now, all(2), &[None, Some(t2)]), Some(t2));
        assert_eq!(quorum_contact(now, all(2), &[None, None]), None);
        // Single node: always in contact with itself.
        assert_eq!(quorum_contact(now, all(0), &[]), Some(now));
        // 5 nodes: two followers needed.
        assert_eq!(
            quorum_contact(now, all(4), &[Some(t1), None, Some(t2), None]),
            Some(t2)
        );
    }
}
