//! (client: node admin API only) The executor: performs what [`decide`] returns, re-reads the
//! nodes, and asks again, until nothing is left to do, a step has to wait, or a step makes no
//! progress. Kubernetes writes (status, Events) are left to the caller, which gets them in the
//! [`Report`]; so this runs against real nodes without a Kubernetes API.

use std::ops::ControlFlow;

use futures::future::join_all;
use rc_api::{Peer, Ring};
use tracing::{info, warn};

use super::{decide, newest_ring, Action, Change, Decision, View};
pub use crate::executor::Note;
use crate::executor::{self, Steps};
use crate::node_client::{NodeAccess, NodeAdmin};

/// Most steps in one pass: e.g. resend, address update, mark joined, decommission, plus slack.
const MAX_STEPS: usize = 8;

/// Event reasons (stable: users and alerts match on them).
pub mod reason {
    pub const RING_UPDATED: &str = "RingUpdated";
    pub const MEMBER_JOINING: &str = "MemberJoining";
    pub const MEMBER_JOINED: &str = "MemberJoined";
    pub const DECOMMISSION_STARTED: &str = "DecommissionStarted";
    pub const MEMBER_REMOVED: &str = "MemberRemoved";
    pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
    pub const RING_UPDATE_FAILED: &str = "RingUpdateFailed";
}

/// What one pass did and what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The last decision: `Nothing`, a wait, or a step that made no progress.
    pub decision: Decision,
    pub notes: Vec<Note>,
    /// The newest ring after the pass (for `status.ring`).
    pub ring: Option<Ring>,
}

/// Runs decide -> act -> re-read until done. `view.pods[..].node` is refreshed after every step,
/// and `view.recorded` holds the last ring a node accepted.
pub async fn drive(nodes: &dyn NodeAdmin, auth: &NodeAccess, view: &mut View) -> Report {
    let mut pass = Pass {
        nodes,
        auth,
        view,
        notes: Vec::new(),
    };
    let decision = match executor::run(&mut pass, MAX_STEPS).await {
        Some(decision) => decision,
        None => decide(pass.view),
    };
    let notes = pass.notes;
    let ring = newest_ring(
        view.recorded.as_ref(),
        view.pods.iter().filter_map(|p| p.node.as_ref().ok()),
    );
    Report {
        decision,
        notes,
        ring,
    }
}

/// One pass against the nodes, and the notes it collected so far.
struct Pass<'a> {
    nodes: &'a dyn NodeAdmin,
    auth: &'a NodeAccess,
    view: &'a mut View,
    notes: Vec<Note>,
}

impl Steps for Pass<'_> {
    type Action = Action;
    type Decision = Decision;
    const NAME: &'static str = "membership";

    fn decide(&mut self) -> Decision {
        decide(self.view)
    }

    fn action(decision: &Decision) -> Option<&Action> {
        Some(&decision.action).filter(|a| **a != Action::Nothing)
    }

    async fn act(&mut self, action: &Action) -> ControlFlow<Decision> {
        match action {
            Action::Nothing => {}
            Action::Push {
                ring,
                targets,
                change,
            } => self.push(ring, targets, change).await,
            Action::Decommission { members } => self.decommission(members).await,
        }
        ControlFlow::Continue(())
    }

    async fn refresh(&mut self) {
        refresh(self.nodes, self.auth, self.view).await;
    }
}

