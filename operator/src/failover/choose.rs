//! (pure) Choosing the new leader — Raft's election rule, applied centrally — and the peer lists
//! handed to the nodes.
//!
//! A member that answered the fence at the new epoch is a *ballot*: its last log position, the
//! incarnation of its data and the voter set in force in its log. Member X is **electable** when
//! X is a voter of its own voter set and a majority of that set answered with logs no newer than
//! X's (each of them would have voted for X in Raft). Among the electable the most up-to-date
//! wins. Members that lost their data answer with a new incarnation and are never counted; a
//! new cluster (no voter set anywhere, epoch 0) elects over all members and writes the first
//! voter set.

use rc_api::{EpochResponse, LogPosition, Peer, SingleLeaderStatus, Voter, VoterConfig};

use super::{majority, Action, FenceFailure, Member, View};

/// One member's answer at the new epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ballot<'a> {
    pub member: &'a Member,
    pub last_log: LogPosition,
    pub incarnation: u64,
    pub config: Option<&'a VoterConfig>,
}

impl<'a> Ballot<'a> {
    pub fn of_status(member: &'a Member, status: &'a SingleLeaderStatus) -> Ballot<'a> {
        Ballot {
            member,
            last_log: status.last_log,
            incarnation: status.incarnation,
            config: status.config.as_ref(),
        }
    }

    fn of_answer(member: &'a Member, answer: &'a EpochResponse) -> Ballot<'a> {
        Ballot {
            member,
            last_log: answer.last_log,
            incarnation: answer.incarnation,
            config: answer.config.as_ref(),
        }
    }

    fn votes_in(&self, config: &VoterConfig) -> bool {
        config.counts(&self.member.name, self.incarnation)
    }
}

/// After fencing at `epoch`: promote the most up-to-date electable member. `exclude`: members
/// that must not lead (a leader being switched away from).
pub fn after_fence(
    view: &View,
    epoch: u64,
    answers: &[(String, Result<EpochResponse, String>)],
    exclude: &[String],
) -> Result<Action, FenceFailure> {
    after_fence_preferring(view, epoch, answers, exclude, None)
}

/// [`after_fence`], promoting `prefer` instead of the most up-to-date member when it is
/// electable too (a switchover's target): any electable member holds every committed entry.
pub fn after_fence_preferring(
    view: &View,
    epoch: u64,
    answers: &[(String, Result<EpochResponse, String>)],
    exclude: &[String],
    prefer: Option<&str>,
) -> Result<Action, FenceFailure> {
    if let Some((name, ahead)) = answers.iter().find_map(|(name, a)| {
        a.as_ref()
            .ok()
            .filter(|r| r.epoch > epoch)
            .map(|r| (name, r))
    }) {
        return Err(FenceFailure::Superseded(format!(
            "{name} is already at epoch {} (fencing at {epoch})",
            ahead.epoch
        )));
    }
    // In ordinal order, for the tie-break.
    let ballots: Vec<Ballot> = view
        .members
        .iter()
        .filter_map(|member| {
            let (_, answer) = answers.iter().find(|(name, _)| *name == member.name)?;
            let r = answer.as_ref().ok().filter(|r| r.epoch == epoch)?;
            Some(Ballot::of_answer(member, r))
        })
        .collect();
    elect(view, &ballots, epoch, exclude, prefer)
}

/// What the members did, for messages: answered a fence, or merely answer (a dry run).
fn answered(epoch: u64) -> String {
    if epoch == 0 {
        "answer".to_owned()
    } else {
        format!("answered the fence at epoch {epoch}")
    }
}

/// Promote `prefer` if it is electable, else the best electable ballot, or say why none is.
pub(super) fn elect(
    view: &View,
    ballots: &[Ballot],
    epoch: u64,
    exclude: &[String],
    prefer: Option<&str>,
) -> Result<Action, FenceFailure> {
    if ballots.iter().all(|b| b.config.is_none()) {
        return elect_first(view, ballots, epoch);
    }
    let candidates: Vec<&Ballot> = ballots
        .iter()
        .filter(|b| b.member.address.is_some() && !exclude.contains(&b.member.name))
        .filter(|b| electable(b, ballots))
        .collect();
    let preferred = candidates
        .iter()
        .find(|b| Some(b.member.name.as_str()) == prefer);
    let best = preferred
        .or_else(|| candidates.iter().rev().max_by_key(|b| b.last_log))
        .copied();
    match best {
        Some(b) => Ok(promote(view, b, epoch, Vec::new())),
        None => Err(FenceFailure::Minority(no_majority(
            ballots,
            &answered(epoch),
        ))),
    }
}

/// Is `candidate` a voter of its own voter set, with a majority of that set answering with logs
/// no newer than its own?
pub(super) fn electable(candidate: &Ballot, ballots: &[Ballot]) -> bool {
    let Some(config) = candidate.config else {
        return false;
    };
    if !candidate.votes_in(config) {
        return false;
    }
    let votes = ballots
        .iter()
        .filter(|b| b.votes_in(config) && b.last_log <= candidate.last_log)
        .count();
    votes >= majority(config.voters.len())
}

