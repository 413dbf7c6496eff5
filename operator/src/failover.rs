//! (pure decision + thin executor) Single-leader leader bootstrap and failover (docs/design.md §5).
//!
//! [`decide`] is pure: from what the operator sees of every member (pod state, `GET
//! /admin/status` or why it failed), the epoch and "no leader since" time kept in the cluster's
//! status, the timing settings and `now`, it returns the one next [`Action`]. The executor
//! ([`execute::drive`]) performs it against the nodes' admin API, re-reads the nodes and asks
//! again until nothing is left to do, so the whole job is a sequence of idempotent steps and an
//! operator restarted at any point finishes it from what the nodes report:
//!
//! ```text
//! no node knows a leader, epoch 0        -> Bootstrap { fence at 1 }
//! a majority fenced at E, nobody leads   -> Promote the most up-to-date of them in E
//! leader of E gone, restarted or fenced  -> Failover { fence at E + 1 } at once
//! leader of E unreachable, and a majority
//!   lost it for leaderLossTimeoutMs      -> Failover { fence at E + 1 } at once
//! leader of E's pod terminating          -> Switchover to the best other member
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
//! adopted the new epoch, so it holds every entry committed before. Timing (the leader-loss
//! timeout, the followers' corroboration, the least interval between failovers) only decides
//! *when* to fail over, never whether it is safe.

mod choose;
pub mod execute;
pub mod switchover;
mod voters;

#[cfg(test)]
mod switchover_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod voters_tests;

use std::time::Duration;

use rc_api::{NodeStatus, Peer, Role, Voter};

use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};

pub use choose::{after_fence, after_fence_preferring};
use choose::{elect, electable, fence_targets, follower_peers, peer, Ballot};
pub use switchover::{SwitchoverRequest, SwitchoverState};

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
    /// When to fail over (`spec.singleLeader`).
    pub timing: Timing,
    /// When the last failover happened (`status.lastFailover.time`), in ms since the Unix epoch.
    pub last_failover_ms: Option<i64>,
    /// `status.epoch`: a floor for the epoch, in case no node with the newest one answers.
    pub known_epoch: u64,
    /// `status.noLeaderSince`, in milliseconds since the Unix epoch.
    pub no_leader_since_ms: Option<i64>,
    /// When the members' statuses were read (ms since the Unix epoch), if known: their
    /// `ms_since_leader_contact` counts from then.
    pub statuses_read_ms: Option<i64>,
    /// A switchover asked for (by annotation or by a rollout), if any.
    pub switchover: Option<SwitchoverRequest>,
}

/// When the operator fails over (`spec.singleLeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// `leaderLossTimeoutMs`: followers that have not heard from the leader this long have
    /// lost it.
    pub leader_loss: Duration,
    /// `minFailoverIntervalSeconds`: least time between two failovers decided on reachability.
    pub min_interval: Duration,
    /// `failoverDelaySeconds`, when still set: deprecated and ignored, reported once.
    pub deprecated_delay: Option<i32>,
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
    /// A planned change of leader (the serving leader `from` is leaving the voters, its pod
    /// is being deleted, or a switchover was asked for). Fence at `new_epoch`, then promote
    /// `prefer` if it is electable, else the best member that is not in `exclude`.
    Switchover {
        new_epoch: u64,
        fence: Vec<Peer>,
        from: String,
        exclude: Vec<String>,
        prefer: Option<String>,
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
    /// True once the leader is known lost and no leader serves yet (phase `FailingOver`).
    pub failing_over: bool,
    pub blocked: Option<Blocked>,
    /// Look again after this long (when the evidence may be complete).
    pub recheck: Option<Duration>,
    /// A voter-set change under way and what it waits for (condition `Progressing`).
    pub voters_pending: Option<String>,
    /// Why the action is a failover, when it is one.
    pub cause: Option<Cause>,
    /// Where a requested switchover stands, when one was asked for.
    pub switchover: Option<SwitchoverState>,
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
        cause: None,
        switchover: None,
    };
    match leader_of(epoch, &reachable) {
        Some(leader) => match serving(view, &leader, epoch) {
            Ok(()) => healthy(view, &leader, epoch, &reachable, now_ms, base),
            Err(loss) => leader_lost(view, &leader, &loss, &reachable, now_ms, base),
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

/// Why the leader of the newest epoch does not serve, and how the operator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loss {
    why: String,
    kind: LossKind,
}

/// Why a failover was decided, for its record, Event and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `pod-gone`, `restarted`, `self-fenced`, `unreachable` or `no-leader` (a metrics label).
    pub kind: &'static str,
    /// Who saw what, in words.
    pub evidence: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LossKind {
    /// Its pod is gone or being deleted, or it answers but restarted: certain, replace it now.
    Gone,
    /// It answers that it fenced itself: certain, but a flapping network causes it too.
    Fenced,
    /// The operator cannot reach it or its pod is not ready: needs the followers' word.
    Silent,
}

impl LossKind {
    fn label(self) -> &'static str {
        match self {
            LossKind::Gone => "gone",
            LossKind::Fenced => "self-fenced",
            LossKind::Silent => "unreachable",
        }
    }
}

