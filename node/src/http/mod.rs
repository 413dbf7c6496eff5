//! The node's one port, shared by both modes: HTTP (client API, admin API, probes, metrics) and,
//! sniffed by the first byte, the single-leader peer replication protocol. The plumbing both
//! modes' handlers use lives here too: JSON errors, bearer-token checks, input limits.

pub mod auth;
pub mod error;
pub mod input;

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::single_leader::node::Node;
use crate::single_leader::peer;

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

/// Accept connections until `shutdown` resolves. `single_leader` (that mode's node) receives
/// the connections that start with the replication protocol's magic byte.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    single_leader: Option<Arc<Node>>,
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
        let node = single_leader.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            match (stream.peek(&mut first).await, node) {
                (Ok(1), Some(node)) if first[0] == peer::MAGIC => {
                    peer::serve_connection(node, stream).await
                }
                (Ok(1), _) => {
                    let svc = TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
                _ => {}
            }
        });
    }
}
