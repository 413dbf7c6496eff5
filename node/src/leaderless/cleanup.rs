//! Cleanup: a member drops keys it no longer owns once their owners hold them. Does I/O.
//!
//! After a ring change the former owners of a range keep their copies. Kept for ever, such a
//! copy could bring back a key deleted (and its tombstone purged) while this member did not own
//! it, the day ownership returns to it. So, once the ring is settled (every member `normal`),
//! each member sends every key it does not own to all of that key's owners, and drops its copy
//! only when every owner has merged it durably and the copy is unchanged since: nothing is lost
//! even if the copy was the newest one. A page per round; an owner down stops that key's drop.

use std::collections::BTreeMap;
use std::sync::Arc;

use rc_api::{Member, MemberState};

use super::node::LeaderlessNode;
use super::ring::Layout;

/// One cleanup pass (a page of keys). Returns how many keys were dropped here.
pub async fn run(node: &Arc<LeaderlessNode>) -> usize {
    let Some(ring) = node.ring() else { return 0 };
    if ring.members.iter().any(|m| m.state != MemberState::Normal) || node.is_restoring() {
        return 0;
    }
    let me = node.cfg.id.clone();
    if !ring.members.iter().any(|m| m.id == me) {
        return 0;
    }
    let not_mine = move |l: &Layout, k: &str| !l.owners(k).iter().any(|m| m.id == me);
    let (items, _) = node.page_where(None, not_mine).await;
    if items.is_empty() {
        return 0;
    }
    // Group by owner set: one exchange per owner per group.
    let mut groups: BTreeMap<Vec<String>, (Vec<Member>, Vec<_>)> = BTreeMap::new();
    {
        let g = node.lock();
        for (key, state) in items {
            let owners: Vec<Member> = g.layout.owners(&key).into_iter().cloned().collect();
            let ids = owners.iter().map(|m| m.id.clone()).collect();
            groups
                .entry(ids)
                .or_insert_with(|| (owners, Vec::new()))
                .1
                .push((key, state));
        }
    }
    let mut dropped = 0;
    for (_, (owners, items)) in groups {
        let mut all = true;
        for m in &owners {
            if !node.is_alive(&m.id) || !node.send_states(m, &items).await {
                all = false;
                break;
            }
        }
        if !all {
            continue;
        }
        let keys: Vec<(String, u64)> = items
            .iter()
            .map(|(k, s)| (k.clone(), s.digest(k)))
            .collect();
        dropped += node.purge_agreed(&keys, true).await.len();
    }
    if dropped > 0 {
        tracing::info!(
            keys = dropped,
            "cleanup: dropped keys this member no longer owns; their owners hold them"
        );
    }
    dropped
}