/// `Ok` when `leader` serves: its pod is ready and it leads `epoch` without being self-fenced.
fn serving(view: &View, leader: &str, epoch: u64) -> Result<(), Loss> {
    let loss = |kind, why: &str| {
        Err(Loss {
            why: why.to_owned(),
            kind,
        })
    };
    let Some(member) = view.members.iter().find(|m| m.name == leader) else {
        return loss(LossKind::Gone, "it is not a member any more");
    };
    match member.pod {
        PodState::Missing => return loss(LossKind::Gone, "its pod does not exist"),
        PodState::Terminating => return loss(LossKind::Gone, "its pod is being deleted"),
        PodState::NotReady | PodState::Ready => {}
    }
    match &member.node {
        // Nothing listens at its address: the process is not running (restarting in place).
        Err(e) if e.ends_with(crate::node_client::REFUSED) => {
            loss(LossKind::Gone, &format!("its process is not running ({e})"))
        }
        Err(e) => loss(
            LossKind::Silent,
            &format!("its admin API is unreachable ({e})"),
        ),
        Ok(n) if n.role != Role::Leader || n.epoch != epoch => loss(
            LossKind::Gone,
            &format!("it reports {:?} in epoch {} (restarted)", n.role, n.epoch),
        ),
        Ok(n) if n.self_fenced => loss(LossKind::Fenced, "it fenced itself (no majority)"),
        Ok(_) if member.pod == PodState::NotReady => loss(LossKind::Silent, "its pod is not ready"),
        Ok(_) => Ok(()),
    }
}