/// Why no ballot is electable, for the Event: the newest voter set seen and who counts in it.
fn no_majority(ballots: &[Ballot], answered: &str) -> String {
    let newest = ballots
        .iter()
        .filter_map(|b| b.config.map(|c| (b.last_log, c)))
        .max_by_key(|(last, c)| (c.index, *last))
        .map(|(_, c)| c);
    let Some(config) = newest else {
        return format!("no member that could {answered} holds a voter set");
    };
    let counted: Vec<&str> = ballots
        .iter()
        .filter(|b| b.votes_in(config))
        .map(|b| b.member.name.as_str())
        .collect();
    let lost: Vec<&str> = ballots
        .iter()
        .filter(|b| config.has_id(&b.member.name) && !b.votes_in(config))
        .map(|b| b.member.name.as_str())
        .collect();
    let mut message = format!(
        "only {} of {} voters {answered} ({}); {} are needed",
        counted.len(),
        config.voters.len(),
        if counted.is_empty() {
            "none".to_owned()
        } else {
            counted.join(", ")
        },
        majority(config.voters.len())
    );
    if !lost.is_empty() {
        message.push_str(&format!(
            "; {} answered with data lost since it became a voter and cannot count",
            lost.join(", ")
        ));
    }
    message
}

/// A new cluster: no voter set exists yet, and the status never recorded one (a cluster that had
/// voters and now shows none lost every volume that answered: electing would lose everything).
/// The first voter set is every member that answered.
fn elect_first(view: &View, ballots: &[Ballot], epoch: u64) -> Result<Action, FenceFailure> {
    if view.had_voters {
        return Err(FenceFailure::Minority(format!(
            "no member that {} holds a voter set: they all lost their data; bring back a member with its volume", answered(epoch)
        )));
    }
    let needed = majority(view.members.len());
    if ballots.len() < needed {
        return Err(FenceFailure::Minority(format!(
            "only {} of {} members {}; {needed} are needed",
            ballots.len(),
            view.members.len(),
            answered(epoch)
        )));
    }
    let best = ballots
        .iter()
        .filter(|b| b.member.address.is_some())
        .rev()
        .max_by_key(|b| b.last_log)
        .ok_or_else(|| FenceFailure::Minority("no fenced member has an address".to_owned()))?;
    let voters = ballots
        .iter()
        .map(|b| Voter {
            id: b.member.name.clone(),
            incarnation: b.incarnation,
        })
        .collect();
    Ok(promote(view, best, epoch, voters))
}

fn promote(view: &View, best: &Ballot, epoch: u64, voters: Vec<Voter>) -> Action {
    Action::Promote {
        candidate: Peer {
            id: best.member.name.clone(),
            address: best.member.address.clone().unwrap_or_default(),
        },
        epoch,
        followers: follower_peers_fresh(view, &best.member.name),
        voters,
        elected: true,
    }
}

/// Every member but `leader`, addressed as the operator dials it; a member whose pod has no
/// address keeps the address the leader already has for it, else its stable DNS name.
pub(super) fn follower_peers(view: &View, leader: &str, status: &SingleLeaderStatus) -> Vec<Peer> {
    view.members
        .iter()
        .filter(|m| m.name != leader)
        .map(|m| {
            let known = status
                .followers
                .iter()
                .find(|f| f.id == m.name)
                .map(|f| f.address.clone());
            Peer {
                id: m.name.clone(),
                address: m
                    .address
                    .clone()
                    .or(known)
                    .unwrap_or_else(|| m.stable_address.clone()),
            }
        })
        .collect()
}

fn follower_peers_fresh(view: &View, leader: &str) -> Vec<Peer> {
    view.members
        .iter()
        .filter(|m| m.name != leader)
        .map(|m| Peer {
            id: m.name.clone(),
            address: m
                .address
                .clone()
                .unwrap_or_else(|| m.stable_address.clone()),
        })
        .collect()
}

/// Every member with an address: unreachable ones are tried too (they may answer now).
pub(super) fn fence_targets(view: &View) -> Vec<Peer> {
    view.members.iter().filter_map(peer).collect()
}

pub(super) fn peer(member: &Member) -> Option<Peer> {
    Some(Peer {
        id: member.name.clone(),
        address: member.address.clone()?,
    })
}

/// Would a fence of the members that answer now elect somebody? `Err` says who is missing.
pub(super) fn could_elect(
    view: &View,
    reachable: &[(&Member, &SingleLeaderStatus)],
) -> Result<(), String> {
    let ballots: Vec<Ballot> = reachable
        .iter()
        .map(|(m, n)| Ballot::of_status(m, n))
        .collect();
    if ballots.iter().all(|b| b.config.is_none()) && !view.had_voters {
        let needed = majority(view.members.len());
        return if ballots.len() >= needed {
            Ok(())
        } else {
            Err(format!(
                "only {} of {} members answer; {needed} are needed to elect one",
                ballots.len(),
                view.members.len()
            ))
        };
    }
    if ballots.iter().any(|b| electable(b, &ballots)) {
        return Ok(());
    }
    match elect(view, &ballots, 0, &[], None) {
        Err(FenceFailure::Minority(why) | FenceFailure::Superseded(why)) => Err(why),
        Ok(_) => Ok(()),
    }
}
