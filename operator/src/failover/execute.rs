//! (client: node admin API only) The executor: performs what [`decide`] returns, re-reads the
//! nodes, and asks again, until nothing is left to do, a step is blocked, or a step makes no
//! progress. Kubernetes writes (pod labels, status, Events) are left to the caller, which gets
//! them in the [`Report`]; so this runs against real nodes without a Kubernetes API.

use std::ops::ControlFlow;
use std::time::Duration;

use rc_api::{HandoverRequest, Peer, PromoteRequest, VotersRequest};
use tracing::{info, instrument, warn};

use super::{after_fence_preferring, decide, Action, Blocked, Cause, Decision, FenceFailure, View};
pub use crate::executor::Note;
use crate::executor::{self, Steps};

mod calls;
use crate::node_client::{NodeAdmin, NodeError};
use calls::{fence_all, follow_all, last_contact_ms};

/// How long a switchover's leader waits for its target to hold the whole log, writes stopped.
const HAND_OVER_WAIT: Duration = Duration::from_millis(1000);

/// Most steps in one pass: fence, promote, follow, relabel, a few voter changes, plus slack.
const MAX_STEPS: usize = 10;

/// Event reasons (stable: users and alerts match on them).
pub mod reason {
    pub const FAILOVER_STARTED: &str = "FailoverStarted";
    pub const LEADER_PROMOTED: &str = "LeaderPromoted";
    pub const FAILOVER_BLOCKED: &str = "FailoverBlocked";
    pub const FOLLOWERS_UPDATED: &str = "FollowersUpdated";
    pub const VOTERS_CHANGED: &str = "VotersChanged";
    pub const VOTERS_CHANGE_WAITING: &str = "VotersChangeWaiting";
    pub const SWITCHOVER_STARTED: &str = "SwitchoverStarted";
    /// A switchover's target was not electable at the fence; another member leads.
    pub const SWITCHOVER_REDIRECTED: &str = "SwitchoverRedirected";
}

/// A leader elected in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub to: String,
    pub from: Option<String>,
    pub epoch: u64,
    /// When the promote call succeeded, and since when no leader had served (milliseconds since
    /// the Unix epoch).
    pub at_ms: i64,
    pub no_leader_since_ms: i64,
    /// The last moment the old leader was known to serve: its followers' last contact, or
    /// when the operator first saw it lost.
    pub last_served_ms: i64,
    /// When the failover was decided, and when the fence had its answers.
    pub decided_ms: i64,
    pub fenced_ms: i64,
    /// Why (a metrics label and words), for failovers; `None` for the first election.
    pub cause: Option<Cause>,
}

/// What one pass did and what is left for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The last decision: `Nothing`, `Relabel` (for the caller), or a step that was blocked.
    pub decision: Decision,
    pub notes: Vec<Note>,
    pub promoted: Option<Promotion>,
}

/// Runs decide -> act -> re-read until done. `view.members[..].node` is refreshed after every
/// step, so it ends as the nodes' latest status. `now_ms` is the clock (milliseconds since the
/// Unix epoch).
pub async fn drive(
    nodes: &dyn NodeAdmin,
    token: &str,
    view: &mut View,
    now_ms: &(dyn Fn() -> i64 + Sync),
) -> Report {
    let mut pass = Pass {
        nodes,
        token,
        view,
        now_ms,
        notes: Vec::new(),
        promoted: None,
        pending_from: None,
        cause: None,
        phases: None,
        hand_over_started_ms: None,
    };
    let decision = match executor::run(&mut pass, MAX_STEPS).await {
        Some(decision) => decision,
        None => decide(pass.view, now_ms()),
    };
    Report {
        decision,
        notes: pass.notes,
        promoted: pass.promoted,
    }
}

/// One pass against the nodes, and what it did so far for the [`Report`].
struct Pass<'a> {
    nodes: &'a dyn NodeAdmin,
    token: &'a str,
    view: &'a mut View,
    now_ms: &'a (dyn Fn() -> i64 + Sync),
    notes: Vec<Note>,
    promoted: Option<Promotion>,
    /// The lost leader of a failover whose new leader is not promoted yet.
    pending_from: Option<String>,
    /// Why the last decision fails over.
    cause: Option<Cause>,
    /// (last served, decided, fenced) of the failover under way, ms since the Unix epoch.
    phases: Option<(i64, i64, i64)>,
    /// When the leader stopped taking writes for a hand-over: the switchover's unavailability
    /// starts there, not at the fence.
    hand_over_started_ms: Option<i64>,
}

