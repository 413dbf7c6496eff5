//! The voter set: which members count toward majorities (id *and* incarnation, so a member that
//! lost its data never counts for what it acknowledged), and `POST /admin/voters`, which changes
//! the set by one member at a time, only from a committed configuration, only adding a caught-up
//! learner, and only to a set with a live majority.

use rc_api::{Role, Voter, VoterConfig};

use super::{AdminRefusal, Progress, Replica};
use crate::clock::Instant;
use crate::single_leader::quorum::{self, Voting};
use crate::storage::Command;

/// One voter more or one voter less.
enum VoterChange<'a> {
    Add(&'a str),
    Remove(&'a str),
}

impl Replica {
    /// The voter set in force: the newest configuration entry in the log.
    pub fn config(&self) -> Option<VoterConfig> {
        self.configs.last().map(|(index, voters)| VoterConfig {
            index: *index,
            voters: voters.clone(),
            committed: *index <= self.commit,
        })
    }

    pub(super) fn voters(&self) -> Option<&[Voter]> {
        self.configs.last().map(|(_, v)| v.as_slice())
    }

    /// Does follower `f` count toward majorities? Without any configuration (a log from before
    /// the first one) everyone does.
    pub(super) fn counts(&self, f: &Progress) -> bool {
        match self.voters() {
            None => true,
            Some(voters) => f.incarnation.is_some_and(|inc| {
                voters
                    .iter()
                    .any(|v| v.id == f.peer.id && v.incarnation == inc)
            }),
        }
    }

    /// A voter's id that has not answered this leader yet: its contact is the promotion time,
    /// so that a fresh leader is not fenced before its first round.
    pub(super) fn may_count(&self, f: &Progress) -> bool {
        f.incarnation.is_none()
            && self
                .voters()
                .is_some_and(|v| v.iter().any(|v| v.id == f.peer.id))
    }

    pub(super) fn voting(&self) -> Voting {
        match self.voters() {
            None => Voting::everyone(self.followers.len()),
            Some(voters) => Voting {
                voters: voters.len(),
                leader_votes: voters
                    .iter()
                    .any(|v| v.id == self.cfg.id && v.incarnation == self.meta.incarnation),
            },
        }
    }

    /// `POST /admin/voters`: make `ids` the voter set, one member added or removed. Returns the
    /// index of the configuration entry to wait for (an existing one when `ids` is already the
    /// voter set in force).
    pub fn change_voters(
        &mut self,
        epoch: u64,
        ids: &[String],
        now: Instant,
    ) -> Result<u64, AdminRefusal> {
        if self.role != Role::Leader || epoch != self.meta.epoch {
            return Err(AdminRefusal::NotLeader { epoch });
        }
        let Some((index, current)) = self.configs.last().cloned() else {
            return Err(AdminRefusal::Invalid(
                "this log has no voter set yet".into(),
            ));
        };
        let mut wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut have: Vec<&str> = current.iter().map(|v| v.id.as_str()).collect();
        have.sort_unstable();
        if wanted == have {
            return Ok(index);
        }
        self.check_config_settled(index)?;
        let mut voters = current.clone();
        match one_change(&have, &wanted)? {
            VoterChange::Add(id) => voters.push(self.caught_up_learner(id)?),
            VoterChange::Remove(id) if id == self.cfg.id => {
                return Err(AdminRefusal::Invalid(
                    "the leader cannot remove itself: hand leadership to another voter first"
                        .into(),
                ))
            }
            VoterChange::Remove(id) => voters.retain(|v| v.id != id),
        }
        self.check_live_majority(&voters, now)?;
        voters.sort();
        tracing::info!(from = ?have, to = ?wanted, "changing the voter set");
        Ok(self.append(Command::Config(voters)).index)
    }

    /// A change starts only from a committed configuration, after this leader's first entry.
    fn check_config_settled(&self, config_index: u64) -> Result<(), AdminRefusal> {
        if self.commit < self.epoch_start {
            return Err(AdminRefusal::Busy(
                "the leader has not committed its first entry of this epoch yet".into(),
            ));
        }
        if config_index > self.commit {
            return Err(AdminRefusal::Busy(format!(
                "the voter set at index {config_index} is not committed yet"
            )));
        }
        Ok(())
    }

    /// `id` as a voter: a follower this leader replicates to, that has answered (so its
    /// incarnation is known) and holds every committed entry.
    fn caught_up_learner(&self, id: &str) -> Result<Voter, AdminRefusal> {
        let Some(f) = self.followers.iter().find(|f| f.peer.id == id) else {
            return Err(AdminRefusal::Invalid(format!(
                "{id} is not a member this leader replicates to; add it to the follower list first"
            )));
        };
        let Some(incarnation) = f.incarnation else {
            return Err(AdminRefusal::Busy(format!(
                "{id} has not answered this leader yet"
            )));
        };
        if f.match_index < self.commit {
            return Err(AdminRefusal::Busy(format!(
                "{id} is a learner still catching up: it holds index {} of {}",
                f.match_index, self.commit
            )));
        }
        Ok(Voter {
            id: id.to_owned(),
            incarnation,
        })
    }

    /// The new voter set must have a live majority, or nothing could commit after it.
    fn check_live_majority(&self, voters: &[Voter], now: Instant) -> Result<(), AdminRefusal> {
        let in_contact = |v: &Voter| {
            (v.id == self.cfg.id && v.incarnation == self.meta.incarnation)
                || self.followers.iter().any(|f| {
                    f.peer.id == v.id
                        && f.incarnation == Some(v.incarnation)
                        && f.contact.is_some_and(|t| {
                            now.saturating_duration_since(t) <= self.cfg.fence_timeout
                        })
                })
        };
        let live = voters.iter().filter(|v| in_contact(v)).count();
        if live < quorum::majority(voters.len()) {
            return Err(AdminRefusal::Busy(format!(
                "only {live} of the {} voters after this change are in contact; a majority is needed",
                voters.len()
            )));
        }
        Ok(())
    }
}

/// The one member `wanted` adds to or removes from `have` (both sorted), or why it is not one.
fn one_change<'a>(have: &[&'a str], wanted: &[&'a str]) -> Result<VoterChange<'a>, AdminRefusal> {
    let added: Vec<&str> = wanted
        .iter()
        .filter(|id| !have.contains(id))
        .copied()
        .collect();
    let removed: Vec<&str> = have
        .iter()
        .filter(|id| !wanted.contains(id))
        .copied()
        .collect();
    match (added.as_slice(), removed.as_slice()) {
        ([id], []) => Ok(VoterChange::Add(id)),
        ([], [id]) => Ok(VoterChange::Remove(id)),
        _ => Err(AdminRefusal::Invalid(format!(
            "the voter set changes one member at a time: {have:?} -> {wanted:?} adds {added:?} and removes {removed:?}"
        ))),
    }
}
