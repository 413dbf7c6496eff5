//! (I/O: sockets) The kubelet API on `<node address>:<port>` (10250), over HTTPS, as far as
//! this kubelet implements it: `GET /containerLogs/{namespace}/{pod}/{container}` (what the API
//! server calls for `kubectl logs`) and `GET /healthz`. `exec`, `attach`, `portForward`,
//! `/stats`, `/metrics` and the rest answer 404.
//!
//! Authentication as the API server expects of a kubelet with anonymous access off: the client
//! must present a certificate issued by `--client-ca-file` (the cluster CA; the API server uses
//! its `--kubelet-client-certificate`). A certificate from any other issuer fails the TLS
//! handshake; no certificate at all gets `401 Unauthorized`. There is no authorization step
//! (the real kubelet asks the API server with a SubjectAccessReview): every certificate the
//! cluster CA issues belongs to a control-plane component or an admin here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use k8s_openapi::jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::logs::{self, LogError, LogOptions, LogReader, LogRegistry};

/// A TLS handshake taking longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM files of the kubelet API's TLS (the real kubelet's flag names).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// The serving certificate and key, and client certificates required to chain to `client_ca`
/// (optional at the TLS level so that a request without one gets a clear 401).
pub fn tls_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the key {}", files.key.display()))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.client_ca)
        .with_context(|| format!("reading {}", files.client_ca.display()))?
    {
        roots
            .add(ca.with_context(|| format!("parsing {}", files.client_ca.display()))?)
            .context("adding the client CA")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the serving certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Finished TLS connections, handed to axum. Handshakes run in their own tasks so that a slow
/// or stuck client never holds up the others.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Who is calling: the address, and whether a CA-issued client certificate was verified.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub authenticated: bool,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        Peer {
            addr: *stream.remote_addr(),
            authenticated: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = tcp.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let (sock, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %addr, error = %e, "kubelet API: TLS handshake failed");
                }
                Err(_) => tracing::info!(peer = %addr, "kubelet API: TLS handshake timed out"),
            }
        });
    }
}

/// Serves the kubelet API on `tcp` until `shutdown`.
pub async fn serve(
    tcp: TcpListener,
    tls: Arc<ServerConfig>,
    registry: Arc<LogRegistry>,
    shutdown: CancellationToken,
) {
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "kubelet API: no local address");
            return;
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_tls(
        tcp,
        TlsAcceptor::from(tls),
        tx,
        shutdown.clone(),
    ));
    let app = router(registry).into_make_service_with_connect_info::<Peer>();
    // Not a graceful shutdown: a `kubectl logs -f` would hold it open. The pods are stopped
    // by then, which ends every follower anyway.
    tokio::select! {
        r = axum::serve(TlsListener { rx, local }, app) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "kubelet API stopped");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

pub fn router(registry: Arc<LogRegistry>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "rc-process-kubelet serves only /containerLogs/{namespace}/{pod}/{container} and /healthz\n",
            )
        })
        .layer(middleware::from_fn(require_client_cert))
        .with_state(registry)
}

async fn require_client_cert(
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if !peer.authenticated {
        tracing::info!(peer = %peer.addr, path = %req.uri().path(), "kubelet API: request without a client certificate");
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    next.run(req).await
}

fn error_response(e: &LogError) -> Response {
    let status = match e {
        LogError::NotFound(_) => StatusCode::NOT_FOUND,
        LogError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LogError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (status, e.to_string()).into_response()
}

async fn container_logs(
    State(registry): State<Arc<LogRegistry>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let opts = match LogOptions::from_query(&query, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return error_response(&e),
    };
    let Some(pod_logs) = registry.get(&namespace, &pod) else {
        return error_response(&LogError::NotFound(format!(
            "pod {pod:?} does not exist in namespace {namespace:?} on this node"
        )));
    };
    let inst = match pod_logs.select(&container, opts.previous) {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    tracing::debug!(peer = %peer.addr, pod = %format!("{namespace}/{pod}"), %container, ?opts, "container logs");
    let reader = match tokio::task::spawn_blocking(move || LogReader::open(inst, opts)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the log of container {container:?} in pod {pod:?}: {e}"),
            )
                .into_response()
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(logs::stream(reader)),
    )
        .into_response()
}
