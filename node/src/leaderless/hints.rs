//! Hinted handoff: replay the writes kept for members that were down, once they are up again.
//! Does I/O.

use std::sync::Arc;
use std::time::Duration;

use super::node::LeaderlessNode;

const HINTS_EVERY: Duration = Duration::from_millis(300);

/// Replay hints to members that are up again.
pub(super) async fn hint_loop(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(HINTS_EVERY).await;
        // Up to 512 hints per target that is up: a target that stays down must not hold back
        // the hints of the others.
        let ring = node.ring();
        let in_ring = |id: &str| {
            ring.as_ref()
                .is_some_and(|r| r.members.iter().any(|m| m.id == id))
        };
        let mut by_target: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        {
            // A shared copy, walked off the node lock: the hints run to the hint limit
            // (100,000) while a member is down, and this runs every 300 ms.
            let hints = node.lock().hints.clone();
            for h in hints.values() {
                if in_ring(&h.target) && !node.is_alive(&h.target) {
                    continue;
                }
                let queue = by_target.entry(h.target.clone()).or_default();
                if queue.len() < 512 {
                    queue.push(h.clone());
                }
            }
        }
        for (target, hints) in by_target {
            let Some(member) = ring
                .as_ref()
                .and_then(|r| r.members.iter().find(|m| m.id == target))
                .cloned()
            else {
                // The target left the ring: its data reached the other owners by decommission.
                let ids: Vec<u64> = hints.iter().map(|h| h.id).collect();
                node.hint_done(&ids);
                continue;
            };
            if !node.is_alive(&member.id) {
                continue;
            }
            let items: Vec<_> = hints
                .iter()
                .map(|h| (h.key.clone(), h.state.clone()))
                .collect();
            if node.send_states(&member, &items).await {
                let ids: Vec<u64> = hints.iter().map(|h| h.id).collect();
                tracing::info!(target = %member.id, hints = ids.len(), "delivered hinted writes");
                node.hint_done(&ids);
            }
        }
    }
}