fn healthy(
    view: &View,
    leader: &str,
    epoch: u64,
    reachable: &[(&Member, &NodeStatus)],
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
        voters::Step::Done => match &view.switchover {
            Some(request) => {
                let (state, action) = switchover::next_step(view, leader, status, request, now_ms);
                let waiting = matches!(state, SwitchoverState::Waiting(_));
                let decision = Decision {
                    switchover: Some(state),
                    recheck: waiting.then_some(switchover::RECHECK),
                    ..decision
                };
                match action {
                    Some(action) => {
                        let cause = Cause {
                            kind: "switchover",
                            evidence: match &request.target {
                                Some(t) => format!("requested to {t}"),
                                None => "requested to the most caught-up follower".to_owned(),
                            },
                        };
                        return Decision {
                            action,
                            cause: Some(cause),
                            ..decision
                        };
                    }
                    None => decision,
                }
            }
            None => decision,
        },
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

/// The leader of `base.epoch` does not serve: fail over now if the evidence is enough (see
/// docs/design.md §5), with no fixed wait.
fn leader_lost(
    view: &View,
    leader: &str,
    loss: &Loss,
    reachable: &[(&Member, &NodeStatus)],
    now_ms: i64,
    base: Decision,
) -> Decision {
    let why = &loss.why;
    let held = |reason: String, warn: bool, recheck: Duration| Decision {
        failing_over: warn,
        blocked: Some(Blocked { reason, warn }),
        recheck: Some(recheck),
        ..base.clone()
    };
    let loss_ms = u64::try_from(view.timing.leader_loss.as_millis()).unwrap_or(u64::MAX);
    let waited = now_ms.saturating_sub(base.no_leader_since_ms.unwrap_or(now_ms));
    let mut corroboration = None;
    if loss.kind == LossKind::Silent {
        // Corroboration: the operator's own silence from the leader is one vote. Members that
        // have not heard from it for leaderLossTimeoutMs are the others; together they must be a
        // majority, and those still in contact (with the leader) must not be. So an operator cut
        // off from a healthy leader never deposes it.
        let mut lost = vec![format!("{leader} (unreachable to the operator)")];
        let mut in_contact = Vec::new();
        for (m, n) in reachable.iter().filter(|(m, _)| m.name != leader) {
            let health = rc_api::Health::of(n, loss_ms);
            let follows = n.epoch == base.epoch && n.leader.as_deref() == Some(leader);
            if follows && !health.leader_contact_lost {
                in_contact.push((m.name.clone(), n.ms_since_leader_contact.unwrap_or(0)));
            } else {
                lost.push(match n.ms_since_leader_contact {
                    Some(ms) if follows => format!("{} ({ms} ms without contact)", m.name),
                    _ => format!("{} (no leader)", m.name),
                });
            }
        }
        let needed = majority(view.members.len());
        if lost.len() < needed || in_contact.len() + 1 >= needed {
            let contact: Vec<String> = in_contact
                .iter()
                .map(|(name, ms)| format!("{name} heard from it {ms} ms ago"))
                .collect();
            // Look again when the freshest contact reaches the timeout (the feed usually says
            // so first).
            let freshest = in_contact.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
            let rest = Duration::from_millis(loss_ms.saturating_sub(freshest).max(50));
            return held(
                format!(
                    "leader {leader} seems down ({why}) but only {} of {} members lost it ({}; {needed} needed){}: not failing over",
                    lost.len(),
                    view.members.len(),
                    lost.join(", "),
                    if contact.is_empty() { String::new() } else { format!("; {}", contact.join(", ")) },
                ),
                // Still undecided after twice the timeout: the operator may be the one cut off,
                // or too few members answer. Worth a Warning; before that it is the normal wait.
                i64::try_from(loss_ms.saturating_mul(2)).is_ok_and(|twice| waited >= twice),
                rest,
            );
        }
        corroboration = Some(lost.join(", "));
    }
    if loss.kind != LossKind::Gone {
        if let Some(last) = view.last_failover_ms {
            let interval = i64::try_from(view.timing.min_interval.as_millis()).unwrap_or(i64::MAX);
            let since = now_ms.saturating_sub(last);
            if since < interval {
                let rest = Duration::from_millis(u64::try_from(interval - since).unwrap_or(0));
                return held(
                    format!(
                        "leader {leader} is lost ({why}) but the last failover was {:.1} s ago: waiting out minFailoverIntervalSeconds ({} s) so a flapping network cannot cause a failover storm",
                        since as f64 / 1000.0,
                        view.timing.min_interval.as_secs()
                    ),
                    true,
                    rest,
                );
            }
        }
    }
    if let Err(shortfall) = could_elect(view, reachable) {
        return held(
            format!("leader {leader} is lost ({why}) but {shortfall}"),
            true,
            view.timing.leader_loss.max(Duration::from_millis(500)),
        );
    }
    let cause = Cause {
        kind: loss.kind.label(),
        evidence: match &corroboration {
            Some(lost) => format!("{why}; lost it: {lost}"),
            None => why.clone(),
        },
    };
    let terminating = view
        .members
        .iter()
        .any(|m| m.name == leader && m.pod == PodState::Terminating);
    let action = if terminating {
        // A planned hand-over: the old leader may still run (it serves until it is fenced), so
        // it must not win the election with the longest log.
        Action::Switchover {
            new_epoch: base.epoch + 1,
            fence: fence_targets(view),
            from: leader.to_owned(),
            exclude: vec![leader.to_owned()],
            prefer: None,
        }
    } else {
        Action::Failover {
            new_epoch: base.epoch + 1,
            fence: fence_targets(view),
            from: Some(leader.to_owned()),
        }
    };
    Decision {
        action,
        failing_over: true,
        cause: Some(cause),
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
        if let Ok(action) = elect(view, &fenced, epoch, &[], None) {
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
        cause: (epoch > 0).then(|| Cause {
            kind: "no-leader",
            evidence: format!("no member leads epoch {epoch}"),
        }),
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
    match elect(view, &ballots, 0, &[], None) {
        Err(FenceFailure::Minority(why) | FenceFailure::Superseded(why)) => Err(why),
        Ok(_) => Ok(()),
    }
}
