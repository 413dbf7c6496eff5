//! Anti-entropy: bucket digests of the keys two members both own (a two-level Merkle tree:
//! root -> buckets -> keys), compared; buckets that differ exchange a page of states each way.
//! Does I/O.

use std::sync::Arc;

use futures::TryFutureExt;
use serde::{Deserialize, Serialize};

use super::dvv::KeyState;
use super::gossip::others;
use super::node::{LeaderlessNode, ReadView};
use super::ring::{hash, Layout};

/// Digest buckets per anti-entropy exchange: a two-level Merkle tree (root -> buckets -> keys).
pub const BUCKETS: usize = 256;

/// How long a peer may take to digest its store and answer: a walk over every key, at idle
/// priority, so seconds on a large store of a busy machine (a request's timeout would fail
/// every round there).
const EXCHANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn anti_entropy_loop(node: Arc<LeaderlessNode>) {
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

/// Bucket digests of the keys members `me` and `peer` both own, in `view`.
pub(crate) fn digests(view: &ReadView, me: &str, peer: &str) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    for (key, state) in view
        .store
        .iter()
        .filter(|(k, _)| shared(&view.layout, k, me, peer))
    {
        buckets[bucket(key)] = buckets[bucket(key)].wrapping_add(state.digest(key));
    }
    buckets
}

/// The buckets whose digests differ, and a page of the states in them that members `me` and
/// `peer` both own; `theirs` are the peer's bucket digests. Walks the whole store.
pub(crate) fn compare(view: &ReadView, me: &str, peer: &str, theirs: &[u64]) -> DigestAnswer {
    let mine = digests(view, me, peer);
    let mismatched: Vec<usize> = (0..BUCKETS)
        .filter(|i| theirs.get(*i) != mine.get(*i))
        .collect();
    let states = match mismatched.is_empty() {
        true => Vec::new(),
        false => mismatched_page(view, me, peer, &mismatched),
    };
    DigestAnswer { mismatched, states }
}

/// A page of the states in `buckets` that `me` and `peer` both own.
fn mismatched_page(
    view: &ReadView,
    me: &str,
    peer: &str,
    buckets: &[usize],
) -> Vec<(String, Arc<KeyState>)> {
    let pick = |l: &Layout, k: &str| shared(l, k, me, peer) && buckets.contains(&bucket(k));
    view.page_where(None, pick).0
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
    pub states: Vec<(String, Arc<KeyState>)>,
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
        let (me, peer) = (node.cfg.id.clone(), m.id.clone());
        let req = DigestRequest {
            from: me.clone(),
            buckets: node.walk(move |v| digests(v, &me, &peer)).await,
        };
        let exchange = node
            .internal_post(&m.address, "/internal/v1/digest", &req)
            .timeout(EXCHANGE_TIMEOUT)
            .send()
            .and_then(|r| async { r.error_for_status()?.json::<DigestAnswer>().await });
        let answer = match exchange.await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(member = %m.id, error = %e, "anti-entropy exchange failed; the next round retries");
                continue;
            }
        };
        if answer.mismatched.is_empty() {
            continue;
        }
        differed = true;
        repaired += node.apply_local(answer.states).await;
        let (me, peer) = (node.cfg.id.clone(), m.id.clone());
        // A page per round each way: what is left differs again next round.
        let buckets = answer.mismatched;
        let mine = node
            .walk(move |v| mismatched_page(v, &me, &peer, &buckets))
            .await;
        if !mine.is_empty() {
            node.send_states(&m, &mine).await;
        }
    }
    let mut g = node.lock();
    g.ae_rounds += 1;
    g.keys_repaired += repaired as u64;
    (repaired, differed)
}
