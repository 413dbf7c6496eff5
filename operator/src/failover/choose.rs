//! (pure) Choosing the new leader and the peer lists handed to the nodes.

use rc_api::{EpochResponse, LogPosition, NodeStatus, Peer};

use super::{majority, Action, FenceFailure, Member, View};

/// After fencing at `epoch`: promote the most up-to-date node among those that adopted it, when
/// they are a majority of the members.
pub fn after_fence(
    view: &View,
    epoch: u64,
    answers: &[(String, Result<EpochResponse, String>)],
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
    let fenced: Vec<(&Member, LogPosition)> = view
        .members
        .iter()
        .filter_map(|member| {
            let (_, answer) = answers.iter().find(|(name, _)| *name == member.name)?;
            let r = answer.as_ref().ok().filter(|r| r.epoch == epoch)?;
            Some((member, r.last_log))
        })
        .collect();
    let needed = majority(view.members.len());
    if fenced.len() < needed {
        return Err(FenceFailure::Minority(format!(
            "only {} of {} members answered the fence at epoch {epoch}; {needed} are needed",
            fenced.len(),
            view.members.len()
        )));
    }
    promote_best(view, &fenced, epoch)
        .ok_or_else(|| FenceFailure::Minority("no fenced member has an address".to_owned()))
}

/// Promote the member with the highest (lastEpoch, lastIndex); ties go to the lowest ordinal
/// (`fenced` is in ordinal order, and `max_by` keeps the last maximum, so compare reversed).
pub(super) fn promote_best(
    view: &View,
    fenced: &[(&Member, LogPosition)],
    epoch: u64,
) -> Option<Action> {
    let (best, _) = fenced
        .iter()
        .filter(|(m, _)| m.address.is_some())
        .rev()
        .max_by_key(|(_, last)| *last)?;
    Some(Action::Promote {
        candidate: peer(best)?,
        epoch,
        followers: follower_peers_fresh(view, &best.name),
        elected: true,
    })
}

/// Every member but `leader`, addressed as the operator dials it; a member whose pod has no
/// address keeps the address the leader already has for it, else its stable DNS name.
pub(super) fn follower_peers(view: &View, leader: &str, status: &NodeStatus) -> Vec<Peer> {
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
