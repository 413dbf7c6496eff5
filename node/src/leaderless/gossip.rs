//! Failure detection and ring gossip: every member is probed (a gossip exchange that also
//! carries rings), and `failure_detector::Detector` turns the answers into up/down verdicts.
//! Does I/O.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rc_api::{Member, MemberState, Ring};

use super::failure_detector::Next;
use super::node::LeaderlessNode;

const PROBE_EVERY: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// `/internal/v1/gossip`: the sender's ring; the answer carries the receiver's if newer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Gossip {
    pub from: String,
    pub ring: Option<Ring>,
}

/// The other members (the seeds while this node has no ring).
pub(super) fn others(node: &LeaderlessNode) -> Vec<Member> {
    match node.ring() {
        Some(r) => r
            .members
            .into_iter()
            .filter(|m| m.id != node.cfg.id)
            .collect(),
        None => node
            .cfg
            .seeds
            .iter()
            .filter(|p| p.id != node.cfg.id)
            .map(|p| Member {
                id: p.id.clone(),
                address: p.address.clone(),
                state: MemberState::Normal,
            })
            .collect(),
    }
}

/// Failure detection: every member is probed every 200 ms; `failure_detector::Detector` turns the results
/// into verdicts (three misses in a row, then an indirect probe through up to two other
/// members). The probe also exchanges rings, so a newer ring reaches every node without the
/// operator calling all.
pub(super) async fn gossip_loop(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        for m in others(&node) {
            let node = node.clone();
            tokio::spawn(async move {
                let ok = probe(&node, &m).await;
                let next = node
                    .detector
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .on_probe(&m.id, ok);
                match next {
                    Next::Up => node.set_alive(&m.id, true),
                    Next::Wait => {}
                    Next::ProbeIndirectly => {
                        let reached = probe_indirectly(&node, &m).await;
                        let up = node
                            .detector
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .on_indirect(&m.id, &reached);
                        if !up {
                            node.set_alive(&m.id, false);
                        } else {
                            tracing::debug!(member = %m.id, "direct probes fail but another member reaches it");
                        }
                    }
                }
            });
        }
    }
}

/// One direct probe (a gossip exchange). `true` if the member answered.
async fn probe(node: &Arc<LeaderlessNode>, m: &Member) -> bool {
    let body = Gossip {
        from: node.cfg.id.clone(),
        ring: node.ring(),
    };
    let r = node
        .internal_post(&m.address, "/internal/v1/gossip", &body)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    let Ok(resp) = r else { return false };
    if !resp.status().is_success() {
        return false;
    }
    if let Ok(Gossip {
        ring: Some(ring), ..
    }) = resp.json::<Gossip>().await
    {
        let newer = node.ring().is_none_or(|r| ring.version > r.version);
        if newer {
            if let Err(e) = node.install_ring(ring).await {
                tracing::warn!(error = %e, from = %m.id, "refused a ring offered by a peer");
            }
        }
    }
    true
}

/// `/internal/v1/probe`: ask this node whether it reaches `address`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub address: String,
}

/// Ask up to two other members (that this node believes up) to probe `m`.
async fn probe_indirectly(node: &Arc<LeaderlessNode>, m: &Member) -> Vec<bool> {
    let helpers: Vec<Member> = others(node)
        .into_iter()
        .filter(|h| h.id != m.id && node.is_alive(&h.id))
        .take(2)
        .collect();
    let asks = helpers.iter().map(|h| async move {
        let probe = ProbeRequest {
            address: m.address.clone(),
        };
        let r = node
            .internal_post(&h.address, "/internal/v1/probe", &probe)
            .timeout(PROBE_TIMEOUT * 2)
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => resp.json::<bool>().await.unwrap_or(false),
            _ => false,
        }
    });
    futures::future::join_all(asks).await
}

/// Serve an indirect probe: can this node reach `address`?
pub async fn reaches(node: &LeaderlessNode, address: &str) -> bool {
    // Only ring members: the endpoint must not make this node call arbitrary addresses.
    let member = node
        .ring()
        .is_some_and(|r| r.members.iter().any(|m| m.address == address));
    member
        && node
            .http
            .get(node.cfg.security.url(address, "/healthz"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
}
