//! (no I/O of its own) What the two executors share, single-leader failover
//! ([`crate::failover::execute`]) and leaderless membership ([`crate::membership::execute`]):
//! the bounded decide -> act -> re-read loop, and the [`Note`]s they hand back for Events.
//! The node calls are in each executor's [`Steps::act`] and [`Steps::refresh`].

use std::fmt::Debug;
use std::ops::ControlFlow;

use tracing::warn;

use crate::node_client::NodeAccess;

/// Something worth an Event on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The pod it concerns most (the Event's related object), if one.
    pub about: Option<String>,
    pub reason: &'static str,
    pub warning: bool,
    pub message: String,
}

/// One executor pass over a state machine whose decisions are pure.
pub(crate) trait Steps {
    type Action: Clone + PartialEq + Debug;
    type Decision;
    /// Names the machine in the log.
    const NAME: &'static str;
    /// The next decision, from the nodes as last read.
    fn decide(&mut self) -> Self::Decision;
    /// The action the executor performs for `decision`; `None` when nothing is left for it to
    /// do (what remains, if anything, is the caller's).
    fn action(decision: &Self::Decision) -> Option<&Self::Action>;
    /// Performs one action against the nodes; `Break` ends the pass with that decision.
    async fn act(&mut self, action: &Self::Action) -> ControlFlow<Self::Decision>;
    /// Re-reads the nodes after a step.
    async fn refresh(&mut self);
}

/// Runs decide -> act -> re-read, at most `max_steps` times, and returns the decision it
/// stopped on: one that leaves nothing for the executor, one whose action repeats the previous
/// step (the nodes refused or did not change: a later pass retries), or the one `act` ended
/// with. `None` when the steps ran out, after a re-read.
pub(crate) async fn run<S: Steps>(steps: &mut S, max_steps: usize) -> Option<S::Decision> {
    let mut last: Option<S::Action> = None;
    for _ in 0..max_steps {
        let decision = steps.decide();
        let Some(action) = S::action(&decision) else {
            return Some(decision);
        };
        if last.as_ref() == Some(action) {
            warn!(?action, "{} step made no progress", S::NAME);
            return Some(decision);
        }
        let action = action.clone();
        if let ControlFlow::Break(decision) = steps.act(&action).await {
            return Some(decision);
        }
        last = Some(action);
        steps.refresh().await;
    }
    None
}

/// Reads `/admin/status` of every member that has an address, concurrently, and stores each
/// answer (or the error as text) through `slot`; members without an address keep what they had.
pub(crate) async fn read_statuses<M>(
    nodes: &dyn crate::node_client::NodeAdmin,
    auth: &NodeAccess,
    members: &mut [M],
    address: impl Fn(&M) -> Option<&String>,
    slot: impl Fn(&mut M) -> &mut Result<rc_api::NodeStatus, String>,
) {
    let calls = members.iter().map(|m| {
        let address = address(m).cloned();
        async move {
            match address {
                Some(a) => Some(nodes.status(&a, auth).await.map_err(|e| e.to_string())),
                None => None,
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    for (member, result) in members.iter_mut().zip(results) {
        if let Some(result) = result {
            *slot(member) = result;
        }
    }
}
