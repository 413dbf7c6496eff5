//! Background work of a leaderless node: failure detection and ring gossip, hinted handoff,
//! anti-entropy, streaming in (joining) and out (decommission). Does I/O.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rc_api::{Member, MemberState, Ring, StreamState};

use super::fd::Next;
use super::node::LeaderlessNode;
use super::ring::{hash, Layout};
use super::state::KeyState;

const PROBE_EVERY: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
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

/// Failure detection: every member is probed every 200 ms; `fd::Detector` turns the results
/// into verdicts (three misses in a row, then an indirect probe through up to two other
/// members). The probe also exchanges rings, so a newer ring reaches every node without the
/// operator calling all.
async fn gossip_loop(node: Arc<LeaderlessNode>) {
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
        .http
        .post(format!("http://{}/internal/v1/gossip", m.address))
        .bearer_auth(&node.cfg.token)
        .timeout(PROBE_TIMEOUT)
        .json(&body)
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
        let r = node
            .http
            .post(format!("http://{}/internal/v1/probe", h.address))
            .bearer_auth(&node.cfg.token)
            .timeout(PROBE_TIMEOUT * 2)
            .json(&ProbeRequest {
                address: m.address.clone(),
            })
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
            .get(format!("http://{address}/healthz"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
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
        super::cleanup::run(&node).await;
    }
}

/// Bucket digests of the keys this node and `peer` both own.
pub fn digests(node: &LeaderlessNode, peer: &str) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    let me = node.cfg.id.clone();
    let g = node.lock();
    for (key, state) in g
        .store
        .iter()
        .filter(|(k, _)| shared(&g.layout, k, &me, peer))
    {
        buckets[bucket(key)] = buckets[bucket(key)].wrapping_add(state.digest(key));
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
/// own; for buckets that differ, pull a page of the peer's states and push a page of ours
/// (merges are idempotent). Returns the keys changed here and whether any bucket differed.
pub async fn run_anti_entropy(node: &Arc<LeaderlessNode>) -> (usize, bool) {
    let (mut repaired, mut differed) = (0, false);
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
        differed = true;
        repaired += node.apply_local(answer.states).await;
        let me = node.cfg.id.clone();
        let peer = m.id.clone();
        // A page per round each way: what is left differs again next round.
        let mismatched = &answer.mismatched;
        let (mine, _) = node.page_where(None, |l, k| {
            shared(l, k, &me, &peer) && mismatched.contains(&bucket(k))
        });
        if !mine.is_empty() {
            node.send_states(&m, mine).await;
        }
    }
    let mut g = node.lock();
    g.ae_rounds += 1;
    g.keys_repaired += repaired as u64;
    (repaired, differed)
}

/// A joining node streams every key it will own from the current members, once per ring; a
/// member that lost its data (restoring) streams its ranges back before answering reads.
async fn join_watch(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle = node.lock().stream == StreamState::Idle;
        let state = node.my_state();
        let joining = idle && state == Some(MemberState::Joining);
        let restoring = node.is_restoring()
            && matches!(state, Some(MemberState::Normal | MemberState::Leaving));
        if !joining && !restoring {
            continue;
        }
        if joining {
            node.set_stream(StreamState::Streaming, 0);
        }
        // A joiner may skip a member that is down: every write it will own has another copy
        // on a live member (W >= 2). A restoring member lost its copy, so a range whose only
        // other intact copy is on the member that is down must wait for it.
        match stream_in(&node, !restoring).await {
            Some(n) => {
                if joining {
                    tracing::info!(keys = n, "joined: streamed every range this node will own");
                    node.set_stream(StreamState::Joined, n as u64);
                }
                node.finish_restore();
            }
            None => {
                // Never claim `joined` (or restored) with a range missing: retry.
                tracing::warn!("streaming in failed from a live member; retrying");
                if joining {
                    node.set_stream(StreamState::Idle, 0);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `/internal/v1/stream`: a page of the keys `for_node` will own, after `after`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamRequest {
    pub for_node: String,
    pub after: Option<String>,
    /// The requester's ring: a member on an older one has not counted it in writes yet.
    #[serde(default)]
    pub ring_version: u64,
}

/// One page of a stream; `next` is the cursor of the following page, if any.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamPage {
    pub items: Vec<(String, KeyState)>,
    pub next: Option<String>,
}

/// Pull every key this node will own from each current member, page by page. `None` if a
/// member could not be streamed from; with `skip_dead`, members reported dead are skipped.
async fn stream_in(node: &Arc<LeaderlessNode>, skip_dead: bool) -> Option<usize> {
    let mut total = 0;
    for m in others(node) {
        if m.state == MemberState::Joining {
            continue;
        }
        let mut after: Option<String> = None;
        let mut failures = 0u64;
        loop {
            if !node.is_alive(&m.id) {
                if !skip_dead {
                    tracing::warn!(member = %m.id, "restoring waits for a member that is down: it may hold the only other copy of a range");
                    return None;
                }
                tracing::warn!(member = %m.id, "skipping a member reported down while streaming in");
                break;
            }
            let req = StreamRequest {
                for_node: node.cfg.id.clone(),
                after: after.clone(),
                ring_version: node.ring().map_or(0, |r| r.version),
            };
            let page = match node
                .http
                .post(format!("http://{}/internal/v1/stream", m.address))
                .bearer_auth(&node.cfg.token)
                .json(&req)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => resp.json::<StreamPage>().await.ok(),
                _ => None,
            };
            let Some(page) = page else {
                // Also while the member is not on our ring yet or its older-ring writes drain.
                failures += 1;
                if failures >= 30 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100 * failures.min(5))).await;
                continue;
            };
            failures = 0;
            total += page.items.len();
            node.apply_local(page.items).await;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Some(total)
}

/// `POST /admin/decommission` on a leaving node: push every local key to its future owners,
/// page by page, then drop the local data (it lives on the next owners now).
pub async fn decommission(node: Arc<LeaderlessNode>) {
    node.set_stream(StreamState::Streaming, 0);
    // Writes this node coordinated under the ring before `leaving` did not go to the next
    // owners: let them finish first, so the hand-over below carries them.
    if let Some(wait) = node.ring_settles_in() {
        tokio::time::sleep(wait).await;
    }
    let ring = node.ring();
    let members: Vec<Member> = ring.map(|r| r.members).unwrap_or_default();
    let me = node.cfg.id.clone();
    let mut sent = 0u64;
    for m in members
        .iter()
        .filter(|m| m.id != me && m.state != MemberState::Leaving)
    {
        let id = m.id.clone();
        let mut after: Option<String> = None;
        loop {
            let (items, next) = node.page_where(after.as_deref(), |l, k| {
                l.future_owners(k).iter().any(|f| f.id == id)
            });
            let mut ok = items.is_empty();
            for attempt in 0..50u64 {
                if ok {
                    break;
                }
                ok = node.send_states(m, items.clone()).await;
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
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    tracing::info!(
        keys = sent,
        "decommissioned: every range is on its next owners"
    );
    node.drop_all_data().await;
    node.set_stream(StreamState::Decommissioned, sent);
}
