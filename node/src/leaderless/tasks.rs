//! Background work of a leaderless node: failure detection and ring gossip, hinted handoff,
//! anti-entropy, streaming in (joining) and out (decommission). Does I/O.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rc_api::{Member, MemberState, Ring, StreamState};

use super::node::LeaderlessNode;
use super::ring::{hash, Layout};
use super::state::KeyState;

const PROBE_EVERY: Duration = Duration::from_millis(200);
const HINTS_EVERY: Duration = Duration::from_millis(300);
/// Digest buckets per anti-entropy exchange: a two-level Merkle tree (root -> buckets -> keys).
pub const BUCKETS: usize = 256;

pub fn spawn_all(node: &Arc<LeaderlessNode>) {
    tokio::spawn(gossip_loop(node.clone()));
    tokio::spawn(hint_loop(node.clone()));
    tokio::spawn(anti_entropy_loop(node.clone()));
    tokio::spawn(join_watch(node.clone()));
}

/// `/internal/v1/gossip`: the sender's ring; the answer carries the receiver's if newer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Gossip {
    pub from: String,
    pub ring: Option<Ring>,
}

fn others(node: &LeaderlessNode) -> Vec<Member> {
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

/// Heartbeat failure detector: every member is probed every 200 ms; the latest probe decides
/// up or down, so a coordinator routes around a dead owner within a probe interval. The probe
/// also exchanges rings, so a newer ring reaches every node without the operator calling all.
async fn gossip_loop(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        for m in others(&node) {
            let node = node.clone();
            tokio::spawn(async move {
                let body = Gossip {
                    from: node.cfg.id.clone(),
                    ring: node.ring(),
                };
                let r = node
                    .http
                    .post(format!("http://{}/internal/v1/gossip", m.address))
                    .bearer_auth(&node.cfg.token)
                    .timeout(Duration::from_millis(400))
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        node.set_alive(&m.id, true);
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
                    }
                    _ => node.set_alive(&m.id, false),
                }
            });
        }
    }
}

/// Replay hints to members that are up again.
async fn hint_loop(node: Arc<LeaderlessNode>) {
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
            let g = node.lock();
            for h in g.hints.values() {
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
            let items = hints
                .iter()
                .map(|h| (h.key.clone(), h.state.clone()))
                .collect();
            if node.send_states(&member, items).await {
                let ids: Vec<u64> = hints.iter().map(|h| h.id).collect();
                tracing::info!(target = %member.id, hints = ids.len(), "delivered hinted writes");
                node.hint_done(&ids);
            }
        }
    }
}

async fn anti_entropy_loop(node: Arc<LeaderlessNode>) {
    if node.cfg.anti_entropy_every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(node.cfg.anti_entropy_every).await;
        run_anti_entropy(&node).await;
        super::purge::run(&node).await;
    }
}

/// Bucket digests of the keys this node and `peer` both own.
pub fn digests(node: &LeaderlessNode, peer: &str) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    let me = node.cfg.id.clone();
    for (key, state) in node.local_states_where(|l, k| shared(l, k, &me, peer)) {
        buckets[bucket(&key)] = buckets[bucket(&key)].wrapping_add(state.digest(&key));
    }
    buckets
}

pub fn bucket(key: &str) -> usize {
    (hash(key.as_bytes()) % BUCKETS as u64) as usize
}

pub fn shared(layout: &Layout, key: &str, a: &str, b: &str) -> bool {
    let owners = layout.owners(key);
    owners.iter().any(|m| m.id == a) && owners.iter().any(|m| m.id == b)
}

/// `/internal/v1/digest` request and answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestRequest {
    pub from: String,
    pub buckets: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DigestAnswer {
    pub mismatched: Vec<usize>,
    pub states: Vec<(String, KeyState)>,
}

