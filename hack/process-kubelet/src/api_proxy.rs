//! (I/O: sockets) A TCP pass-through from `<bridge address>:<port>` to the real API server on
//! 127.0.0.1, because pods live in their own network namespaces and cannot reach the host's
//! loopback. TLS is end to end: pods dial `kubernetes.default.svc` (their hosts file maps it to
//! the bridge address), a name in the API server's certificate, and authenticate with their own
//! service-account token; the API server sees every pod connection coming from 127.0.0.1.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind(listen).await?)
}

pub async fn serve(listener: TcpListener, upstream: String, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let (mut inbound, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "API proxy accept");
                continue;
            }
        };
        let upstream = upstream.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut outbound = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, %upstream, error = %e, "API proxy cannot reach the API server");
                    return;
                }
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}