impl Steps for Pass<'_> {
    type Action = Action;
    type Decision = Decision;
    const NAME: &'static str = "failover";

    /// Also carries the "no leader since" time and the newest epoch into the view, for the
    /// decisions after this one.
    fn decide(&mut self) -> Decision {
        let decision = decide(self.view, (self.now_ms)());
        self.view.no_leader_since_ms = decision.no_leader_since_ms;
        self.view.known_epoch = self.view.known_epoch.max(decision.epoch);
        self.cause.clone_from(&decision.cause);
        decision
    }

    /// Relabelling is the caller's (a Kubernetes write).
    fn action(decision: &Decision) -> Option<&Action> {
        match &decision.action {
            Action::Nothing | Action::Relabel { .. } => None,
            action => Some(action),
        }
    }

    async fn act(&mut self, action: &Action) -> ControlFlow<Decision> {
        match action {
            Action::Nothing | Action::Relabel { .. } => {}
            Action::Bootstrap { new_epoch, fence }
            | Action::Failover {
                new_epoch, fence, ..
            } => {
                let from = match action {
                    Action::Failover { from, .. } => from.clone(),
                    _ => None,
                };
                self.notes
                    .push(started_note(action, &from, *new_epoch, self.cause.as_ref()));
                return self
                    .fence_and_elect(fence, *new_epoch, from, &[], None)
                    .await;
            }
            Action::Switchover {
                new_epoch,
                fence,
                from,
                exclude,
                prefer,
            } => {
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
                    if let ControlFlow::Break(waiting) =
                        self.hand_over(fence, from, to, *new_epoch).await
                    {
                        return ControlFlow::Break(waiting);
                    }
                }
                self.notes.push(Note {
                    about: Some(from.clone()),
                    reason: reason::SWITCHOVER_STARTED,
                    warning: false,
                    message,
                });
                return self
                    .fence_and_elect(
                        fence,
                        *new_epoch,
                        Some(from.clone()),
                        exclude,
                        prefer.as_deref(),
                    )
                    .await;
            }
            Action::SetVoters {
                leader,
                epoch,
                voters,
                why,
            } => return self.set_voters(leader, *epoch, voters, why).await,
            Action::Promote { .. } => self.promote(action).await,
            Action::Follow {
                members,
                epoch,
                leader,
            } => follow_all(self.nodes, self.token, members, *epoch, leader).await,
        }
        ControlFlow::Continue(())
    }

    async fn refresh(&mut self) {
        refresh(self.nodes, self.token, self.view).await;
    }
}

impl Pass<'_> {
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
            .handover(&leader.address, self.token, request)
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
                    recheck: Some(super::switchover::RECHECK),
                    switchover: Some(super::SwitchoverState::Waiting(why)),
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
        let answers = fence_all(self.nodes, self.token, fence, new_epoch, &answering).await;
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

    /// `POST /admin/voters` to the leader. A refusal that may pass later (a learner still
    /// catching up, a change still committing) ends the pass and looks again soon.
    #[instrument(name = "set_voters", skip_all, fields(epoch, leader = %leader.id, voters = ?voters))]
    async fn set_voters(
        &mut self,
        leader: &Peer,
        epoch: u64,
        voters: &[String],
        why: &str,
    ) -> ControlFlow<Decision> {
        let request = VotersRequest {
            epoch,
            voters: voters.to_vec(),
        };
        match self
            .nodes
            .voters(&leader.address, self.token, request)
            .await
        {
            Ok(config) => {
                let ids: Vec<&str> = config.voters.iter().map(|v| v.id.as_str()).collect();
                info!(leader = %leader.id, epoch, voters = ?ids, why, "voter set changed");
                self.notes.push(Note {
                    about: None,
                    reason: reason::VOTERS_CHANGED,
                    warning: false,
                    message: format!("voters are now {}: {why}", ids.join(", ")),
                });
                ControlFlow::Continue(())
            }
            Err(e) => {
                let retry = matches!(
                    &e,
                    NodeError::Status {
                        status: 409 | 503 | 504,
                        ..
                    }
                );
                warn!(error = %e, leader = %leader.id, epoch, "voter change not made");
                self.notes.push(Note {
                    about: None,
                    reason: reason::VOTERS_CHANGE_WAITING,
                    warning: !retry,
                    message: format!("changing the voters to {} ({why}): {e}", voters.join(", ")),
                });
                refresh(self.nodes, self.token, self.view).await;
                let decision = decide(self.view, (self.now_ms)());
                ControlFlow::Break(Decision {
                    action: Action::Nothing,
                    recheck: Some(Duration::from_secs(1)),
                    voters_pending: Some(format!(
                        "changing the voters to {}: {e}",
                        voters.join(", ")
                    )),
                    ..decision
                })
            }
        }
    }

    /// `POST /admin/promote` for an [`Action::Promote`]: a new leader (a [`Promotion`]) or the
    /// current one with a new follower list.
    #[instrument(name = "promote", skip_all)]
    async fn promote(&mut self, action: &Action) {
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
            .promote(&candidate.address, self.token, request)
            .await
        {
            Ok(()) if *elected => {
                let at_ms = (self.now_ms)();
                let since = self.view.no_leader_since_ms.unwrap_or(at_ms);
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
        refresh(self.nodes, self.token, self.view).await;
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

/// Re-reads every addressable member's status.
pub async fn refresh(nodes: &dyn NodeAdmin, token: &str, view: &mut View) {
    view.statuses_read_ms = Some(k8s_openapi::jiff::Timestamp::now().as_millisecond());
    executor::read_statuses(
        nodes,
        token,
        &mut view.members,
        |m| m.address.as_ref(),
        |m| &mut m.node,
    )
    .await;
}
