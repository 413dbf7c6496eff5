//! The node's listeners, shared by both modes. Each mode's HTTP API comes in three
//! [`Surfaces`]: client (key-value API, probes, metrics), admin (the operator) and peer (the
//! other members, and the binary peer stream of `peer_stream`). A node
//! serves them on one port, or on three (`--peer-listen`, `--admin-listen`) so that a
//! NetworkPolicy can tell who may reach what. With TLS, every connection is TLS and ALPN
//! (`rc-peer/1`) marks the replication stream; without, its first byte does. The plumbing both
//! modes' handlers use lives here too: JSON errors, bearer-token checks, input limits.

pub mod auth;
pub mod error;
pub mod input;

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rc_tls::tokio_rustls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::leaderless::node::LeaderlessNode;
use crate::single_leader::node::Node;

/// The node that answers the binary peer stream (`peer_stream`) on a port, in either mode.
#[derive(Clone)]
pub enum PeerStreams {
    SingleLeader(Arc<Node>),
    Leaderless(Arc<LeaderlessNode>),
}

impl PeerStreams {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        match self {
            PeerStreams::SingleLeader(node) => {
                crate::single_leader::peer::serve_connection(node, stream).await
            }
            PeerStreams::Leaderless(node) => {
                crate::leaderless::peer::serve_connection(node, stream).await
            }
        }
    }
}

/// A mode's HTTP API by who calls it.
pub struct Surfaces {
    /// Clients: the key-value API, probes and metrics.
    pub client: Router,
    /// The operator: status, fencing, promotion, membership (behind the admin token).
    pub admin: Router,
    /// The other members (behind the admin token). On a port of its own it also answers
    /// `/healthz` (gossip's indirect probes ask it).
    pub peer: Router,
}

impl Surfaces {
    /// The routers of the client, admin and peer ports: the client port also carries every
    /// surface that has no port of its own. Unknown paths answer a JSON 404.
    pub fn split(
        self,
        admin_port: bool,
        peer_port: bool,
    ) -> (Router, Option<Router>, Option<Router>) {
        let mut client = self.client;
        let admin = if admin_port {
            Some(self.admin)
        } else {
            client = client.merge(self.admin);
            None
        };
        let peer = if peer_port {
            Some(self.peer.route(
                rc_api::paths::HEALTHZ,
                axum::routing::get(|| async { "ok" }),
            ))
        } else {
            client = client.merge(self.peer);
            None
        };
        let finish = |r: Router| r.fallback(error::not_found);
        (finish(client), admin.map(finish), peer.map(finish))
    }
}

/// Run a client request, counting it in flight and recording its response time.
pub async fn timed(
    stats: &crate::stats::Stats,
    metrics: &crate::metrics::Metrics,
    run: impl std::future::Future<Output = axum::response::Response>,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let resp = {
        let _inflight = stats.start();
        run.await
    };
    let took = started.elapsed();
    stats.record(took);
    metrics.requests.inc();
    metrics.latency.observe(took.as_secs_f64());
    resp
}

/// A TLS handshake that takes longer ends the connection (a slow or idle client must not hold a
/// task forever).
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accept connections until `shutdown` resolves. `streams` receives the peer streams; `tls`,
/// when set, is required on every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    streams: Option<PeerStreams>,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let streams = streams.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Some(tls) = tls {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    // A client without the cluster CA, or plain HTTP on a TLS port.
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                };
                let replication = stream.get_ref().1.alpn_protocol() == Some(rc_tls::PEER_ALPN);
                match (replication, streams) {
                    (true, Some(streams)) => streams.serve(stream).await,
                    (true, None) => {}
                    (false, _) => serve_http(app, stream).await,
                }
                return;
            }
            let mut first = [0u8; 1];
            match (stream.peek(&mut first).await, streams) {
                (Ok(1), Some(streams)) if first[0] == crate::peer_stream::MAGIC => {
                    streams.serve(stream).await
                }
                (Ok(1), _) => serve_http(app, stream).await,
                _ => {}
            }
        });
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(app: Router, stream: S) {
    let svc = TowerToHyperService::new(app);
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
