//! (pure decision + thin executor) Single-leader leader bootstrap and failover (docs/design.md §5).
//!
//! [`decide`] is pure: from what the operator sees of every member (pod state, `GET
//! /admin/status` or why it failed), the epoch and "no leader since" time kept in the cluster's
//! status, the failover delay and `now`, it returns the one next [`Action`]. The executor
//! ([`execute::drive`]) performs it against the nodes' admin API, re-reads the nodes and asks
//! again until nothing is left to do, so the whole job is a sequence of idempotent steps and an
//! operator restarted at any point finishes it from what the nodes report:
//!
//! ```text
//! no node knows a leader, epoch 0        -> Bootstrap { fence at 1 }
//! a majority fenced at E, nobody leads   -> Promote the most up-to-date of them in E
//! leader of E not serving for the delay,
//!   corroborated by its followers        -> Failover { fence at E + 1 }
//! leader serves, its follower list stale -> Promote it again in E with the full list
//! members behind E or without a leader   -> Follow the leader of E
//! voter set differs from spec.replicas    -> SetVoters (one member) or Switchover
//! role labels differ                     -> Relabel
//! ```
//!
//! Voters change one at a time through the leader (`voters.rs`): a voter that lost its data is
//! removed first, a caught-up learner among the wanted members is added, then voters beyond
//! `spec.replicas` are removed, highest ordinal first, the leader last after a switchover.
//!
//! Why this is safe (docs/design.md §5): a node adopts an epoch only upwards and binds to at most one
//! leader per epoch, and the candidate has the highest (lastEpoch, lastIndex) of a majority that
//! adopted the new epoch, so it holds every entry committed before. Timing (the delay, the
//! followers' corroboration) only decides *when* to fail over, never whether it is safe.

mod choose;
pub mod execute;
mod voters;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod voters_tests;

use std::time::Duration;

use rc_api::{NodeStatus, Peer, Role, Voter};

use crate::controller::validate::{ROLE_FOLLOWER, ROLE_LEADER};

pub use choose::after_fence;
use choose::{elect, electable, fence_targets, follower_peers, peer, Ballot};

/// How a member's pod looks to Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    Missing,
    Terminating,
    NotReady,
    Ready,
}

/// One member of the cluster (ordinals `0..spec.replicas`), as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Pod name, which is also the node id.
    pub name: String,
    /// Where the operator dials the node (pod IP or DNS, per `--node-address`), when known.
    pub address: Option<String>,
    /// The stable DNS address, given to the leader for members whose pod has no address yet.
    pub stable_address: String,
    pub pod: PodState,
    /// The `replicated.dev/role` label the pod carries.
    pub role_label: Option<String>,
    /// The node's admin status, or why it could not be read.
    pub node: Result<NodeStatus, String>,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Every member by ordinal: the wanted ones (`spec.replicas`) and any beyond them still
    /// kept because they are voters.
    pub members: Vec<Member>,
    /// `spec.replicas`: the members that should be voters (the first ones).
    pub desired: usize,
    /// The status recorded a voter set once: a cluster that had one is never bootstrapped again.
    pub had_voters: bool,
    /// `spec.singleLeader.failoverDelaySeconds`.
    pub failover_delay: Duration,
    /// `status.epoch`: a floor for the epoch, in case no node with the newest one answers.
    pub known_epoch: u64,
    /// `status.noLeaderSince`, in milliseconds since the Unix epoch.
    pub no_leader_since_ms: Option<i64>,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// No node has ever had a leader: fence every member at `new_epoch` (1), then promote.
    Bootstrap {
        new_epoch: u64,
        fence: Vec<Peer>,
    },
    /// Fence every member at `new_epoch`, then promote the most up-to-date that answered.
    Failover {
        new_epoch: u64,
        fence: Vec<Peer>,
        /// The leader being replaced, when known.
        from: Option<String>,
    },
    /// A planned change of leader: the serving leader `from` is leaving the voters. Fence at
    /// `new_epoch`, then promote the best member that is not in `exclude`.
    Switchover {
        new_epoch: u64,
        fence: Vec<Peer>,
        from: String,
        exclude: Vec<String>,
    },
    /// `POST /admin/voters` to the leader: the voter set becomes `voters` (one member added or
    /// removed), for the reason `why`.
    SetVoters {
        leader: Peer,
        epoch: u64,
        voters: Vec<String>,
        why: String,
    },
    /// `POST /admin/promote`. `elected`: a new leader; otherwise the current leader is given a
    /// new follower list (scale-up, a member's new address).
    Promote {
        candidate: Peer,
        epoch: u64,
        followers: Vec<Peer>,
        /// The first voter set, for a new cluster (empty otherwise).
        voters: Vec<Voter>,
        elected: bool,
    },
    /// `POST /admin/follow` to each of `members`.
    Follow {
        members: Vec<Peer>,
        epoch: u64,
        leader: Peer,
    },
    /// Set the `replicated.dev/role` label of these pods.
    Relabel {
        pods: Vec<(String, &'static str)>,
    },
}

