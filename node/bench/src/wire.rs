//! The load's HTTP client: one HTTP/1.1 connection per client task, opened once and kept,
//! each request built from a path and a shared body. reqwest parsed a URL, looked up its pool
//! and wrapped every call in its redirect and timeout layers: the load generator took as much
//! CPU as the busiest server on the same 2 cores, and so measured itself as much as them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rc_tls::rustls::pki_types::ServerName;
use rc_tls::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::prelude::*;

/// A request or a connection that takes longer fails (reqwest's timeout before).
const TIMEOUT: Duration = Duration::from_secs(5);

/// One kept connection to one server.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (`host:port`), over TLS with `tls`.
    pub async fn open(addr: &str, tls: Option<&Arc<ClientConfig>>) -> anyhow::Result<Conn> {
        let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await??;
        tcp.set_nodelay(true)?;
        let send = match tls {
            None => handshake(tcp).await?,
            Some(config) => {
                let mut config = (**config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
                let name = ServerName::try_from(host.to_owned())?;
                let connect = TlsConnector::from(Arc::new(config)).connect(name, tcp);
                handshake(tokio::time::timeout(TIMEOUT, connect).await??).await?
            }
        };
        Ok(Conn {
            send,
            host: addr.to_owned(),
        })
    }

    /// Sends one request and reads the whole answer; its status.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<StatusCode> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let exchange = async {
            let response = self.send.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            anyhow::Ok(status)
        };
        tokio::time::timeout(TIMEOUT, exchange).await?
    }
}

async fn handshake<S>(io: S) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(io)).await?;
    // Drives the connection until either side closes it.
    tokio::spawn(connection);
    Ok(send)
}
