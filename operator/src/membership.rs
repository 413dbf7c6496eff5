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

#[cfg(test)]
mod tests;

use std::time::Duration;

use rc_api::{
    LeaderlessStatus, Member as RingMember, MemberState, NodeStatus, Peer, Ring, StreamState,
};

use bootstrap::bootstrap;
pub use record::{from_record, newest_ring, reported_ring, to_record};

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
        self.pod(name)?.node.as_ref().ok()?.leaderless.as_ref()
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
    let base = Decision {
        action: Action::Nothing,
        changing: ring.members.iter().any(|m| m.state != MemberState::Normal)
            || ring.members.len() != view.desired.len()
            || view.desired.iter().any(|d| !is_member(&ring, d)),
        ring: Some(ring.clone()),
        wait: None,
        recheck: None,
    };
    let push = |members: Vec<RingMember>, change: Change| {
        let next = Ring {
            version: ring.version + 1,
            members,
        };
        Decision {
            action: Action::Push {
                targets: view.targets(&next),
                ring: next,
                change,
            },
            recheck: Some(RECHECK),
            ..base.clone()
        }
    };
    let wait = |reason: String, warn: bool, scale_down: bool| Decision {
        wait: Some(Wait {
            reason,
            warn,
            scale_down,
        }),
        recheck: Some(RECHECK),
        ..base.clone()
    };

    // A member's pod came back at another address (a new pod IP): tell every node.
    let moved: Vec<Peer> = ring
        .members
        .iter()
        .filter_map(|m| {
            let address = view.address(&m.id)?;
            (*address != m.address).then(|| Peer {
                id: m.id.clone(),
                address: address.clone(),
            })
        })
        .collect();
    if !moved.is_empty() {
        let members: Vec<RingMember> = ring
            .members
            .iter()
            .map(|m| match moved.iter().find(|p| p.id == m.id) {
                Some(p) => RingMember {
                    address: p.address.clone(),
                    ..m.clone()
                },
                None => m.clone(),
            })
            .collect();
        if let Some(clash) = duplicate_address(&members) {
            return wait(
                format!("two members would share address {clash}; waiting for the pods' addresses to settle"),
                true,
                false,
            );
        }
        return push(members, Change::Moved(moved));
    }

    // Members that missed a version (restarted with an empty disk, or were down): gossip would
    // reach them too, but pushing is faster, and decisions below need everyone on this ring.
    let behind: Vec<Peer> = view
        .targets(&ring)
        .into_iter()
        .filter(|p| {
            view.reachable(&p.id)
                && view
                    .status(&p.id)
                    .is_none_or(|l| l.ring_version < ring.version)
        })
        .collect();
    if !behind.is_empty() {
        return Decision {
            action: Action::Push {
                ring: ring.clone(),
                targets: behind,
                change: Change::Resend,
            },
            recheck: Some(RECHECK),
            ..base
        };
    }

    let in_state = |state: MemberState| -> Vec<&RingMember> {
        ring.members.iter().filter(|m| m.state == state).collect()
    };
    let stream_of = |name: &str| view.status(name).map(|l| l.stream);
    let joining = in_state(MemberState::Joining);
    let leaving = in_state(MemberState::Leaving);

    // Joining members that have every range they will own start serving.
    let joined: Vec<String> = joining
        .iter()
        .filter(|m| stream_of(&m.id) == Some(StreamState::Joined))
        .map(|m| m.id.clone())
        .collect();
    if !joined.is_empty() {
        // Serving before every node counts it as a pending owner, or while writes for it wait
        // in hints, would let a read through it miss an acknowledged write.
        if let Some(why) = not_all_current(view, &ring) {
            return wait(
                format!(
                    "{} streamed its ranges but cannot serve yet: {why}",
                    joined.join(", ")
                ),
                false,
                false,
            );
        }
        let hinted: Vec<String> = ring
            .members
            .iter()
            .filter_map(|m| {
                let queued: u64 = joined
                    .iter()
                    .filter_map(|j| view.status(&m.id)?.hints_for.get(j))
                    .sum();
                (queued > 0).then(|| format!("{} holds {queued} hints for it", m.id))
            })
            .collect();
        if !hinted.is_empty() {
            return wait(
                format!(
                    "{} streamed its ranges but cannot serve yet: {}",
                    joined.join(", "),
                    hinted.join("; ")
                ),
                false,
                false,
            );
        }
        let members = ring
            .members
            .iter()
            .map(|m| RingMember {
                state: if joined.contains(&m.id) {
                    MemberState::Normal
                } else {
                    m.state
                },
                ..m.clone()
            })
            .collect();
        return push(members, Change::Joined(joined));
    }

    // Leaving members that handed every range over leave the ring.
    let done: Vec<String> = leaving
        .iter()
        .filter(|m| stream_of(&m.id) == Some(StreamState::Decommissioned))
        .map(|m| m.id.clone())
        .collect();
    if !done.is_empty() {
        let members: Vec<RingMember> = ring
            .members
            .iter()
            .filter(|m| !done.contains(&m.id))
            .cloned()
            .collect();
        let owners = members
            .iter()
            .filter(|m| m.state != MemberState::Joining)
            .count();
        if owners < view.replication_factor {
            return wait(
                format!(
                    "removing {} would leave {owners} owners for replication factor {}",
                    done.join(", "),
                    view.replication_factor
                ),
                true,
                true,
            );
        }
        return push(members, Change::Remove(done));
    }

    if !leaving.is_empty() {
        // Decommission only once every member has the ring that marks them leaving: a node
        // still on the older ring would send new writes to the leaving member alone.
        if let Some(why) = not_all_current(view, &ring) {
            return wait(
                format!(
                    "{} cannot hand over its data yet: {why}",
                    names(&leaving).join(", ")
                ),
                true,
                true,
            );
        }
        let start: Vec<Peer> = leaving
            .iter()
            .filter(|m| !matches!(stream_of(&m.id), Some(StreamState::Streaming)))
            .filter_map(|m| view.targets(&ring).into_iter().find(|p| p.id == m.id))
            .collect();
        if !start.is_empty() {
            return Decision {
                action: Action::Decommission { members: start },
                recheck: Some(RECHECK),
                ..base
            };
        }
        return wait(
            format!(
                "{} handing data to the next owners",
                names(&leaving).join(", ")
            ),
            false,
            false,
        );
    }
    if !joining.is_empty() {
        return wait(
            format!(
                "{} streaming the ranges they will own",
                names(&joining).join(", ")
            ),
            false,
            false,
        );
    }

    // Scale up: pods of new ordinals join once their node answers.
    let missing: Vec<&String> = view
        .desired
        .iter()
        .filter(|d| !is_member(&ring, d))
        .collect();
    if !missing.is_empty() {
        let ready: Vec<RingMember> = missing
            .iter()
            .filter(|d| view.reachable(d))
            .filter_map(|d| {
                view.address(d).map(|a| RingMember {
                    id: (*d).clone(),
                    address: a.clone(),
                    state: MemberState::Joining,
                })
            })
            .collect();
        if ready.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return wait(
                format!(
                    "waiting for {} to start before joining the ring",
                    list.join(", ")
                ),
                false,
                false,
            );
        }
        let added = ready.iter().map(|m| m.id.clone()).collect();
        let mut members = ring.members.clone();
        members.extend(ready);
        if let Some(clash) = duplicate_address(&members) {
            return wait(
                format!("two members would share address {clash}; waiting for the pods' addresses to settle"),
                true,
                false,
            );
        }
        return push(members, Change::Join(added));
    }

    // Scale down: the highest ordinals (members the spec no longer asks for) leave.
    let extra: Vec<&RingMember> = ring
        .members
        .iter()
        .filter(|m| !view.desired.contains(&m.id))
        .collect();
    if !extra.is_empty() {
        let staying = ring.members.len() - extra.len();
        if staying < view.replication_factor {
            return wait(
                format!(
                    "refusing to remove {}: {staying} members cannot hold {} copies of every key (replicationFactor)",
                    names(&extra).join(", "),
                    view.replication_factor
                ),
                true,
                true,
            );
        }
        if let Some(why) = not_all_current(view, &ring) {
            return wait(
                format!("scale-down of {} waits: {why}", names(&extra).join(", ")),
                true,
                true,
            );
        }
        let leave: Vec<String> = extra.iter().map(|m| m.id.clone()).collect();
        let members = ring
            .members
            .iter()
            .map(|m| RingMember {
                state: if leave.contains(&m.id) {
                    MemberState::Leaving
                } else {
                    m.state
                },
                ..m.clone()
            })
            .collect();
        return push(members, Change::Leave(leave));
    }
    base
}

/// Why not every member is known to run `ring` (unreachable, or on an older version).
fn not_all_current(view: &View, ring: &Ring) -> Option<String> {
    let lagging: Vec<String> = ring
        .members
        .iter()
        .filter_map(|m| match view.pod(&m.id).map(|p| &p.node) {
            None => Some(format!("{} has no pod", m.id)),
            Some(Err(e)) => Some(format!("{} does not answer ({e})", m.id)),
            Some(Ok(_)) => view
                .status(&m.id)
                .is_none_or(|l| l.ring_version < ring.version)
                .then(|| format!("{} is not on ring v{} yet", m.id, ring.version)),
        })
        .collect();
    (!lagging.is_empty()).then(|| lagging.join("; "))
}

fn is_member(ring: &Ring, name: &str) -> bool {
    ring.members.iter().any(|m| m.id == name)
}

fn names(members: &[&RingMember]) -> Vec<String> {
    members.iter().map(|m| m.id.clone()).collect()
}

fn duplicate_address(members: &[RingMember]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    members
        .iter()
        .find(|m| !seen.insert(m.address.as_str()))
        .map(|m| m.address.clone())
}