impl Pass<'_> {
    /// Sends `ring` to `targets`; once one node holds it, it is the ring from here on.
    #[tracing::instrument(name = "push_ring", skip_all, fields(version = ring.version))]
    async fn push(&mut self, ring: &Ring, targets: &[Peer], change: &Change) {
        let (nodes, auth) = (self.nodes, self.auth);
        let calls = targets.iter().map(|p| async move {
            let result = nodes.ring(&p.address, auth, ring).await;
            (p, result)
        });
        let mut accepted = 0;
        let mut failures = Vec::new();
        for (peer, result) in join_all(calls).await {
            match result {
                Ok(()) => accepted += 1,
                Err(e) => {
                    let version = ring.version;
                    warn!(member = %peer.id, version, error = %e, "ring push failed");
                    failures.push(format!("{}: {e}", peer.id));
                }
            }
        }
        if accepted == 0 {
            self.notes.push(Note {
                about: None,
                reason: reason::RING_UPDATE_FAILED,
                warning: true,
                message: format!(
                    "no node accepted ring v{}: {}",
                    ring.version,
                    failures.join("; ")
                ),
            });
            return;
        }
        // A node holds it durably now and passes it on by gossip: this is the ring from here on.
        info!(version = ring.version, ?change, accepted, "ring installed");
        self.view.recorded = Some(ring.clone());
        if let Some(note) = change_note(ring, change) {
            self.notes.push(note);
        }
        if let Change::Moved(moved) = change {
            // A pod back at a new address may have lost its disk: refill it now rather than at
            // the next periodic anti-entropy round. Best effort.
            let calls = moved.iter().map(|p| async move {
                if let Err(e) = nodes.repair(&p.address, auth).await {
                    warn!(member = %p.id, error = %e, "repair after a move failed");
                }
            });
            join_all(calls).await;
        }
    }

    /// `POST /admin/decommission` to each of `members`.
    #[tracing::instrument(name = "decommission", skip_all, fields(members = members.len()))]
    async fn decommission(&mut self, members: &[Peer]) {
        let (nodes, auth) = (self.nodes, self.auth);
        let calls = members.iter().map(|p| async move {
            let result = nodes.decommission(&p.address, auth).await;
            (p, result)
        });
        let mut started = Vec::new();
        for (peer, result) in join_all(calls).await {
            match result {
                Ok(()) => started.push(peer.id.clone()),
                Err(e) => warn!(member = %peer.id, error = %e, "decommission failed"),
            }
        }
        if !started.is_empty() {
            self.notes.push(Note {
                about: None,
                reason: reason::DECOMMISSION_STARTED,
                warning: false,
                message: format!(
                    "{} handing their data to the next owners",
                    started.join(", ")
                ),
            });
        }
    }
}

fn change_note(ring: &Ring, change: &Change) -> Option<Note> {
    let v = ring.version;
    let (reason, message) = match change {
        Change::Resend => return None,
        Change::Bootstrap => (
            reason::RING_UPDATED,
            format!(
                "installed the first ring v{v}: {}",
                ring.members
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Change::Moved(moved) => (
            reason::RING_UPDATED,
            format!(
                "ring v{v}: {}",
                moved
                    .iter()
                    .map(|p| format!("{} moved to {}", p.id, p.address))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Change::Join(ids) => (
            reason::MEMBER_JOINING,
            format!(
                "ring v{v}: {} joining, streaming the ranges they will own",
                ids.join(", ")
            ),
        ),
        Change::Joined(ids) => (
            reason::MEMBER_JOINED,
            format!("ring v{v}: {} joined and serve", ids.join(", ")),
        ),
        Change::Leave(ids) => (
            reason::RING_UPDATED,
            format!("ring v{v}: {} leaving", ids.join(", ")),
        ),
        Change::Remove(ids) => (
            reason::MEMBER_REMOVED,
            format!(
                "ring v{v}: {} removed after handing over their data",
                ids.join(", ")
            ),
        ),
    };
    Some(Note {
        about: None,
        reason,
        warning: false,
        message,
    })
}

/// Re-reads every addressable pod's status.
pub async fn refresh(nodes: &dyn NodeAdmin, auth: &NodeAccess, view: &mut View) {
    executor::read_statuses(
        nodes,
        auth,
        &mut view.pods,
        |m| m.address.as_ref(),
        |m| &mut m.node,
    )
    .await;
}
