//! The single-leader replication stream (see `peer_stream` for the connection): the leader
//! sends appends and snapshots to each follower, one at a time, each answered by a reply.
//!
//! Does I/O. The leader side is `run_sender` (one task per follower); the follower side is
//! `serve_connection`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use rc_api::{LogPosition, Peer};

use super::replica::{Frame, Outgoing, PeerReply};
use crate::clock::Instant;
use crate::peer_stream::{self, Conn, PeerError};
use crate::single_leader::kv::ReceivedSnapshot;
use crate::single_leader::node::Node;
use crate::storage::snapshot;
use crate::storage::Entry;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames from a leader. The layout is the one the first version of this stream used (variant
/// 0 was its hello, now `peer_stream`'s, which keeps that tag; fields in this order), so a
/// leader and a follower one version apart replicate during a rolling upgrade.
#[derive(Debug, Serialize, Deserialize)]
enum Request<E> {
    /// The handshake's tag; never sent once a connection is accepted.
    Handshake,
    Append {
        epoch: u64,
        leader: Peer,
        prev: LogPosition,
        entries: Vec<E>,
        commit: u64,
        /// The leader's read round, echoed in the reply.
        round: u64,
    },
    Snapshot {
        epoch: u64,
        leader: Peer,
        round: u64,
        data: Vec<u8>,
    },
}

/// A follower's answers; variants 0 and 1 are `peer_stream`'s welcome (same tags).
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Accepted,
    Unauthorized,
    Reply(PeerReply),
}

/// What the replica needs to know of a leader's frame.
fn frame(epoch: u64, leader: &Peer, round: u64, load: u32, now: Instant) -> Frame<'_> {
    Frame {
        epoch,
        leader,
        round,
        load,
        now,
    }
}

async fn connect(node: &Node, peer: &Peer) -> Result<Conn, PeerError> {
    let me = node.with_replica(|r, _| r.id().to_string());
    peer_stream::connect(&node.cfg.security, &peer.address, &me).await
}

async fn call<E: Serialize>(conn: &mut Conn, req: &Request<E>) -> Result<PeerReply, PeerError> {
    match peer_stream::call(conn, req, REPLY_TIMEOUT).await? {
        Response::Reply(reply) => Ok(reply),
        Response::Accepted | Response::Unauthorized => Err(PeerError::Protocol),
    }
}

/// Leader side: keep follower `peer` replicated for as long as this node leads `epoch`.
pub async fn run_sender(node: Arc<Node>, mut peer: Peer, epoch: u64, notify: Arc<Notify>) {
    let mut conn: Option<Conn> = None;
    let mut force = true;
    let mut failures = 0u32;
    tracing::debug!(follower = %peer.id, epoch, "replication sender started");
    while node.sender_wanted(&peer.id, epoch) {
        let (address, next) = node.with_replica(|r, _| {
            let Some(i) = r.followers().iter().position(|f| f.peer.id == peer.id) else {
                return (None, None);
            };
            let address = r.followers()[i].peer.address.clone();
            let me = Peer {
                id: r.id().to_string(),
                address: r.leader().map(|l| l.address.clone()).unwrap_or_default(),
            };
            (
                Some(address),
                r.outgoing(i, force).map(|o| (o, me, r.epoch())),
            )
        });
        // The operator re-promotes with a follower's new address (a new pod IP); reconnect there
        // instead of dialing the old one forever.
        if let Some(address) = address.filter(|a| *a != peer.address) {
            tracing::info!(follower = %peer.id, from = %peer.address, to = %address, "follower address changed; reconnecting");
            peer.address = address;
            conn = None;
            failures = 0;
        }
        let Some((out, me, frame_epoch)) = next else {
            tokio::select! {
                _ = notify.notified() => force = false,
                _ = tokio::time::sleep(node.cfg.heartbeat) => force = true,
            }
            continue;
        };
        if frame_epoch != epoch {
            break;
        }
        let sent_at = Instant::now();
        let result = send_one(&node, &mut conn, &peer, me, epoch, out).await;
        match result {
            Ok(reply) => {
                failures = 0;
                force = false;
                node.with_replica(|r, now| r.on_reply(&peer.id, epoch, reply, sent_at, now));
            }
            Err(e) => {
                conn = None;
                failures = failures.saturating_add(1);
                // Log the first failure and then every 50th, not every retry.
                if failures == 1 || failures.is_multiple_of(50) {
                    tracing::warn!(follower = %peer.id, address = %peer.address, error = %e, failures, "replication to follower failed; retrying");
                }
                node.with_replica(|r, _| r.on_send_failed(&peer.id));
                let backoff = node
                    .cfg
                    .heartbeat
                    .min(Duration::from_millis(50) * failures.min(10));
                tokio::time::sleep(backoff).await;
                force = true;
            }
        }
    }
    tracing::debug!(follower = %peer.id, epoch, "replication sender stopped");
}

