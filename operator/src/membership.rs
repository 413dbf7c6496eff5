//! (pure decision + thin executor) Leaderless membership: the versioned ring the operator
//! installs on the nodes (docs/design.md §6).
//!
//! [`decide`] is pure: from the members the spec asks for, what every pod's node reports in `GET
//! /admin/status` (its ring and streaming state) and the ring recorded in the cluster's status,
//! it returns the one next [`Action`]. The executor ([`execute::drive`]) performs it, re-reads
//! the nodes and asks again until nothing is left to do or a step has to wait, so every step is
//! idempotent and an operator restarted at any point carries on from what the nodes report:
//!
//! ```text
//! no ring anywhere, every wanted pod has an address -> ring v1, all Normal
//! a member's pod has a new address                  -> ring v+1 with it (then /admin/repair)
//! a member reports an older ring (or none)          -> the current ring again, to it
//! a Joining member reports stream=joined, every     -> ring v+1 with it Normal
//!   member is on the ring and holds no hint for it
//! a Leaving member reports stream=decommissioned    -> ring v+1 without it
//! a Leaving member has not started                  -> POST /admin/decommission
//! spec.replicas above the members                   -> ring v+1 with the new pods Joining
//! spec.replicas below the members                   -> ring v+1 with the highest ordinals Leaving
//! ```
//!
//! One change at a time: members are added or removed only while nobody is joining or leaving,
//! so the ring never has to undo a half-finished change. Why no write is lost: a joining member
//! gets writes (nodes send them to current and future owners) before it streams the ranges it
//! will own, and serves only once it has them; a leaving member keeps its ranges until every
//! member has the ring that marks it leaving and it has pushed its keys to the next owners, and
//! is removed from the ring only after that. The StatefulSet keeps a pod for every member still
//! in the ring (`controller::validate`), so a pod is stopped only after it left.

mod bootstrap;
pub mod execute;
mod record;
mod rules;

#[cfg(test)]
mod tests;

use std::time::Duration;

use rc_api::{LeaderlessStatus, Member as RingMember, NodeStatus, Peer, Ring};

use bootstrap::bootstrap;
pub use record::{from_record, newest_ring, reported_ring, to_record};
use rules::Rules;

/// Look again this soon while a change is under way (nodes stream in the background).
pub const RECHECK: Duration = Duration::from_secs(2);

/// One pod of the cluster (any ordinal), as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// Pod name, which is also the node id.
    pub name: String,
    /// Where the operator dials the node and where the other nodes reach it; `None` while the
    /// pod has no address or is being deleted.
    pub address: Option<String>,
    /// The node's admin status, or why it could not be read.
    pub node: Result<NodeStatus, String>,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The members the spec asks for: the pod names of ordinals `0..spec.replicas`, in order.
    pub desired: Vec<String>,
    /// `spec.leaderless.replicationFactor` (N): the ring needs at least N owners.
    pub replication_factor: usize,
    /// The ring the operator recorded in `status.ring` (a floor when no node answers).
    pub recorded: Option<Ring>,
    /// Every pod that exists, by ordinal.
    pub pods: Vec<Pod>,
}

/// What a ring push changes, for Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The first ring of a new cluster.
    Bootstrap,
    /// The current ring again, to members that report an older one.
    Resend,
    /// Members whose pod came back at a new address; each gets `POST /admin/repair` after.
    Moved(Vec<Peer>),
    /// New members enter as `joining`.
    Join(Vec<String>),
    /// Joining members that streamed their ranges become `normal`.
    Joined(Vec<String>),
    /// Members beyond `spec.replicas` become `leaving`.
    Leave(Vec<String>),
    /// Decommissioned members leave the ring.
    Remove(Vec<String>),
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// `PUT /admin/ring` to each target.
    Push {
        ring: Ring,
        targets: Vec<Peer>,
        change: Change,
    },
    /// `POST /admin/decommission` to each leaving member.
    Decommission {
        members: Vec<Peer>,
    },
}

/// Why nothing can be done now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub reason: String,
    /// Worth a Warning Event (false for waits that end by themselves, like streaming).
    pub warn: bool,
    /// A scale-down is refused or held up (Event `ScaleDownBlocked`).
    pub scale_down: bool,
}

/// What [`decide`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The newest ring known (the nodes' or the recorded one); `None` before bootstrap.
    pub ring: Option<Ring>,
    /// Members are joining or leaving, or the ring differs from the spec.
    pub changing: bool,
    pub wait: Option<Wait>,
    /// Look again after this long.
    pub recheck: Option<Duration>,
}

impl View {
    fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    fn address(&self, name: &str) -> Option<&String> {
        self.pod(name)?.address.as_ref()
    }

    fn status(&self, name: &str) -> Option<&LeaderlessStatus> {
        self.pod(name)?.node.as_ref().ok()?.leaderless()
    }

    fn reachable(&self, name: &str) -> bool {
        self.pod(name).is_some_and(|p| p.node.is_ok())
    }

    /// Push targets: the members of `ring` whose pod has an address, at that address.
    fn targets(&self, ring: &Ring) -> Vec<Peer> {
        ring.members
            .iter()
            .filter_map(|m| {
                self.address(&m.id).map(|a| Peer {
                    id: m.id.clone(),
                    address: a.clone(),
                })
            })
            .collect()
    }
}

/// The next step. See the module documentation.
pub fn decide(view: &View) -> Decision {
    let nodes = view.pods.iter().filter_map(|p| p.node.as_ref().ok());
    let Some(ring) = newest_ring(view.recorded.as_ref(), nodes) else {
        return bootstrap(view);
    };
    let rules = Rules::new(view, &ring);
    rules
        .moved()
        .or_else(|| rules.behind())
        .or_else(|| rules.joined())
        .or_else(|| rules.decommissioned())
        .or_else(|| rules.leaving())
        .or_else(|| rules.joining())
        .or_else(|| rules.scale_up())
        .or_else(|| rules.scale_down())
        .unwrap_or(rules.base)
}

fn is_member(ring: &Ring, name: &str) -> bool {
    ring.members.iter().any(|m| m.id == name)
}

fn duplicate_address(members: &[RingMember]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    members
        .iter()
        .find(|m| !seen.insert(m.address.as_str()))
        .map(|m| m.address.clone())
}