/// One anti-entropy round with every live member: compare bucket digests of the keys both
/// own; for buckets that differ, pull the peer's states and push ours (merges are idempotent).
pub async fn run_anti_entropy(node: &Arc<LeaderlessNode>) -> usize {
    let mut repaired = 0;
    for m in others(node) {
        if !node.is_alive(&m.id) {
            continue;
        }
        let req = DigestRequest {
            from: node.cfg.id.clone(),
            buckets: digests(node, &m.id),
        };
        let r = node
            .http
            .post(format!("http://{}/internal/v1/digest", m.address))
            .bearer_auth(&node.cfg.token)
            .json(&req)
            .send()
            .await;
        let Ok(resp) = r else { continue };
        let Ok(answer) = resp.json::<DigestAnswer>().await else {
            continue;
        };
        if answer.mismatched.is_empty() {
            continue;
        }
        repaired += node.apply_local(answer.states).await;
        let me = node.cfg.id.clone();
        let peer = m.id.clone();
        let mine: Vec<(String, KeyState)> = node
            .local_states_where(|l, k| shared(l, k, &me, &peer))
            .into_iter()
            .filter(|(k, _)| answer.mismatched.contains(&bucket(k)))
            .collect();
        if !mine.is_empty() {
            node.send_states(&m, mine).await;
        }
    }
    let mut g = node.lock();
    g.ae_rounds += 1;
    g.keys_repaired += repaired as u64;
    repaired
}

/// A joining node streams every key it will own from the current members, once per ring.
async fn join_watch(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle = node.lock().stream == StreamState::Idle;
        if idle && node.my_state() == Some(MemberState::Joining) {
            node.set_stream(StreamState::Streaming, 0);
            match stream_in(&node).await {
                Some(n) => {
                    tracing::info!(keys = n, "joined: streamed every range this node will own");
                    node.set_stream(StreamState::Joined, n as u64);
                }
                None => {
                    // Never claim `joined` with a range missing: go back to idle and retry.
                    tracing::warn!("streaming in failed from a live member; retrying");
                    node.set_stream(StreamState::Idle, 0);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Pull every key this node will own from each current member. `None` if a member that the
/// failure detector reports alive could not be streamed from; members reported dead are
/// skipped (their keys have other owners, and anti-entropy covers the rest).
async fn stream_in(node: &Arc<LeaderlessNode>) -> Option<usize> {
    let mut total = 0;
    for m in others(node) {
        if m.state == MemberState::Joining {
            continue;
        }
        let mut done = false;
        for attempt in 0..20u64 {
            if !node.is_alive(&m.id) {
                tracing::warn!(member = %m.id, "skipping a member reported down while streaming in");
                done = true;
                break;
            }
            let r = node
                .http
                .post(format!("http://{}/internal/v1/stream", m.address))
                .bearer_auth(&node.cfg.token)
                .json(&node.cfg.id)
                .send()
                .await;
            if let Ok(resp) = r {
                if let Ok(items) = resp.json::<Vec<(String, KeyState)>>().await {
                    total += items.len();
                    node.apply_local(items).await;
                    done = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
        }
        if !done {
            return None;
        }
    }
    Some(total)
}

/// `POST /admin/decommission` on a leaving node: push every local key to its future owners.
pub async fn decommission(node: Arc<LeaderlessNode>) {
    node.set_stream(StreamState::Streaming, 0);
    let ring = node.ring();
    let members: Vec<Member> = ring.map(|r| r.members).unwrap_or_default();
    let me = node.cfg.id.clone();
    let mut sent = 0u64;
    for m in members
        .iter()
        .filter(|m| m.id != me && m.state != MemberState::Leaving)
    {
        let id = m.id.clone();
        let items = node.local_states_where(|l, k| l.future_owners(k).iter().any(|f| f.id == id));
        let mut ok = items.is_empty();
        for attempt in 0..50u64 {
            if ok {
                break;
            }
            for chunk in items.chunks(1000) {
                ok = node.send_states(m, chunk.to_vec()).await;
                if !ok {
                    break;
                }
            }
            if !ok {
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
            }
        }
        if !ok {
            tracing::error!(member = %m.id, "decommission could not hand data to a next owner; POST /admin/decommission retries");
            node.set_stream(StreamState::Failed, sent);
            return;
        }
        sent += items.len() as u64;
    }
    tracing::info!(
        keys = sent,
        "decommissioned: every range is on its next owners"
    );
    node.set_stream(StreamState::Decommissioned, sent);
}
