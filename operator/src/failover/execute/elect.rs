//! (client: node admin API only) Electing a leader: the fence and promote calls of a
//! bootstrap, failover or switchover, the hand-over a switchover starts with, and the notes they
//! leave for Events.

use std::ops::ControlFlow;
use std::time::Duration;

use rc_api::{HandoverRequest, Peer, PromoteRequest};
use tracing::{info, instrument, warn};

use super::calls::{fence_all, last_contact_ms};
use super::{reason, refresh, Note, Pass, Promotion};
use crate::failover::{
    after_fence_preferring, decide, switchover, Action, Blocked, Cause, Decision, FenceFailure,
    SwitchoverState,
};
use crate::node_client::NodeError;

/// How long a switchover's leader waits for its target to hold the whole log, writes stopped.
const HAND_OVER_WAIT: Duration = Duration::from_millis(1000);

impl Pass<'_> {
    /// A bootstrap or failover: say so, fence every member at `new_epoch`, elect.
    pub(super) async fn fail_over(
        &mut self,
        action: &Action,
        fence: &[Peer],
        new_epoch: u64,
    ) -> ControlFlow<Decision> {
        let from = match action {
            Action::Failover { from, .. } => from.clone(),
            _ => None,
        };
        self.notes
            .push(started_note(action, &from, new_epoch, self.cause.as_ref()));
        self.fence_and_elect(fence, new_epoch, from, &[], None)
            .await
    }

    /// A planned change of leader away from `from`: hand over to `prefer` first when there is
    /// one, then fence every member at `new_epoch` and elect.
    pub(super) async fn switch_over(
        &mut self,
        fence: &[Peer],
        new_epoch: u64,
        from: &str,
        exclude: &[String],
        prefer: Option<&str>,
    ) -> ControlFlow<Decision> {
        let message = match (prefer, &self.cause) {
            (Some(to), _) => format!(
                "switchover from {from} to {to}: fencing every member at epoch {new_epoch}"
            ),
            (None, Some(cause)) => format!(
                "leader {from} hands over ({}: {}): fencing every member at epoch {new_epoch} to elect another",
                cause.kind, cause.evidence
            ),
            (None, None) => format!(
                "leader {from} is leaving the voters: fencing every member at epoch {new_epoch} to hand over to a voter that stays"
            ),
        };
        if let Some(to) = prefer {
            self.hand_over(fence, from, to, new_epoch).await?;
        }
        self.notes.push(Note {
            about: Some(from.to_owned()),
            reason: reason::SWITCHOVER_STARTED,
            warning: false,
            message,
        });
        self.fence_and_elect(fence, new_epoch, Some(from.to_owned()), exclude, prefer)
            .await
    }

    /// A switchover's first step: the leader `from` stops taking writes until `to` holds its
    /// whole log, so the fence that follows elects `to` with nothing left behind. When `to`
    /// does not catch up in time the leader takes writes again and the pass ends with the
    /// switchover waiting (retried; a request is refused after its bound). A node or client
    /// without the call (404/501) is fenced without it: the election still promotes only an
    /// electable member.
    #[instrument(name = "hand_over", skip_all, fields(from, to, epoch = new_epoch - 1))]
    async fn hand_over(
        &mut self,
        fence: &[Peer],
        from: &str,
        to: &str,
        new_epoch: u64,
    ) -> ControlFlow<Decision> {
        let Some(leader) = fence.iter().find(|p| p.id == from) else {
            return ControlFlow::Continue(());
        };
        self.hand_over_started_ms = Some((self.now_ms)());
        let request = HandoverRequest {
            epoch: new_epoch - 1,
            target: to.to_owned(),
            wait_ms: u64::try_from(HAND_OVER_WAIT.as_millis()).unwrap_or(u64::MAX),
        };
        match self
            .nodes
            .handover(&leader.address, self.auth, request)
            .await
        {
            Ok(_) => ControlFlow::Continue(()),
            Err(NodeError::Status {
                status: 404 | 501, ..
            }) => ControlFlow::Continue(()),
            Err(e) => {
                let why = format!("leader {from} could not hand over to {to}: {e}");
                warn!(%why, "switchover waits");
                ControlFlow::Break(Decision {
                    recheck: Some(switchover::RECHECK),
                    switchover: Some(SwitchoverState::Waiting(why)),
                    ..decide(self.view, (self.now_ms)())
                })
            }
        }
    }

    #[instrument(name = "fence_and_elect", skip_all, fields(epoch = new_epoch, from = from.as_deref(), prefer))]
    async fn fence_and_elect(
        &mut self,
        fence: &[Peer],
        new_epoch: u64,
        from: Option<String>,
        exclude: &[String],
        prefer: Option<&str>,
    ) -> ControlFlow<Decision> {
        let decided = self
            .hand_over_started_ms
            .take()
            .unwrap_or_else(|| (self.now_ms)());
        // Contact ages count from when the statuses were read, not from now: the reads may be
        // a status timeout and a few API calls old.
        let read = self.view.statuses_read_ms.unwrap_or(decided);
        let last_served = from
            .as_deref()
            .and_then(|leader| last_contact_ms(self.view, leader, read))
            .or(self.view.no_leader_since_ms)
            .unwrap_or(decided)
            .min(decided);
        // Members that answered their last status read are waited for (briefly) even after a
        // majority answered: the most up-to-date may be among them. Silent ones are not.
        let answering: Vec<&str> = self
            .view
            .members
            .iter()
            .filter(|m| m.node.is_ok())
            .map(|m| m.name.as_str())
            .collect();
        let answers = fence_all(self.nodes, self.auth, fence, new_epoch, &answering).await;
        self.phases = Some((last_served, decided, (self.now_ms)()));
        match after_fence_preferring(self.view, new_epoch, &answers, exclude, prefer) {
            Ok(promote) => {
                if let (Some(to), Action::Promote { candidate, .. }) = (prefer, &promote) {
                    if candidate.id != to {
                        self.notes.push(Note {
                            about: None,
                            reason: reason::SWITCHOVER_REDIRECTED,
                            warning: true,
                            message: format!(
                                "switchover target {to} lacked entries a majority held at the fence (writes arrived after it caught up): {} leads instead",
                                candidate.id
                            ),
                        });
                    }
                }
                self.pending_from = from;
                self.promote(&promote).await;
                ControlFlow::Continue(())
            }
            Err(failure) => ControlFlow::Break(self.blocked(failure).await),
        }
    }

    /// `POST /admin/promote` for an [`Action::Promote`]: a new leader (a [`Promotion`]) or the
    /// current one with a new follower list.
    #[instrument(name = "promote", skip_all)]
    pub(super) async fn promote(&mut self, action: &Action) {
        let Action::Promote {
            candidate,
            epoch,
            followers,
            voters,
            elected,
        } = action
        else {
            return;
        };
        let epoch = *epoch;
        let request = PromoteRequest {
            epoch,
            followers: followers.clone(),
            voters: voters.clone(),
        };
        match self
            .nodes
            .promote(&candidate.address, self.auth, request)
            .await
        {
            Ok(()) if *elected => {
                let at_ms = (self.now_ms)();
                let since = self.view.no_leader_since_ms.unwrap_or(at_ms);
                // The rest of this pass judges the new leader as led since now.
                self.view.last_failover_ms = Some(at_ms);
                info!(leader = %candidate.id, epoch, "promoted");
                let from = self.pending_from.take();
                self.notes.push(Note {
                    about: Some(candidate.id.clone()),
                    reason: reason::LEADER_PROMOTED,
                    warning: false,
                    message: format!(
                        "{} leads epoch {epoch}{}, {} ms without a leader",
                        candidate.id,
                        from.as_ref()
                            .map(|f| format!(" (was {f})"))
                            .unwrap_or_default(),
                        at_ms.saturating_sub(since)
                    ),
                });
                let (last_served, decided, fenced) =
                    self.phases.take().unwrap_or((since, at_ms, at_ms));
                self.promoted = Some(Promotion {
                    to: candidate.id.clone(),
                    from,
                    epoch,
                    at_ms,
                    no_leader_since_ms: since,
                    last_served_ms: last_served,
                    decided_ms: decided,
                    fenced_ms: fenced,
                    cause: self.cause.clone(),
                });
            }
            Ok(()) => self.notes.push(Note {
                about: None,
                reason: reason::FOLLOWERS_UPDATED,
                warning: false,
                message: format!(
                    "{} replicates to {}",
                    candidate.id,
                    names(followers).join(", ")
                ),
            }),
            Err(e) => {
                warn!(error = %e, leader = %candidate.id, epoch, "promote failed");
                self.notes.push(Note {
                    about: None,
                    reason: reason::FAILOVER_BLOCKED,
                    warning: true,
                    message: format!("promoting {} in epoch {epoch}: {e}", candidate.id),
                });
            }
        }
    }

    /// A fence that reached too few members, or was overtaken: says so, re-reads the nodes
    /// and returns the decision the pass ends with.
    async fn blocked(&mut self, failure: FenceFailure) -> Decision {
        let (message, warning) = match failure {
            FenceFailure::Minority(m) => (m, true),
            FenceFailure::Superseded(m) => (m, false),
        };
        warn!(%message, "failover blocked");
        self.notes.push(Note {
            about: None,
            reason: reason::FAILOVER_BLOCKED,
            warning,
            message: message.clone(),
        });
        refresh(self.nodes, self.auth, self.view).await;
        Decision {
            failing_over: true,
            blocked: Some(Blocked {
                reason: message,
                warn: warning,
            }),
            recheck: Some(Duration::from_secs(1)),
            ..decide(self.view, (self.now_ms)())
        }
    }
}

/// The `FailoverStarted` note: who is replaced, and what the operator saw.
fn started_note(action: &Action, from: &Option<String>, epoch: u64, cause: Option<&Cause>) -> Note {
    let evidence = cause.map_or_else(String::new, |c| format!(" ({}: {})", c.kind, c.evidence));
    let message = match (action, from) {
        (Action::Bootstrap { .. }, _) => {
            format!("no leader yet: fencing every member at epoch {epoch} to elect the first")
        }
        (_, Some(from)) => {
            format!("leader {from} is lost{evidence}: fencing every member at epoch {epoch}")
        }
        (_, None) => format!("no leader{evidence}: fencing every member at epoch {epoch}"),
    };
    Note {
        about: from.clone(),
        reason: reason::FAILOVER_STARTED,
        warning: !matches!(action, Action::Bootstrap { .. }),
        message,
    }
}

fn names(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(|p| p.id.clone()).collect()
}
