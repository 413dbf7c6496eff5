//! What `GET /admin/status` reports of a leaderless node.

use super::*;

impl LeaderlessNode {
    pub fn status(&self) -> NodeStatus {
        let g = self.lock();
        let members = g
            .ring
            .iter()
            .flat_map(|r| r.members.iter())
            .map(|m| MemberView::of(m, self.is_alive(&m.id)))
            .collect();
        let mut status = NodeStatus {
            node_id: self.cfg.id.clone(),
            stats: self.stats.snapshot(),
            credentials: self.cfg.security.credentials(),
            detail: ModeStatus::Leaderless(LeaderlessStatus {
                ring_version: g.ring.as_ref().map(|r| r.version).unwrap_or(0),
                members,
                replication_factor: self.cfg.n,
                write_quorum: self.cfg.w,
                read_quorum: self.cfg.r,
                keys: g.store.len() as u64,
                hints_queued: g.hints.len() as u64,
                stream: g.stream,
                keys_streamed: g.keys_streamed,
                anti_entropy_rounds: g.ae_rounds,
                keys_repaired: g.keys_repaired,
                restoring: g.restoring,
                hints_for: BTreeMap::new(),
            }),
        };
        // Counted off the lock: up to the hint limit (100,000) while a member is down, and
        // status is polled by the operator and scraped for metrics.
        let hints = g.hints.clone();
        drop(g);
        if let ModeStatus::Leaderless(l) = &mut status.detail {
            for h in hints.values() {
                *l.hints_for.entry(h.target.clone()).or_insert(0) += 1;
            }
        }
        status
    }
}
