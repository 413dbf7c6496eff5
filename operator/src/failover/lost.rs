//! (pure) When the leader of the newest epoch does not serve, or nobody leads it: how the
//! operator knows ([`serving`]), and whether the evidence is enough to fail over now
//! ([`leader_lost`], [`no_leader`]), with no fixed wait (docs/design.md §5).

use std::time::Duration;

use rc_api::{Role, SingleLeaderStatus};

use super::choose::{could_elect, elect, fence_targets, Ballot};
use super::{majority, Action, Blocked, Cause, Decision, Member, PodState, View};

/// Why the leader of the newest epoch does not serve, and how the operator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Loss {
    why: String,
    kind: LossKind,
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
pub(super) fn serving(view: &View, leader: &str, epoch: u64) -> Result<(), Loss> {
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
    match member.status() {
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

/// A failover held back: why, whether it is worth a Warning, and when to look again.
struct Hold {
    reason: String,
    warn: bool,
    recheck: Duration,
}

impl Hold {
    fn decision(self, base: Decision) -> Decision {
        Decision {
            failing_over: self.warn,
            blocked: Some(Blocked {
                reason: self.reason,
                warn: self.warn,
            }),
            recheck: Some(self.recheck),
            ..base
        }
    }
}

/// The leader of `base.epoch` does not serve: fail over now if the evidence is enough (see
/// docs/design.md §5), with no fixed wait.
pub(super) fn leader_lost(
    view: &View,
    leader: &str,
    loss: &Loss,
    reachable: &[(&Member, &SingleLeaderStatus)],
    now_ms: i64,
    base: Decision,
) -> Decision {
    let why = &loss.why;
    let corroboration = match loss.kind {
        LossKind::Silent => match corroborate(view, leader, why, reachable, now_ms, &base) {
            Ok(lost) => Some(lost),
            Err(hold) => return hold.decision(base),
        },
        LossKind::Gone | LossKind::Fenced => None,
    };
    if loss.kind != LossKind::Gone {
        if let Some(hold) = too_soon_after_last_failover(view, leader, why, now_ms) {
            return hold.decision(base);
        }
    }
    if let Err(shortfall) = could_elect(view, reachable) {
        let hold = Hold {
            reason: format!("leader {leader} is lost ({why}) but {shortfall}"),
            warn: true,
            recheck: view.timing.leader_loss.max(Duration::from_millis(500)),
        };
        return hold.decision(base);
    }
    let cause = Cause {
        kind: loss.kind.label(),
        evidence: match &corroboration {
            Some(lost) => format!("{why}; lost it: {lost}"),
            None => why.clone(),
        },
    };
    Decision {
        action: replace(view, leader, base.epoch),
        failing_over: true,
        cause: Some(cause),
        ..base
    }
}

/// Corroboration: the operator's own silence from the leader is one vote. Members that have not
/// heard from it for leaderLossTimeoutMs are the others; together they must be a majority, and
/// those still in contact (with the leader) must not be. So an operator cut off from a healthy
/// leader never deposes it. `Ok`: who lost it, in words.
fn corroborate(
    view: &View,
    leader: &str,
    why: &str,
    reachable: &[(&Member, &SingleLeaderStatus)],
    now_ms: i64,
    base: &Decision,
) -> Result<String, Hold> {
    let loss_ms = u64::try_from(view.timing.leader_loss.as_millis()).unwrap_or(u64::MAX);
    // A member with no leader yet has only lost one that has led for leaderLossTimeoutMs: a
    // leader promoted moments ago (this pass, say) simply has not reached it yet. Without this,
    // a leader whose pod is not ready yet would be replaced before its first round.
    let led_long_enough = view.last_failover_ms.is_none_or(|at| {
        u64::try_from(now_ms.saturating_sub(at)).is_ok_and(|since| since >= loss_ms)
    });
    let mut lost = vec![format!("{leader} (unreachable to the operator)")];
    let mut in_contact = Vec::new();
    for (m, n) in reachable.iter().filter(|(m, _)| m.name != leader) {
        let health = rc_api::Health::of(n, loss_ms);
        let follows = n.epoch == base.epoch && n.leader.as_deref() == Some(leader);
        if follows && !health.leader_contact_lost {
            in_contact.push((m.name.clone(), n.ms_since_leader_contact.unwrap_or(0)));
        } else {
            match n.ms_since_leader_contact {
                Some(ms) if follows => lost.push(format!("{} ({ms} ms without contact)", m.name)),
                _ if led_long_enough => lost.push(format!("{} (no leader)", m.name)),
                _ => {}
            }
        }
    }
    let needed = majority(view.members.len());
    if lost.len() >= needed && in_contact.len() + 1 < needed {
        return Ok(lost.join(", "));
    }
    let contact: Vec<String> = in_contact
        .iter()
        .map(|(name, ms)| format!("{name} heard from it {ms} ms ago"))
        .collect();
    // Look again when the freshest contact reaches the timeout (the feed usually says so first).
    let freshest = in_contact.iter().map(|(_, ms)| *ms).max().unwrap_or(0);
    let waited = now_ms.saturating_sub(base.no_leader_since_ms.unwrap_or(now_ms));
    Err(Hold {
        reason: format!(
            "leader {leader} seems down ({why}) but only {} of {} members lost it ({}; {needed} needed){}: not failing over",
            lost.len(),
            view.members.len(),
            lost.join(", "),
            if contact.is_empty() { String::new() } else { format!("; {}", contact.join(", ")) },
        ),
        // Still undecided after twice the timeout: the operator may be the one cut off, or too
        // few members answer. Worth a Warning; before that it is the normal wait.
        warn: i64::try_from(loss_ms.saturating_mul(2)).is_ok_and(|twice| waited >= twice),
        recheck: Duration::from_millis(loss_ms.saturating_sub(freshest).max(50)),
    })
}

/// A failover decided on reachability waits out minFailoverIntervalSeconds since the last one.
fn too_soon_after_last_failover(view: &View, leader: &str, why: &str, now_ms: i64) -> Option<Hold> {
    let last = view.last_failover_ms?;
    let interval = i64::try_from(view.timing.min_interval.as_millis()).unwrap_or(i64::MAX);
    let since = now_ms.saturating_sub(last);
    (since < interval).then(|| Hold {
        reason: format!(
            "leader {leader} is lost ({why}) but the last failover was {:.1} s ago: waiting out minFailoverIntervalSeconds ({} s) so a flapping network cannot cause a failover storm",
            since as f64 / 1000.0,
            view.timing.min_interval.as_secs()
        ),
        warn: true,
        recheck: Duration::from_millis(u64::try_from(interval - since).unwrap_or(0)),
    })
}

/// The action that replaces the lost `leader` of `epoch`.
fn replace(view: &View, leader: &str, epoch: u64) -> Action {
    let terminating = view
        .members
        .iter()
        .any(|m| m.name == leader && m.pod == PodState::Terminating);
    if terminating {
        // A planned hand-over: the old leader may still run (it serves until it is fenced), so
        // it must not win the election with the longest log.
        Action::Switchover {
            new_epoch: epoch + 1,
            fence: fence_targets(view),
            from: leader.to_owned(),
            exclude: vec![leader.to_owned()],
            prefer: None,
        }
    } else {
        Action::Failover {
            new_epoch: epoch + 1,
            fence: fence_targets(view),
            from: Some(leader.to_owned()),
        }
    }
}

/// Nobody leads the newest epoch: resume an election a stopped operator left half-done, else
/// fence at a new epoch (the first, for a new cluster) once an election could succeed.
pub(super) fn no_leader(
    view: &View,
    reachable: &[(&Member, &SingleLeaderStatus)],
    base: Decision,
) -> Decision {
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
