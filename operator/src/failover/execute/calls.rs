//! (client: node admin API only) The executor's multi-node calls: a fence of every member
//! that does not wait for stragglers once a majority answered, and telling members to follow.

use std::time::Duration;

use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use rc_api::{EpochRequest, FollowRequest, Peer};
use tracing::warn;

use super::super::View;
use crate::node_client::{NodeAccess, NodeAdmin};

/// Once a majority of the targets answered a fence, how long the others get: a hung node must
/// not hold up the promotion for a whole call timeout, and the answers that came are enough
/// to elect (a majority that adopted the epoch holds every committed entry).
const FENCE_STRAGGLER_WAIT: Duration = Duration::from_millis(150);

/// `POST /admin/epoch` to every target at once; a failure is an answer that did not come. Once
/// a majority answered, the rest is waited for only while some of `answering` (members that
/// answered their last status read) are still out, and at most [`FENCE_STRAGGLER_WAIT`].
pub(super) async fn fence_all(
    nodes: &dyn NodeAdmin,
    auth: &NodeAccess,
    targets: &[Peer],
    epoch: u64,
    answering: &[&str],
) -> Vec<(String, Result<rc_api::EpochResponse, String>)> {
    let mut calls: FuturesUnordered<_> = targets
        .iter()
        .map(|p| async move {
            let answer = nodes
                .epoch(&p.address, auth, EpochRequest { epoch })
                .await
                .map_err(|e| e.to_string());
            (p.id.clone(), answer)
        })
        .collect();
    let needed = super::super::majority(targets.len());
    let mut answers = Vec::with_capacity(targets.len());
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            None => calls.next().await,
            Some(at) => match tokio::time::timeout_at(at, calls.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some(answer) = next else { break };
        answers.push(answer);
        let ok = answers.iter().filter(|(_, a)| a.is_ok()).count();
        if ok >= needed {
            let awaited = targets.iter().any(|p| {
                answering.contains(&p.id.as_str()) && !answers.iter().any(|(id, _)| *id == p.id)
            });
            if !awaited {
                break;
            }
            if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + FENCE_STRAGGLER_WAIT);
            }
        }
    }
    for p in targets {
        if !answers.iter().any(|(id, _)| *id == p.id) {
            answers.push((
                p.id.clone(),
                Err(format!(
                    "no answer within {} ms of a majority",
                    FENCE_STRAGGLER_WAIT.as_millis()
                )),
            ));
        }
    }
    answers
}

/// When `leader`'s followers last heard from it: now minus the freshest contact among the
/// members following it.
pub(super) fn last_contact_ms(view: &View, leader: &str, now_ms: i64) -> Option<i64> {
    view.members
        .iter()
        .filter(|m| m.name != leader)
        .filter_map(|m| m.status().ok())
        .filter(|n| n.leader.as_deref() == Some(leader))
        .filter_map(|n| n.ms_since_leader_contact)
        .min()
        .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)))
}

pub(super) async fn follow_all(
    nodes: &dyn NodeAdmin,
    auth: &NodeAccess,
    members: &[Peer],
    epoch: u64,
    leader: &Peer,
) {
    let calls = members.iter().map(|p| async move {
        let request = FollowRequest {
            epoch,
            leader: leader.clone(),
        };
        if let Err(e) = nodes.follow(&p.address, auth, request).await {
            warn!(member = %p.id, error = %e, "follow failed");
        }
    });
    join_all(calls).await;
}
