//! (pure) The rules [`decide`](super::decide) asks in turn once a ring exists, one question each,
//! in the order of the module documentation's table: the first that has something to do (or
//! has to wait) decides.

use rc_api::{Member as RingMember, MemberState, Peer, Ring, StreamState};

use super::{duplicate_address, is_member, Action, Change, Decision, View, Wait, RECHECK};

/// The newest ring and what the nodes report of it, and what to return when no rule applies.
pub(super) struct Rules<'a> {
    view: &'a View,
    ring: &'a Ring,
    pub base: Decision,
}

impl<'a> Rules<'a> {
    pub fn new(view: &'a View, ring: &'a Ring) -> Rules<'a> {
        let base = Decision {
            action: Action::Nothing,
            changing: ring.members.iter().any(|m| m.state != MemberState::Normal)
                || ring.members.len() != view.desired.len()
                || view.desired.iter().any(|d| !is_member(ring, d)),
            ring: Some(ring.clone()),
            wait: None,
            recheck: None,
        };
        Rules { view, ring, base }
    }

    /// A member's pod came back at another address (a new pod IP): tell every node.
    pub fn moved(&self) -> Option<Decision> {
        let moved: Vec<Peer> = self
            .ring
            .members
            .iter()
            .filter_map(|m| {
                let address = self.view.address(&m.id)?;
                (*address != m.address).then(|| Peer {
                    id: m.id.clone(),
                    address: address.clone(),
                })
            })
            .collect();
        if moved.is_empty() {
            return None;
        }
        let members: Vec<RingMember> = self
            .ring
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
        Some(self.push_unless_shared_address(members, Change::Moved(moved)))
    }

    /// Members that missed a version (restarted with an empty disk, or were down): gossip would
    /// reach them too, but pushing is faster, and the rules after this need everyone on this
    /// ring.
    pub fn behind(&self) -> Option<Decision> {
        let behind: Vec<Peer> = self
            .view
            .targets(self.ring)
            .into_iter()
            .filter(|p| {
                self.view.reachable(&p.id)
                    && self
                        .view
                        .status(&p.id)
                        .is_none_or(|l| l.ring_version < self.ring.version)
            })
            .collect();
        (!behind.is_empty()).then(|| Decision {
            action: Action::Push {
                ring: self.ring.clone(),
                targets: behind,
                change: Change::Resend,
            },
            recheck: Some(RECHECK),
            ..self.base.clone()
        })
    }

    /// Joining members that have every range they will own start serving.
    pub fn joined(&self) -> Option<Decision> {
        let joined = self.streamed(MemberState::Joining, StreamState::Joined);
        if joined.is_empty() {
            return None;
        }
        // Serving before every node counts it as a pending owner, or while writes for it wait
        // in hints, would let a read through it miss an acknowledged write.
        if let Some(why) = self.not_all_current() {
            return Some(self.wait(
                format!(
                    "{} streamed its ranges but cannot serve yet: {why}",
                    joined.join(", ")
                ),
                false,
                false,
            ));
        }
        let hinted: Vec<String> = self
            .ring
            .members
            .iter()
            .filter_map(|m| {
                let queued: u64 = joined
                    .iter()
                    .filter_map(|j| self.view.status(&m.id)?.hints_for.get(j))
                    .sum();
                (queued > 0).then(|| format!("{} holds {queued} hints for it", m.id))
            })
            .collect();
        if !hinted.is_empty() {
            return Some(self.wait(
                format!(
                    "{} streamed its ranges but cannot serve yet: {}",
                    joined.join(", "),
                    hinted.join("; ")
                ),
                false,
                false,
            ));
        }
        let members = self.with_state(&joined, MemberState::Normal);
        Some(self.push(members, Change::Joined(joined)))
    }

    /// Leaving members that handed every range over leave the ring.
    pub fn decommissioned(&self) -> Option<Decision> {
        let done = self.streamed(MemberState::Leaving, StreamState::Decommissioned);
        if done.is_empty() {
            return None;
        }
        let members: Vec<RingMember> = self
            .ring
            .members
            .iter()
            .filter(|m| !done.contains(&m.id))
            .cloned()
            .collect();
        let owners = members
            .iter()
            .filter(|m| m.state != MemberState::Joining)
            .count();
        if owners < self.view.replication_factor {
            return Some(self.wait(
                format!(
                    "removing {} would leave {owners} owners for replication factor {}",
                    done.join(", "),
                    self.view.replication_factor
                ),
                true,
                true,
            ));
        }
        Some(self.push(members, Change::Remove(done)))
    }

    /// Leaving members that have not finished: start their hand-over, or wait for it.
    pub fn leaving(&self) -> Option<Decision> {
        let leaving = self.in_state(MemberState::Leaving);
        if leaving.is_empty() {
            return None;
        }
        // Decommission only once every member has the ring that marks them leaving: a node
        // still on the older ring would send new writes to the leaving member alone.
        if let Some(why) = self.not_all_current() {
            return Some(self.wait(
                format!(
                    "{} cannot hand over its data yet: {why}",
                    names(&leaving).join(", ")
                ),
                true,
                true,
            ));
        }
        let start: Vec<Peer> = leaving
            .iter()
            .filter(|m| !matches!(self.stream_of(&m.id), Some(StreamState::Streaming)))
            .filter_map(|m| {
                self.view
                    .targets(self.ring)
                    .into_iter()
                    .find(|p| p.id == m.id)
            })
            .collect();
        if !start.is_empty() {
            return Some(Decision {
                action: Action::Decommission { members: start },
                recheck: Some(RECHECK),
                ..self.base.clone()
            });
        }
        Some(self.wait(
            format!(
                "{} handing data to the next owners",
                names(&leaving).join(", ")
            ),
            false,
            false,
        ))
    }

    /// Joining members still streaming: nothing to do but wait.
    pub fn joining(&self) -> Option<Decision> {
        let joining = self.in_state(MemberState::Joining);
        (!joining.is_empty()).then(|| {
            self.wait(
                format!(
                    "{} streaming the ranges they will own",
                    names(&joining).join(", ")
                ),
                false,
                false,
            )
        })
    }

    /// Scale up: pods of new ordinals join once their node answers.
    pub fn scale_up(&self) -> Option<Decision> {
        let missing: Vec<&String> = self
            .view
            .desired
            .iter()
            .filter(|d| !is_member(self.ring, d))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let ready: Vec<RingMember> = missing
            .iter()
            .filter(|d| self.view.reachable(d))
            .filter_map(|d| {
                self.view.address(d).map(|a| RingMember {
                    id: (*d).clone(),
                    address: a.clone(),
                    state: MemberState::Joining,
                })
            })
            .collect();
        if ready.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return Some(self.wait(
                format!(
                    "waiting for {} to start before joining the ring",
                    list.join(", ")
                ),
                false,
                false,
            ));
        }
        let added = ready.iter().map(|m| m.id.clone()).collect();
        let mut members = self.ring.members.clone();
        members.extend(ready);
        Some(self.push_unless_shared_address(members, Change::Join(added)))
    }

    /// Scale down: the highest ordinals (members the spec no longer asks for) leave.
    pub fn scale_down(&self) -> Option<Decision> {
        let extra: Vec<&RingMember> = self
            .ring
            .members
            .iter()
            .filter(|m| !self.view.desired.contains(&m.id))
            .collect();
        if extra.is_empty() {
            return None;
        }
        let staying = self.ring.members.len() - extra.len();
        if staying < self.view.replication_factor {
            return Some(self.wait(
                format!(
                    "refusing to remove {}: {staying} members cannot hold {} copies of every key (replicationFactor)",
                    names(&extra).join(", "),
                    self.view.replication_factor
                ),
                true,
                true,
            ));
        }
        if let Some(why) = self.not_all_current() {
            return Some(self.wait(
                format!("scale-down of {} waits: {why}", names(&extra).join(", ")),
                true,
                true,
            ));
        }
        let leave = names(&extra);
        let members = self.with_state(&leave, MemberState::Leaving);
        Some(self.push(members, Change::Leave(leave)))
    }

    /// The next ring version with `members`, pushed to every member of it with an address.
    fn push(&self, members: Vec<RingMember>, change: Change) -> Decision {
        let next = Ring {
            version: self.ring.version + 1,
            members,
        };
        Decision {
            action: Action::Push {
                targets: self.view.targets(&next),
                ring: next,
                change,
            },
            recheck: Some(RECHECK),
            ..self.base.clone()
        }
    }

    /// [`Rules::push`], unless two members of the new ring would share an address.
    fn push_unless_shared_address(&self, members: Vec<RingMember>, change: Change) -> Decision {
        match duplicate_address(&members) {
            Some(clash) => self.wait(
                format!("two members would share address {clash}; waiting for the pods' addresses to settle"),
                true,
                false,
            ),
            None => self.push(members, change),
        }
    }

    fn wait(&self, reason: String, warn: bool, scale_down: bool) -> Decision {
        Decision {
            wait: Some(Wait {
                reason,
                warn,
                scale_down,
            }),
            recheck: Some(RECHECK),
            ..self.base.clone()
        }
    }

    /// The ring's members, with those in `ids` put in `state`.
    fn with_state(&self, ids: &[String], state: MemberState) -> Vec<RingMember> {
        self.ring
            .members
            .iter()
            .map(|m| RingMember {
                state: if ids.contains(&m.id) { state } else { m.state },
                ..m.clone()
            })
            .collect()
    }

    fn in_state(&self, state: MemberState) -> Vec<&'a RingMember> {
        self.ring
            .members
            .iter()
            .filter(|m| m.state == state)
            .collect()
    }

    /// Members in `state` whose node reports `stream`.
    fn streamed(&self, state: MemberState, stream: StreamState) -> Vec<String> {
        self.in_state(state)
            .iter()
            .filter(|m| self.stream_of(&m.id) == Some(stream))
            .map(|m| m.id.clone())
            .collect()
    }

    fn stream_of(&self, name: &str) -> Option<StreamState> {
        self.view.status(name).map(|l| l.stream)
    }

    /// Why not every member is known to run the ring (unreachable, or on an older version).
    fn not_all_current(&self) -> Option<String> {
        let ring = self.ring;
        let lagging: Vec<String> = ring
            .members
            .iter()
            .filter_map(|m| match self.view.pod(&m.id).map(|p| &p.node) {
                None => Some(format!("{} has no pod", m.id)),
                Some(Err(e)) => Some(format!("{} does not answer ({e})", m.id)),
                Some(Ok(_)) => self
                    .view
                    .status(&m.id)
                    .is_none_or(|l| l.ring_version < ring.version)
                    .then(|| format!("{} is not on ring v{} yet", m.id, ring.version)),
            })
            .collect();
        (!lagging.is_empty()).then(|| lagging.join("; "))
    }
}

fn names(members: &[&RingMember]) -> Vec<String> {
    members.iter().map(|m| m.id.clone()).collect()
}
