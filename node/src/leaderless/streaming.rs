//! Streaming ranges on membership changes: a joining (or restoring) member pulls the keys it
//! will own (or owns), page by page; a leaving member pushes its keys to their next owners.
//! Does I/O, except [`stream_in_now`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rc_api::{Member, MemberState, StreamState};

use super::dvv::KeyState;
use super::gossip::others;
use super::node::LeaderlessNode;

/// What the watch that streams ranges in does this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamIn {
    Nothing,
    /// A joining member streams every key it will own.
    Join,
    /// A member that lost its data streams back every key it owns now or will own.
    Restore,
}

/// Pure: whether a member in ring state `state` (`None`: not in the ring), streaming `stream`,
/// with its data incomplete (`restoring`) streams ranges in now.
///
/// A leaving member whose decommission dropped its data (stream `streaming` or
/// `decommissioned` while restoring: a decommission starts only when the member is not
/// restoring) does not restore: it handed its ranges over and the next ring drops it. The ring
/// still names it an owner until then, so it must stay restoring and answer no reads: with the
/// leaver's empty answers counted, a read quorum of leavers returns "absent" for an
/// acknowledged write. A leaving member that lost its data otherwise, or restarted after its
/// decommission (stream `idle` again), restores its current ranges before it answers reads or
/// hands them over (the operator decommissions it again, as it reports no `decommissioned`).
pub fn stream_in_now(state: Option<MemberState>, stream: StreamState, restoring: bool) -> StreamIn {
    let handed_over = matches!(stream, StreamState::Streaming | StreamState::Decommissioned);
    match state {
        Some(MemberState::Joining) if stream == StreamState::Idle => StreamIn::Join,
        Some(MemberState::Normal) if restoring => StreamIn::Restore,
        Some(MemberState::Leaving) if restoring && !handed_over => StreamIn::Restore,
        _ => StreamIn::Nothing,
    }
}

/// A joining node streams every key it will own from the current members, once per ring; a
/// member that lost its data (restoring) streams its ranges back before answering reads.
pub(super) async fn join_watch(node: Arc<LeaderlessNode>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One look under the lock: a decommission sets `stream` before it drops the data.
        let decision = {
            let g = node.lock();
            let state = g.ring.as_ref().and_then(|r| {
                r.members
                    .iter()
                    .find(|m| m.id == node.cfg.id)
                    .map(|m| m.state)
            });
            stream_in_now(state, g.stream, g.restoring)
        };
        if decision == StreamIn::Nothing {
            continue;
        }
        let (joining, restoring) = (decision == StreamIn::Join, decision == StreamIn::Restore);
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

/// `/internal/v1/stream`: a page of the keys `for_node` owns now or will own, after `after`.
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
    pub items: Vec<(String, Arc<KeyState>)>,
    pub next: Option<String>,
}

/// Pull every key this node owns now or will own from each current member, page by page.
/// `None` if a member could not be streamed from; with `skip_dead`, dead members are skipped.
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
                .internal_post(&m.address, "/internal/v1/stream", &req)
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
            let id = id.clone();
            let (items, next) = node
                .page_where(after.clone(), move |l, k| {
                    l.future_owners(k).iter().any(|f| f.id == id)
                })
                .await;
            let mut ok = items.is_empty();
            for attempt in 0..50u64 {
                if ok {
                    break;
                }
                ok = node.send_states(m, &items).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaver_that_handed_its_ranges_over_stays_restoring_and_others_restore() {
        use MemberState::{Joining, Leaving, Normal};
        use StreamState::{Decommissioned, Failed, Idle, Joined, Streaming};
        // Its decommission dropped the data; the ring still names it: no restore, no reads.
        assert_eq!(
            stream_in_now(Some(Leaving), Decommissioned, true),
            StreamIn::Nothing
        );
        assert_eq!(
            stream_in_now(Some(Leaving), Streaming, true),
            StreamIn::Nothing,
            "dropped, not yet reported decommissioned"
        );
        // A leaver that lost its disk (a restart: idle) restores before reads and hand-over.
        assert_eq!(stream_in_now(Some(Leaving), Idle, true), StreamIn::Restore);
        assert_eq!(
            stream_in_now(Some(Leaving), Failed, true),
            StreamIn::Restore
        );
        assert_eq!(stream_in_now(Some(Normal), Joined, true), StreamIn::Restore);
        assert_eq!(
            stream_in_now(Some(Normal), Decommissioned, true),
            StreamIn::Restore
        );
        assert_eq!(stream_in_now(Some(Joining), Idle, true), StreamIn::Join);
        assert_eq!(stream_in_now(Some(Joining), Idle, false), StreamIn::Join);
        assert_eq!(
            stream_in_now(Some(Joining), Joined, true),
            StreamIn::Nothing
        );
        assert_eq!(stream_in_now(None, Decommissioned, true), StreamIn::Nothing);
        for state in [Some(Normal), Some(Leaving), None] {
            assert_eq!(stream_in_now(state, Idle, false), StreamIn::Nothing);
        }
    }
}