async fn send_one(
    node: &Node,
    conn: &mut Option<Conn>,
    peer: &Peer,
    me: Peer,
    epoch: u64,
    out: Outgoing,
) -> Result<PeerReply, PeerError> {
    if conn.is_none() {
        *conn = Some(connect(node, peer).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(PeerError::Closed);
    };
    let response = match out {
        Outgoing::Append {
            prev,
            entries,
            commit,
            round,
        } => {
            // Arc<Entry> serializes exactly like Entry: no copy of the batch.
            let req = Request::Append {
                epoch,
                leader: me,
                prev,
                entries,
                commit,
                round,
            };
            call(c, &req).await?
        }
        Outgoing::Snapshot { round } => {
            let dir = node.cfg.data_dir.clone();
            let data = tokio::task::spawn_blocking(move || snapshot::read_bytes(&dir))
                .await
                .map_err(|e| PeerError::Io(std::io::Error::other(e)))?
                .map_err(|e| PeerError::Io(std::io::Error::other(e)))?
                .ok_or(PeerError::Protocol)?;
            tracing::info!(follower = %peer.id, bytes = data.len(), "sending a snapshot to a follower that is too far behind");
            let req: Request<Entry> = Request::Snapshot {
                epoch,
                leader: me,
                round,
                data,
            };
            call(c, &req).await?
        }
    };
    Ok(response)
}

/// Follower side: serve one connection (plain TCP or TLS) whose magic byte is not yet read.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(node: Arc<Node>, stream: S) {
    peer_stream::serve(&node.cfg.security, stream, |request| answer(&node, request)).await
}

/// Decode a snapshot and build its state machine on a blocking thread (a million keys take a
/// while), before the node's lock is taken.
async fn decode_off_the_runtime(data: Vec<u8>) -> Option<ReceivedSnapshot> {
    tokio::task::spawn_blocking(move || ReceivedSnapshot::decode(data))
        .await
        .ok()
        .flatten()
}

/// A follower's answer to an authenticated leader's append or snapshot.
async fn answer(node: &Node, request: Request<Entry>) -> Response {
    let load = node.stats.inflight();
    let reply = match request {
        Request::Handshake => PeerReply::Rejected {
            epoch: 0,
            reason: "a handshake on an accepted connection".into(),
        },
        Request::Append {
            epoch,
            leader,
            prev,
            entries,
            commit,
            round,
        } => {
            node.with_replica_durably(|r, now| {
                r.on_append(
                    frame(epoch, &leader, round, load, now),
                    prev,
                    entries,
                    commit,
                )
            })
            .await
        }
        Request::Snapshot {
            epoch,
            leader,
            round,
            data,
        } => match decode_off_the_runtime(data).await {
            Some(snap) => {
                node.with_replica_durably(|r, now| {
                    r.on_snapshot(frame(epoch, &leader, round, load, now), snap)
                })
                .await
            }
            None => PeerReply::Rejected {
                epoch: 0,
                reason: "corrupt snapshot".into(),
            },
        },
    };
    Response::Reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Command;

    fn bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(value)
    }

    /// The first version's frames, written out: postcard encodes an enum variant as its index
    /// (a varint, as a `u32` is) followed by its fields in order, which is what a tuple of the
    /// same values encodes to. Its requests were Hello (0), Append (1: epoch, leader, prev,
    /// entries, commit, round) and Snapshot (2: epoch, leader, round, data); its responses
    /// HelloOk (0), Unauthorized (1) and Reply (2: the reply).
    #[test]
    fn frames_are_those_of_the_first_version_byte_for_byte() -> Result<(), postcard::Error> {
        let leader = Peer {
            id: "n0".into(),
            address: "10.0.0.1:7400".into(),
        };
        let prev = LogPosition {
            epoch: 3,
            index: 41,
        };
        let entries = vec![Entry {
            index: 42,
            epoch: 3,
            command: Command::Put {
                key: "k".into(),
                value: "v".into(),
            },
        }];
        let append = Request::Append {
            epoch: 3,
            leader: leader.clone(),
            prev,
            entries: entries.clone(),
            commit: 40,
            round: 9,
        };
        let first = (1u32, 3u64, &leader, prev, &entries, 40u64, 9u64);
        assert_eq!(bytes(&append)?, bytes(&first)?);
        let data = vec![1u8, 2, 3];
        let snapshot = Request::<Entry>::Snapshot {
            epoch: 3,
            leader: leader.clone(),
            round: 9,
            data: data.clone(),
        };
        assert_eq!(
            bytes(&snapshot)?,
            bytes(&(2u32, 3u64, &leader, 9u64, &data))?
        );
        let reply = PeerReply::Mismatch {
            hint: 7,
            round: 9,
            incarnation: 2,
        };
        assert_eq!(
            bytes(&Response::Reply(reply.clone()))?,
            bytes(&(2u32, reply))?
        );
        Ok(())
    }
}
