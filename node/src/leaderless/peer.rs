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
    Replicate(Cow<'a, [(String, KeyState)]>),
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

/// A connection to one member: opened on first use, and again after a failure.
pub(crate) struct Link {
    member: Member,
    conn: Option<Conn>,
}

impl Link {
    pub fn new(member: Member) -> Link {
        Link { member, conn: None }
    }

    /// Have `member` merge `items` durably.
    pub async fn replicate(
        &mut self,
        node: &LeaderlessNode,
        items: &[(String, KeyState)],
    ) -> Result<(), PeerError> {
        match self.call(node, &Request::Replicate(items.into())).await? {
            Response::Replicated => Ok(()),
            _ => Err(PeerError::Protocol),
        }
    }

    /// `member`'s state of each key; `None` while it is restoring.
    pub async fn read(
        &mut self,
        node: &LeaderlessNode,
        keys: &[String],
    ) -> Result<Option<Vec<KeyState>>, PeerError> {
        match self.call(node, &Request::Read(keys.into())).await? {
            Response::States(states) if states.len() == keys.len() => Ok(Some(states)),
            Response::Restoring => Ok(None),
            _ => Err(PeerError::Protocol),
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
        let items = vec![("k".to_string(), state)];
        let bytes = postcard::to_allocvec(&Request::Replicate(items.as_slice().into()))?;
        match postcard::from_bytes::<Request<'static>>(&bytes)? {
            Request::Replicate(back) => assert_eq!(back.into_owned(), items),
            other => unreachable!("decoded as {other:?}"),
        }
        Ok(())
    }
}