/// Why no failover happens although no leader serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: String,
    /// Worth a Warning Event (false while a fresh cluster waits for its pods).
    pub warn: bool,
}

/// What [`decide`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The leader of the newest epoch, when it serves.
    pub leader: Option<String>,
    /// The newest epoch seen.
    pub epoch: u64,
    /// Since when no leader has served (kept in status); `None` while one serves.
    pub no_leader_since_ms: Option<i64>,
    /// True once the delay has run out without a serving leader (phase `FailingOver`).
    pub failing_over: bool,
    pub blocked: Option<Blocked>,
    /// Look again after this long (the rest of the failover delay).
    pub recheck: Option<Duration>,
    /// A voter-set change under way and what it waits for (condition `Progressing`).
    pub voters_pending: Option<String>,
}

/// Why a fence did not lead to a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceFailure {
    /// Fewer than a majority adopted the epoch.
    Minority(String),
    /// A node is already past the epoch: someone else moved on; look again.
    Superseded(String),
}

/// While a voter-set change waits (a learner catching up), look again this often.
const VOTERS_RECHECK: Duration = Duration::from_secs(1);

/// Nodes needed for a majority of `members`.
pub fn majority(members: usize) -> usize {
    members / 2 + 1
}

/// The next step. See the module documentation.
pub fn decide(view: &View, now_ms: i64) -> Decision {
    let reachable: Vec<(&Member, &NodeStatus)> = view
        .members
        .iter()
        .filter_map(|m| m.node.as_ref().ok().map(|n| (m, n)))
        .collect();
    let epoch = reachable
        .iter()
        .map(|(_, n)| n.epoch)
        .max()
        .unwrap_or(0)
        .max(view.known_epoch);
    let base = Decision {
        action: Action::Nothing,
        leader: None,
        epoch,
        no_leader_since_ms: Some(view.no_leader_since_ms.unwrap_or(now_ms).min(now_ms)),
        failing_over: false,
        blocked: None,
        recheck: None,
        voters_pending: None,
    };
    match leader_of(epoch, &reachable) {
        Some(leader) => match serving(view, &leader, epoch) {
            Ok(()) => healthy(view, &leader, epoch, &reachable, base),
            Err(why) => leader_lost(view, &leader, &why, &reachable, now_ms, base),
        },
        None => no_leader(view, &reachable, base),
    }
}

/// The leader of `epoch`: a node leading it (not self-fenced first), else the leader its
/// followers name.
fn leader_of(epoch: u64, reachable: &[(&Member, &NodeStatus)]) -> Option<String> {
    let mut leading: Vec<&(&Member, &NodeStatus)> = reachable
        .iter()
        .filter(|(_, n)| n.role == Role::Leader && n.epoch == epoch)
        .collect();
    leading.sort_by_key(|(_, n)| n.self_fenced);
    if let Some((m, _)) = leading.first() {
        return Some(m.name.clone());
    }
    reachable
        .iter()
        .filter(|(_, n)| n.epoch == epoch)
        .find_map(|(_, n)| n.leader.clone())
}

/// `Ok` when `leader` serves: its pod is ready and it leads `epoch` without being self-fenced.
fn serving(view: &View, leader: &str, epoch: u64) -> Result<(), String> {
    let Some(member) = view.members.iter().find(|m| m.name == leader) else {
        return Err("it is not a member any more".to_owned());
    };
    match member.pod {
        PodState::Missing => return Err("its pod does not exist".to_owned()),
        PodState::Terminating => return Err("its pod is being deleted".to_owned()),
        PodState::NotReady => return Err("its pod is not ready".to_owned()),
        PodState::Ready => {}
    }
    match &member.node {
        Err(e) => Err(format!("its admin API is unreachable ({e})")),
        Ok(n) if n.role != Role::Leader || n.epoch != epoch => Err(format!(
            "it reports {:?} in epoch {} (restarted)",
            n.role, n.epoch
        )),
        Ok(n) if n.self_fenced => Err("it fenced itself (no majority)".to_owned()),
        Ok(_) => Ok(()),
    }
}

