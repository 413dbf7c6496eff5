//! (pure) Rings as the nodes report them and as `status.ring` records them.

use rc_api::{Member as RingMember, NodeStatus, Ring};

use crate::crd::{RingMemberRecord, RingRecord};

/// The ring a node reports, rebuilt exactly (same order), when it has one.
pub fn reported_ring(node: &NodeStatus) -> Option<Ring> {
    let l = node.leaderless().filter(|l| l.ring_version > 0)?;
    Some(Ring {
        version: l.ring_version,
        members: l
            .members
            .iter()
            .map(|m| RingMember {
                id: m.id.clone(),
                address: m.address.clone(),
                state: m.state,
            })
            .collect(),
    })
}

/// The newest ring among what the nodes report and the recorded one; on a tie, the first
/// node's (it is what the nodes have).
pub fn newest_ring<'a>(
    recorded: Option<&Ring>,
    nodes: impl IntoIterator<Item = &'a NodeStatus>,
) -> Option<Ring> {
    let mut newest: Option<Ring> = None;
    for ring in nodes
        .into_iter()
        .filter_map(reported_ring)
        .chain(recorded.cloned())
    {
        if newest.as_ref().is_none_or(|n| ring.version > n.version) {
            newest = Some(ring);
        }
    }
    newest
}

/// `status.ring` from a ring.
pub fn to_record(ring: &Ring) -> RingRecord {
    RingRecord {
        version: i64::try_from(ring.version).unwrap_or(i64::MAX),
        members: ring
            .members
            .iter()
            .map(|m| RingMemberRecord {
                name: m.id.clone(),
                address: m.address.clone(),
                state: m.state,
            })
            .collect(),
    }
}

/// A ring from `status.ring`; `None` for a record no node could have installed (version 0).
pub fn from_record(record: &RingRecord) -> Option<Ring> {
    let version = u64::try_from(record.version).ok().filter(|v| *v > 0)?;
    Some(Ring {
        version,
        members: record
            .members
            .iter()
            .map(|m| RingMember {
                id: m.name.clone(),
                address: m.address.clone(),
                state: m.state,
            })
            .collect(),
    })
}
