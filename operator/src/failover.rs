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
//! The rows of the table above live in `serving.rs` (the leader serves) and `lost.rs` (it does
//! not, or nobody leads); the election rule in `choose.rs`, a switchover on request in
//! `switchover.rs`.
//!
//! Why this is safe (docs/design.md §5): a node adopts an epoch only upwards and binds to at most one
//! leader per epoch, and the candidate has the highest (lastEpoch, lastIndex) of a majority that
//! adopted the new epoch, so it holds every entry committed before. Timing (the leader-loss
//! timeout, the followers' corroboration, the least interval between failovers) only decides
//! *when* to fail over, never whether it is safe.

mod choose;
pub mod execute;
mod lost;
mod serving;
pub mod switchover;
mod voters;

#[cfg(test)]
mod switchover_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod voters_tests;

pub use rc_api::majority;
use std::time::Duration;

use rc_api::{NodeStatus, Peer, Role, SingleLeaderStatus, Voter};

pub use choose::{after_fence, after_fence_preferring};
use lost::{leader_lost, no_leader, serving};
use serving::healthy;
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

impl Member {
    /// The node's single-leader status, or why there is none: it could not be read, or the
    /// node runs in the other mode.
    pub fn status(&self) -> Result<&SingleLeaderStatus, &str> {
        match &self.node {
            Ok(n) => n.single_leader().ok_or("the node runs in leaderless mode"),
            Err(e) => Err(e),
        }
    }
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

/// Why a failover was decided, for its record, Event and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `pod-gone`, `restarted`, `self-fenced`, `unreachable` or `no-leader` (a metrics label).
    pub kind: &'static str,
    /// Who saw what, in words.
    pub evidence: String,
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

/// The next step. See the module documentation.
pub fn decide(view: &View, now_ms: i64) -> Decision {
    let reachable: Vec<(&Member, &SingleLeaderStatus)> = view
        .members
        .iter()
        .filter_map(|m| m.status().ok().map(|n| (m, n)))
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
fn leader_of(epoch: u64, reachable: &[(&Member, &SingleLeaderStatus)]) -> Option<String> {
    let mut leading: Vec<&(&Member, &SingleLeaderStatus)> = reachable
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
