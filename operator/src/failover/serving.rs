//! (pure) The steps while the leader of the newest epoch serves, in this order: its follower
//! list, members that missed a failover, the voter set (`voters.rs`), a requested switchover
//! (`switchover.rs`), then the pods' role labels.

use std::ops::ControlFlow;

use rc_api::{Peer, SingleLeaderStatus};

use super::choose::{follower_peers, peer};
use super::switchover::{self, SwitchoverRequest, SwitchoverState};
use super::{voters, Action, Cause, Decision, Member, PodState, View, VOTERS_RECHECK};
use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};

/// The next step while `leader` serves `epoch`.
pub(super) fn healthy(
    view: &View,
    leader: &str,
    epoch: u64,
    reachable: &[(&Member, &SingleLeaderStatus)],
    now_ms: i64,
    base: Decision,
) -> Decision {
    let decision = Decision {
        leader: Some(leader.to_owned()),
        no_leader_since_ms: None,
        ..base
    };
    let Some((member, status)) = reachable.iter().find(|(m, _)| m.name == leader) else {
        return decision;
    };
    let Some(address) = member.address.clone() else {
        return decision;
    };
    let me = Peer {
        id: leader.to_owned(),
        address,
    };
    if let Some(action) = new_follower_list(view, &me, epoch, status)
        .or_else(|| follow_stragglers(&me, epoch, reachable))
    {
        return Decision { action, ..decision };
    }
    let decision = match voters::next_step(view, &me, status) {
        voters::Step::Act(action) => return Decision { action, ..decision },
        voters::Step::Wait(why) => Decision {
            recheck: Some(VOTERS_RECHECK),
            voters_pending: Some(why),
            ..decision
        },
        voters::Step::Done => match &view.switchover {
            Some(request) => {
                match requested_switchover(view, leader, status, request, now_ms, decision) {
                    ControlFlow::Break(started) => return started,
                    ControlFlow::Continue(decision) => decision,
                }
            }
            None => decision,
        },
    };
    match relabel(view, leader) {
        Some(action) => Decision { action, ..decision },
        None => decision,
    }
}

/// The leader replicates to, and counts its majority over, every member: after a scale-up or a
/// follower's new pod IP, hand it the new list (the node accepts this in the same epoch).
fn new_follower_list(
    view: &View,
    me: &Peer,
    epoch: u64,
    status: &SingleLeaderStatus,
) -> Option<Action> {
    let followers = follower_peers(view, &me.id, status);
    let mut wanted: Vec<(&str, &str)> = followers
        .iter()
        .map(|p| (p.id.as_str(), p.address.as_str()))
        .collect();
    let mut has: Vec<(&str, &str)> = status
        .followers
        .iter()
        .map(|f| (f.id.as_str(), f.address.as_str()))
        .collect();
    wanted.sort_unstable();
    has.sort_unstable();
    (wanted != has).then(|| Action::Promote {
        candidate: me.clone(),
        epoch,
        followers,
        voters: Vec::new(),
        elected: false,
    })
}

/// Members that missed the failover (older epoch) or restarted after a fence (no leader).
fn follow_stragglers(
    me: &Peer,
    epoch: u64,
    reachable: &[(&Member, &SingleLeaderStatus)],
) -> Option<Action> {
    let stragglers: Vec<Peer> = reachable
        .iter()
        .filter(|(m, n)| m.name != me.id && (n.epoch < epoch || n.leader.is_none()))
        .filter_map(|(m, _)| peer(m))
        .collect();
    (!stragglers.is_empty()).then(|| Action::Follow {
        members: stragglers,
        epoch,
        leader: me.clone(),
    })
}

/// Where a requested switchover stands: `Break` with the decision that starts it, else
/// `Continue` with its state recorded (and a recheck while it waits).
fn requested_switchover(
    view: &View,
    leader: &str,
    status: &SingleLeaderStatus,
    request: &SwitchoverRequest,
    now_ms: i64,
    decision: Decision,
) -> ControlFlow<Decision, Decision> {
    let (state, action) = switchover::next_step(view, leader, status, request, now_ms);
    let waiting = matches!(state, SwitchoverState::Waiting(_));
    let decision = Decision {
        switchover: Some(state),
        recheck: waiting.then_some(switchover::RECHECK),
        ..decision
    };
    let Some(action) = action else {
        return ControlFlow::Continue(decision);
    };
    let cause = Cause {
        kind: "switchover",
        evidence: match &request.target {
            Some(t) => format!("requested to {t}"),
            None => "requested to the most caught-up follower".to_owned(),
        },
    };
    ControlFlow::Break(Decision {
        action,
        cause: Some(cause),
        ..decision
    })
}

/// Pods whose role label is not what they do: `leader` on the leader, `follower` elsewhere.
fn relabel(view: &View, leader: &str) -> Option<Action> {
    let pods: Vec<(String, &'static str)> = view
        .members
        .iter()
        .filter(|m| matches!(m.pod, PodState::Ready | PodState::NotReady))
        .filter_map(|m| {
            let role = if m.name == leader {
                ROLE_LEADER
            } else {
                ROLE_FOLLOWER
            };
            (m.role_label.as_deref() != Some(role)).then(|| (m.name.clone(), role))
        })
        .collect();
    (!pods.is_empty()).then_some(Action::Relabel { pods })
}
