//! Tombstone purging, agreed among a key's owners instead of on each node's timer (Cassandra
//! purges only repaired tombstones). Does I/O.
//!
//! A purged tombstone must not come back, and a deleted value must not either: if one owner
//! still held the value (it was away when the delete happened) while the others dropped the
//! tombstone, anti-entropy would copy the value back. So, for a key whose every sibling is a
//! tombstone older than the grace period, the key's first owner (one node per key does the
//! work) runs two rounds with every other member of the ring:
//!
//! 1. *check*: each member answers whether its state equals the coordinator's (same digest),
//!    or it has none, and it holds no hint for the key (hints live on any coordinator, owner
//!    or not, and a former owner may still hold a copy);
//! 2. *purge*: only if every member agreed, each drops the key if its state is still that one.
//!
//! A member that is down, disagrees, or holds a hint stops the purge; it is retried on the next
//! anti-entropy round. States only grow by merging, so an owner whose state changed between the
//! rounds keeps a state that includes the tombstone. Nothing is purged while the ring changes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use rc_api::{Member, MemberState};

use super::node::{hinted_keys, now_ms, LeaderlessNode, ReadView};

/// Body of `/internal/v1/purge`: keys with the digest of the state to purge.
#[derive(Debug, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// false: only check; true: purge.
    pub commit: bool,
    pub keys: Vec<(String, u64)>,
}

/// Most keys per exchange.
const BATCH: usize = 1000;

/// One purge pass over this node's expired tombstones. Returns how many keys were purged here.
pub async fn run(node: &Arc<LeaderlessNode>) -> usize {
    let Some(ring) = node.ring() else { return 0 };
    if ring.members.iter().any(|m| m.state != MemberState::Normal) {
        return 0;
    }
    let grace_ts = now_ms().saturating_sub(node.cfg.tombstone_grace.as_millis() as u64) << 16;
    let me = node.cfg.id.clone();
    // Every other member is asked, not only the owners: a hint for the key can sit on any
    // coordinator, and a former owner can still hold a copy; either would bring the value back.
    let others: Vec<Member> = ring
        .members
        .iter()
        .filter(|m| m.id != me)
        .cloned()
        .collect();
    // Expired tombstones this node leads (it is the key's first owner).
    let mut agreed = node
        .walk(move |v| expired_tombstones(v, &me, grace_ts))
        .await;
    for m in &others {
        if agreed.is_empty() {
            return 0;
        }
        let Some(yes) = ask(node, m, false, &agreed).await else {
            return 0;
        };
        agreed.retain(|(k, _)| yes.contains(k));
    }
    if agreed.is_empty() {
        return 0;
    }
    for m in &others {
        // A failure here leaves that member with the tombstone: harmless, the purge is
        // retried and absent counts as agreeing.
        let _ = ask(node, m, true, &agreed).await;
    }
    let purged = node.purge_agreed(&agreed, true).await.len();
    if purged > 0 {
        tracing::info!(keys = purged, "purged tombstones every owner held");
    }
    purged
}

/// Up to a batch of keys whose every sibling is a tombstone older than `grace_ts`, that
/// member `me` leads (it is their first owner) and holds no hint for, with their digests.
fn expired_tombstones(view: &ReadView, me: &str, grace_ts: u64) -> Vec<(String, u64)> {
    let hinted = hinted_keys(&view.hints);
    view.store
        .iter()
        .filter(|(key, state)| state.is_dead_before(grace_ts) && !hinted.contains(key.as_str()))
        .filter(|(key, _)| view.layout.owners(key).first().is_some_and(|m| m.id == me))
        .take(BATCH)
        .map(|(key, state)| (key.clone(), state.digest(key)))
        .collect()
}

async fn ask(
    node: &LeaderlessNode,
    member: &Member,
    commit: bool,
    keys: &[(String, u64)],
) -> Option<Vec<String>> {
    if !node.is_alive(&member.id) {
        return None;
    }
    let request = PurgeRequest {
        commit,
        keys: keys.to_vec(),
    };
    node.internal_call(&member.address, "/internal/v1/purge", &request)
        .await
}
