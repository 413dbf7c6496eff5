//! Node-to-node replication traffic: a persistent connection per (leader, follower), opened by
//! the leader on the node's one port (TLS with ALPN `rc-peer/1` when the cluster uses TLS). The
//! first byte 0x00 tells it apart from HTTP; then
//! length-delimited postcard frames: `Hello` (shared admin token) and one request at a time,
//! each answered by one response.
//!
//! Does I/O. The leader side is `run_sender` (one task per follower); the follower side is
//! `serve_connection`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use rc_api::{LogPosition, Peer};

use super::replica::{Outgoing, PeerReply};
use crate::clock::Instant;
use crate::security::PeerStream;
use crate::single_leader::node::Node;
use crate::storage::snapshot::{self, Snapshot};
use crate::storage::Entry;

/// First byte of a peer connection; no HTTP request starts with it.
pub const MAGIC: u8 = 0;
const MAX_FRAME: usize = 1 << 30;
/// Largest frame before the peer has authenticated: a `Hello` is a token and a node id. A
/// larger one ends the connection before it is read (an unauthenticated peer must not make the
/// node buffer a gigabyte).
const MAX_HELLO_FRAME: usize = 4 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
enum Request<E> {
    Hello {
        token: String,
        from: String,
    },
    Append {
        epoch: u64,
        leader: Peer,
        prev: LogPosition,
        entries: Vec<E>,
        commit: u64,
        round: u64,
    },
    Snapshot {
        epoch: u64,
        leader: Peer,
        round: u64,
        data: Vec<u8>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Response {
    HelloOk,
    Unauthorized,
    Reply(PeerReply),
}

type Conn = Framed<PeerStream, LengthDelimitedCodec>;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("connecting to {0}: {1}")]
    Connect(String, String),
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Codec(#[from] postcard::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("peer refused our token")]
    Unauthorized,
    #[error("unexpected answer from peer")]
    Protocol,
}

async fn connect(node: &Node, peer: &Peer) -> Result<Conn, PeerError> {
    let security = &node.cfg.security;
    let mut raw = tokio::time::timeout(CONNECT_TIMEOUT, security.connect_peer(&peer.address))
        .await
        .map_err(|_| PeerError::Connect(peer.address.clone(), "timed out".into()))?
        .map_err(|e| PeerError::Connect(peer.address.clone(), e.to_string()))?;
    tokio::io::AsyncWriteExt::write_all(&mut raw, &[MAGIC]).await?;
    let mut conn = Framed::new(raw, codec());
    let me = node.with_replica(|r, _| r.id().to_string());
    let hello: Request<Entry> = Request::Hello {
        token: security.token().to_string(),
        from: me,
    };
    match call(&mut conn, &hello).await? {
        Response::HelloOk => Ok(conn),
        Response::Unauthorized => Err(PeerError::Unauthorized),
        Response::Reply(_) => Err(PeerError::Protocol),
    }
}

async fn call<E: Serialize>(conn: &mut Conn, req: &Request<E>) -> Result<Response, PeerError> {
    conn.send(Bytes::from(postcard::to_allocvec(req)?)).await?;
    let frame = tokio::time::timeout(REPLY_TIMEOUT, conn.next())
        .await
        .map_err(|_| PeerError::Timeout(REPLY_TIMEOUT))?
        .ok_or(PeerError::Closed)??;
    Ok(postcard::from_bytes(&frame)?)
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
    match response {
        Response::Reply(r) => Ok(r),
        Response::Unauthorized => Err(PeerError::Unauthorized),
        Response::HelloOk => Err(PeerError::Protocol),
    }
}

/// Follower side: serve one connection (plain TCP or TLS) whose magic byte is not yet read.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(node: Arc<Node>, mut stream: S) {
    let mut magic = [0u8; 1];
    if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic)
        .await
        .is_err()
    {
        return;
    }
    let mut conn = Framed::new(stream, codec());
    conn.codec_mut().set_max_frame_length(MAX_HELLO_FRAME);
    let mut authenticated = false;
    loop {
        let frame = match conn.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                if !authenticated {
                    tracing::warn!(error = %e, "closed an unauthenticated peer connection");
                }
                break;
            }
            None => break,
        };
        let request = match postcard::from_bytes::<Request<Entry>>(&frame) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(error = %e, "malformed peer frame; closing the connection");
                return;
            }
        };
        let response = match request {
            Request::Hello { token, from } => {
                authenticated = node.cfg.security.accepts(&token);
                if !authenticated {
                    tracing::warn!(from, "refused a peer connection with a wrong token");
                    Response::Unauthorized
                } else {
                    conn.codec_mut().set_max_frame_length(MAX_FRAME);
                    Response::HelloOk
                }
            }
            _ if !authenticated => Response::Unauthorized,
            request => Response::Reply(answer(&node, request).await),
        };
        let Ok(bytes) = postcard::to_allocvec(&response) else {
            return;
        };
        if conn.send(Bytes::from(bytes)).await.is_err() {
            return;
        }
    }
}

/// A follower's answer to an authenticated leader's append or snapshot.
async fn answer(node: &Node, request: Request<Entry>) -> PeerReply {
    let load = node.stats.inflight();
    match request {
        Request::Append {
            epoch,
            leader,
            prev,
            entries,
            commit,
            round,
        } => {
            node.with_replica_durably(|r, now| {
                r.on_append(epoch, &leader, prev, entries, commit, round, load, now)
            })
            .await
        }
        Request::Snapshot {
            epoch,
            leader,
            round,
            data,
        } => match Snapshot::decode(&data) {
            Some(snap) => {
                node.with_replica_durably(|r, now| {
                    r.on_snapshot(epoch, &leader, snap, round, load, now)
                })
                .await
            }
            None => PeerReply::Rejected {
                epoch: 0,
                reason: "corrupt snapshot".into(),
            },
        },
        Request::Hello { .. } => PeerReply::Rejected {
            epoch: 0,
            reason: "hello after the handshake".into(),
        },
    }
}
