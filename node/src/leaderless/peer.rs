//! The leaderless replica protocol on the peer stream (`peer_stream`): a coordinator's writes
//! and reads to the other owners of a key, in binary batches over one persistent connection per
//! member and kind (the outboxes gather them), instead of an HTTP call with a JSON body each.
//! The replica merges a batch of writes with one group commit and answers once.
//!
//! Does I/O. Rarer traffic (gossip, anti-entropy, streaming, forwarded writes) stays on the
//! internal HTTP API.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use rc_api::Member;

use super::dvv::KeyState;
use super::node::LeaderlessNode;
use crate::peer_stream::{self, Conn, PeerError};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Merge these key states, durably, then answer `Replicated`.
    Replicate(Cow<'a, [(String, Arc<KeyState>)]>),
    /// The local state of each key, in order.
    Read(Cow<'a, [String]>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Replicated,
    /// One per key asked, in order; an absent key is the empty state.
    States(Vec<KeyState>),
    /// This node is streaming its ranges back in: its data is incomplete, it answers no reads.
    Restoring,
}

/// Serve an incoming peer connection whose magic byte is not read yet.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    node: Arc<LeaderlessNode>,
    stream: S,
) {
    peer_stream::serve(&node.cfg.security, stream, |request| answer(&node, request)).await
}

async fn answer(node: &LeaderlessNode, request: Request<'static>) -> Response {
    match request {
        Request::Replicate(items) => {
            node.apply_local(items.into_owned()).await;
            Response::Replicated
        }
        Request::Read(keys) => match node.local_states(&keys) {
            Some(states) => Response::States(states),
            None => Response::Restoring,
        },
    }
}

/// How long a member that did not speak the peer stream is sent HTTP calls before the stream
/// is tried again.
const HTTP_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// A connection to one member: opened on first use, and again after a failure. A member that
/// does not answer on the peer stream but does over HTTP (a node of the version before the
/// stream, during a rolling upgrade) gets the internal HTTP calls instead for a while.
pub(crate) struct Link {
    member: Member,
    conn: Option<Conn>,
    http_until: Option<std::time::Instant>,
}

impl Link {
    pub fn new(member: Member) -> Link {
        Link {
            member,
            conn: None,
            http_until: None,
        }
    }

    /// Have `member` merge `items` durably.
    pub async fn replicate(
        &mut self,
        node: &LeaderlessNode,
        items: &[(String, Arc<KeyState>)],
    ) -> Result<(), PeerError> {
        if !self.on_http() {
            let streamed = self.call(node, &Request::Replicate(items.into())).await;
            match streamed {
                Ok(Response::Replicated) => return Ok(()),
                Ok(_) | Err(PeerError::Unauthorized) => return Err(PeerError::Protocol),
                Err(_) => {}
            }
        }
        if !node.send_states(&self.member, items).await {
            return Err(PeerError::Closed);
        }
        self.use_http();
        Ok(())
    }

    /// `member`'s state of each key; `None` while it is restoring.
    pub async fn read(
        &mut self,
        node: &LeaderlessNode,
        keys: &[String],
    ) -> Result<Option<Vec<KeyState>>, PeerError> {
        if !self.on_http() {
            match self.call(node, &Request::Read(keys.into())).await {
                Ok(Response::States(states)) if states.len() == keys.len() => {
                    return Ok(Some(states))
                }
                Ok(Response::Restoring) => return Ok(None),
                Ok(_) | Err(PeerError::Unauthorized) => return Err(PeerError::Protocol),
                Err(_) => {}
            }
        }
        let reads = keys.iter().map(|k| node.read_over_http(&self.member, k));
        let states: Option<Vec<KeyState>> =
            futures::future::join_all(reads).await.into_iter().collect();
        match states {
            Some(states) => {
                self.use_http();
                Ok(Some(states))
            }
            None => Err(PeerError::Closed),
        }
    }

    fn on_http(&self) -> bool {
        self.http_until
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn use_http(&mut self) {
        if !self.on_http() {
            tracing::info!(member = %self.member.id, "peer stream refused, HTTP answered: using the internal HTTP API for a while (a member of the previous version?)");
            self.http_until = Some(std::time::Instant::now() + HTTP_FOR);
        }
    }

    async fn call(
        &mut self,
        node: &LeaderlessNode,
        request: &Request<'_>,
    ) -> Result<Response, PeerError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn =
                    peer_stream::connect(&node.cfg.security, &self.member.address, &node.cfg.id)
                        .await?;
                self.conn.insert(conn)
            }
        };
        let result = peer_stream::call(conn, request, node.cfg.request_timeout).await;
        if result.is_err() {
            // The stream may be half-used: a late answer must not be taken for the next one.
            self.conn = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaderless::dvv::Sibling;

    #[test]
    fn a_borrowed_request_reads_back_as_an_owned_one() -> Result<(), postcard::Error> {
        let state = KeyState {
            siblings: vec![Sibling {
                node: "n0~1".into(),
                counter: 1,
                ts: 7,
                value: Some("v".into()),
            }],
            clock: [("n0~1".to_string(), 1)].into_iter().collect(),
        };
        // A shared state is sent as the state itself: the same bytes as a node that held
        // states inline sent, so members of either version read each other's frames.
        assert_eq!(
            postcard::to_allocvec(&Arc::new(state.clone()))?,
            postcard::to_allocvec(&state)?
        );
        let items = vec![("k".to_string(), Arc::new(state))];
        let bytes = postcard::to_allocvec(&Request::Replicate(items.as_slice().into()))?;
        match postcard::from_bytes::<Request<'static>>(&bytes)? {
            Request::Replicate(back) => assert_eq!(back.into_owned(), items),
            other => unreachable!("decoded as {other:?}"),
        }
        Ok(())
    }
}