fn healthy(
    view: &View,
    leader: &str,
    epoch: u64,
    reachable: &[(&Member, &NodeStatus)],
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
    // The leader replicates to, and counts its majority over, every member: after a scale-up or
    // a follower's new pod IP, hand it the new list (the node accepts this in the same epoch).
    let followers = follower_peers(view, leader, status);
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
    if wanted != has {
        return Decision {
            action: Action::Promote {
                candidate: me,
                epoch,
                followers,
                voters: Vec::new(),
                elected: false,
            },
            ..decision
        };
    }
    // Members that missed the failover (older epoch) or restarted after a fence (no leader).
    let stragglers: Vec<Peer> = reachable
        .iter()
        .filter(|(m, n)| m.name != leader && (n.epoch < epoch || n.leader.is_none()))
        .filter_map(|(m, _)| peer(m))
        .collect();
    if !stragglers.is_empty() {
        return Decision {
            action: Action::Follow {
                members: stragglers,
                epoch,
                leader: me.clone(),
            },
            ..decision
        };
    }
    let decision = match voters::next_step(view, &me, status) {
        voters::Step::Act(action) => return Decision { action, ..decision },
        voters::Step::Wait(why) => Decision {
            recheck: Some(VOTERS_RECHECK),
            voters_pending: Some(why),
            ..decision
        },
        voters::Step::Done => decision,
    };
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
    if pods.is_empty() {
        return decision;
    }
    Decision {
        action: Action::Relabel { pods },
        ..decision
    }
}

fn leader_lost(
    view: &View,
    leader: &str,
    why: &str,
    reachable: &[(&Member, &NodeStatus)],
    now_ms: i64,
    base: Decision,
) -> Decision {
    let since = base.no_leader_since_ms.unwrap_or(now_ms);
    let delay_ms = i64::try_from(view.failover_delay.as_millis()).unwrap_or(i64::MAX);
    let waited = now_ms.saturating_sub(since);
    if waited < delay_ms {
        let rest = u64::try_from(delay_ms - waited).unwrap_or(0);
        return Decision {
            recheck: Some(Duration::from_millis(rest)),
            ..base
        };
    }
    let blocked = |reason: String| Decision {
        failing_over: true,
        blocked: Some(Blocked { reason, warn: true }),
        recheck: Some(view.failover_delay),
        ..base.clone()
    };
    // Corroboration: unless the operator sees for itself that the leader does not lead (it
    // answers, but restarted or fenced itself), every follower it can reach must have lost the
    // leader too, so that an operator cut off from a healthy leader does not depose it.
    let seen_directly = reachable.iter().any(|(m, n)| {
        m.name == leader && (n.role != Role::Leader || n.epoch != base.epoch || n.self_fenced)
    });
    if !seen_directly {
        let fresh = reachable.iter().find_map(|(m, n)| {
            let ms = n.ms_since_leader_contact?;
            let follows = n.epoch == base.epoch && n.leader.as_deref() == Some(leader);
            (m.name != leader && follows && i64::try_from(ms).unwrap_or(i64::MAX) <= delay_ms)
                .then(|| format!("{} heard from it {ms} ms ago", m.name))
        });
        if let Some(evidence) = fresh {
            return blocked(format!(
                "leader {leader} seems down ({why}) but {evidence}: not failing over"
            ));
        }
    }
    if let Err(shortfall) = could_elect(view, reachable) {
        return blocked(format!("leader {leader} is lost ({why}) but {shortfall}"));
    }
    Decision {
        action: Action::Failover {
            new_epoch: base.epoch + 1,
            fence: fence_targets(view),
            from: Some(leader.to_owned()),
        },
        failing_over: true,
        ..base
    }
}

fn no_leader(view: &View, reachable: &[(&Member, &NodeStatus)], base: Decision) -> Decision {
    let epoch = base.epoch;
    // Resume: a majority already adopted `epoch` and nobody leads it (an operator stopped
    // between fence and promote). Their logs cannot change until a leader of `epoch` exists.
    if epoch > 0 {
        let fenced: Vec<Ballot> = reachable
            .iter()
            .filter(|(_, n)| n.epoch == epoch && n.leader.is_none())
            .map(|(m, n)| Ballot::of_status(m, n))
            .collect();
        if let Ok(action) = elect(view, &fenced, epoch, &[]) {
            return Decision {
                action,
                failing_over: true,
                ..base
            };
        }
    }
    if let Err(shortfall) = could_elect(view, reachable) {
        return Decision {
            failing_over: epoch > 0,
            blocked: Some(Blocked {
                reason: format!("no leader: {shortfall}"),
                warn: epoch > 0,
            }),
            ..base
        };
    }
    let fence = fence_targets(view);
    let action = if epoch == 0 {
        Action::Bootstrap {
            new_epoch: 1,
            fence,
        }
    } else {
        Action::Failover {
            new_epoch: epoch + 1,
            fence,
            from: None,
        }
    };
    Decision {
        action,
        failing_over: epoch > 0,
        ..base
    }
}

/// Would a fence of the members that answer now elect somebody? `Err` says who is missing.
fn could_elect(view: &View, reachable: &[(&Member, &NodeStatus)]) -> Result<(), String> {
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
    match elect(view, &ballots, 0, &[]) {
        Err(FenceFailure::Minority(why) | FenceFailure::Superseded(why)) => Err(why),
        Ok(_) => Ok(()),
    }
}
