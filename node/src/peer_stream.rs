//! The node-to-node stream both modes replicate over: a persistent connection to a member's
//! peer surface (TLS with ALPN `rc-peer/1` when the cluster uses TLS; otherwise a first byte
//! 0x00, which no HTTP request starts with), carrying length-delimited postcard frames. The
//! first frame is a [`Hello`] with the admin token; until it is accepted, frames are capped at
//! a few KiB, so an unauthenticated peer cannot make a node buffer a large one. Then each
//! request is answered by one response, in order.
//!
//! Does I/O. What the requests are is each mode's business (`single_leader::peer`,
//! `leaderless::peer`); this module frames, authenticates and times them.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::security::{PeerStream, Security};

/// First byte of a peer connection without TLS; no HTTP request starts with it.
pub const MAGIC: u8 = 0;
const MAX_FRAME: usize = 1 << 30;
/// Largest frame before the peer has authenticated: a `Hello` is a token and a node id.
const MAX_HELLO_FRAME: usize = 4 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The first frame on a connection. An enum of one variant: its tag is the byte the first
/// version of the single-leader stream sent first, so members one version apart understand
/// each other's handshake (`Welcome` keeps that version's tags too).
#[derive(Debug, Serialize, Deserialize)]
enum Hello {
    Hello { token: String, from: String },
}

/// The answer to a [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
enum Welcome {
    Accepted,
    Unauthorized,
}

pub type Conn = Framed<PeerStream, LengthDelimitedCodec>;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
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

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec()
}

/// Open a stream to the member known as `address` and authenticate as `from`.
pub async fn connect(security: &Security, address: &str, from: &str) -> Result<Conn, PeerError> {
    let mut raw = tokio::time::timeout(CONNECT_TIMEOUT, security.connect_peer(address))
        .await
        .map_err(|_| PeerError::Connect(address.to_owned(), "timed out".into()))?
        .map_err(|e| PeerError::Connect(address.to_owned(), e.to_string()))?;
    tokio::io::AsyncWriteExt::write_all(&mut raw, &[MAGIC]).await?;
    let mut conn = Framed::new(raw, codec(MAX_FRAME));
    let hello = Hello::Hello {
        token: security.token().to_string(),
        from: from.to_owned(),
    };
    match call(&mut conn, &hello, CONNECT_TIMEOUT).await? {
        Welcome::Accepted => Ok(conn),
        Welcome::Unauthorized => Err(PeerError::Unauthorized),
    }
}

/// Send `request` and wait up to `timeout` for its response.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    conn: &mut Conn,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, PeerError> {
    conn.send(Bytes::from(postcard::to_allocvec(request)?))
        .await?;
    let frame = tokio::time::timeout(timeout, conn.next())
        .await
        .map_err(|_| PeerError::Timeout(timeout))?
        .ok_or(PeerError::Closed)??;
    Ok(postcard::from_bytes(&frame)?)
}

/// Serve one incoming connection (plain TCP or TLS) whose magic byte is not read yet: check
/// its [`Hello`], then answer each request with `answer`, in order, until it closes.
pub async fn serve<S, Req, Resp, F, Fut>(security: &Security, mut stream: S, mut answer: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    let mut magic = [0u8; 1];
    if stream.read_exact(&mut magic).await.is_err() {
        return;
    }
    let mut conn = Framed::new(stream, codec(MAX_HELLO_FRAME));
    let Some(Hello::Hello { token, from }) = next_frame(&mut conn, false).await else {
        return;
    };
    if !security.accepts(&token) {
        tracing::warn!(from, "refused a peer connection with a wrong token");
        let _ = send(&mut conn, &Welcome::Unauthorized).await;
        return;
    }
    conn.codec_mut().set_max_frame_length(MAX_FRAME);
    if send(&mut conn, &Welcome::Accepted).await.is_err() {
        return;
    }
    while let Some(request) = next_frame(&mut conn, true).await {
        if send(&mut conn, &answer(request).await).await.is_err() {
            return;
        }
    }
}

/// The next frame, decoded; `None` when the connection ends or sends something unreadable.
async fn next_frame<S, T>(
    conn: &mut Framed<S, LengthDelimitedCodec>,
    authenticated: bool,
) -> Option<T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: DeserializeOwned,
{
    let frame = match conn.next().await? {
        Ok(frame) => frame,
        Err(e) => {
            if !authenticated {
                tracing::warn!(error = %e, "closed an unauthenticated peer connection");
            }
            return None;
        }
    };
    match postcard::from_bytes(&frame) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "malformed peer frame; closing the connection");
            None
        }
    }
}

async fn send<S, T>(conn: &mut Framed<S, LengthDelimitedCodec>, t: &T) -> Result<(), PeerError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Serialize,
{
    conn.send(Bytes::from(postcard::to_allocvec(t)?)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A listener that serves peer streams doubling each number it is sent.
    async fn doubling_server(security: Arc<Security>) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let security = security.clone();
                tokio::spawn(async move {
                    serve(&security, stream, |n: u64| async move { n * 2 }).await
                });
            }
        });
        Ok(address)
    }

    /// The first version's handshake, written out (see the single-leader frames' test): the
    /// request Hello was variant 0 (token, from); the answers HelloOk 0 and Unauthorized 1.
    #[test]
    fn the_handshake_is_the_first_versions_byte_for_byte() -> Result<(), postcard::Error> {
        let (token, from) = ("a-token-of-twenty-chars".to_string(), "n1".to_string());
        let hello = Hello::Hello {
            token: token.clone(),
            from: from.clone(),
        };
        assert_eq!(
            postcard::to_allocvec(&hello)?,
            postcard::to_allocvec(&(0u32, token, from))?
        );
        assert_eq!(
            postcard::to_allocvec(&Welcome::Accepted)?,
            postcard::to_allocvec(&0u32)?
        );
        assert_eq!(
            postcard::to_allocvec(&Welcome::Unauthorized)?,
            postcard::to_allocvec(&1u32)?
        );
        Ok(())
    }

    #[tokio::test]
    async fn requests_are_answered_in_order_after_the_token_is_accepted() -> anyhow::Result<()> {
        let security = Security::plain("a-token-of-twenty-chars")?;
        let address = doubling_server(security.clone()).await?;
        let mut conn = connect(&security, &address, "n1").await?;
        for n in [1u64, 2, 21] {
            let doubled: u64 = call(&mut conn, &n, Duration::from_secs(5)).await?;
            assert_eq!(doubled, n * 2);
        }
        let stranger = Security::plain("another-token-of-twenty")?;
        match connect(&stranger, &address, "n9").await {
            Err(PeerError::Unauthorized) => Ok(()),
            other => anyhow::bail!("a wrong token must be refused, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn a_large_frame_before_the_hello_closes_the_connection_unread() -> anyhow::Result<()> {
        let security = Security::plain("a-token-of-twenty-chars")?;
        let address = doubling_server(security).await?;
        let mut raw = tokio::net::TcpStream::connect(&address).await?;
        // Magic byte, then a frame header announcing 64 MiB.
        raw.write_all(&[MAGIC]).await?;
        raw.write_all(&(64u32 << 20).to_be_bytes()).await?;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await?;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, nothing answered: {read:?}"
        );
        Ok(())
    }
}
