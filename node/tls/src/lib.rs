//! TLS for rc-node and everything that talks to it.
//!
//! - [`server`]: a node's server configuration whose certificate is re-read from its files when
//!   they change, so a rotated certificate is served without a restart.
//! - [`client`]: a client configuration that trusts one cluster's CA. A node is dialled by pod IP
//!   or by a DNS name; both are checked against the cluster's service name (every node
//!   certificate carries it), because pod IPs are not known when certificates are issued.
//! - [`issue`]: the per-cluster CA and node certificates the operator creates (and tests use).
//!
//! Every configuration uses the `ring` provider explicitly, so no process-wide default has to be
//! installed first.

pub mod client;
pub mod issue;
pub mod pem;
pub mod server;

use std::sync::Arc;

/// ALPN protocol of the single-leader replication stream; HTTP clients offer none or `http/1.1`.
pub const PEER_ALPN: &[u8] = b"rc-peer/1";
/// ALPN protocol of HTTP/1.1.
pub const HTTP1_ALPN: &[u8] = b"http/1.1";

/// The crypto provider every configuration here is built with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub use rustls;
pub use tokio_rustls;

/// A credential's fingerprint: the first 16 hex digits of its SHA-256. Shown in status and logs
/// to tell credentials apart; never enough to recover one.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
