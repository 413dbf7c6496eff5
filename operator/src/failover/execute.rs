//! (client: node admin API only) The executor: performs what [`decide`] returns, re-reads the
//! nodes, and asks again, until nothing is left to do, a step is blocked, or a step makes no
//! progress. Kubernetes writes (pod labels, status, Events) are left to the caller, which gets
//! them in the [`Report`]; so this runs against real nodes without a Kubernetes API.

use std::ops::ControlFlow;
use std::time::Duration;

use rc_api::{Peer, VotersRequest};
use tracing::{info, instrument, warn};

use super::{decide, Action, Cause, Decision, View};
pub use crate::executor::Note;
use crate::executor::{self, Steps};

mod calls;
mod elect;
use crate::node_client::{NodeAccess, NodeAdmin, NodeError};
use calls::follow_all;

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
    auth: &NodeAccess,
    view: &mut View,
    now_ms: &(dyn Fn() -> i64 + Sync),
) -> Report {
    let mut pass = Pass {
        nodes,
        auth,
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
    auth: &'a NodeAccess,
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
            } => return self.fail_over(action, fence, *new_epoch).await,
            Action::Switchover {
                new_epoch,
                fence,
                from,
                exclude,
                prefer,
            } => {
                return self
                    .switch_over(fence, *new_epoch, from, exclude, prefer.as_deref())
                    .await
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
            } => follow_all(self.nodes, self.auth, members, *epoch, leader).await,
        }
        ControlFlow::Continue(())
    }

    async fn refresh(&mut self) {
        refresh(self.nodes, self.auth, self.view).await;
    }
}

impl Pass<'_> {
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
        match self.nodes.voters(&leader.address, self.auth, request).await {
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
                refresh(self.nodes, self.auth, self.view).await;
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
}

/// Re-reads every addressable member's status.
pub async fn refresh(nodes: &dyn NodeAdmin, auth: &NodeAccess, view: &mut View) {
    view.statuses_read_ms = Some(k8s_openapi::jiff::Timestamp::now().as_millisecond());
    executor::read_statuses(
        nodes,
        auth,
        &mut view.members,
        |m| m.address.as_ref(),
        |m| &mut m.node,
    )
    .await;
}
