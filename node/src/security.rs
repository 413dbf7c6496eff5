//! How nodes reach and prove themselves to each other, shared by both modes.
//!
//! - The admin token: peers and the operator send it as a bearer token (the single-leader
//!   stream sends it in its `Hello`). It is re-read when its file changes, and the files
//!   `<file>.next` and `<file>.previous`, when present, are accepted as well: the operator
//!   rotates a token by first adding the next one everywhere, then sending it, then dropping the
//!   previous one, so no call fails in between.
//! - TLS, when a certificate is configured: every connection the node accepts is TLS (ALPN tells
//!   the replication stream from HTTP), and every connection it opens to a peer verifies the
//!   peer against the cluster CA. The certificate is re-read when its files change.
//! - The peer port: members are known by their client address (`host:port`); when the cluster
//!   has a peer port of its own (`--peer-listen`), peer traffic goes to that port of the host.
//!
//! Reloads run once a second ([`Security::spawn_reloader`]); a file that is missing, too short or
//! does not parse keeps the credential in use and logs why.

mod admin_token;
mod client_tokens;

use std::path::PathBuf;
use std::sync::Arc;

use admin_token::AdminToken;
pub use admin_token::MIN_TOKEN_LEN;
pub use client_tokens::{ClientAccess, ClientTokens};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use rc_tls::rustls::pki_types::ServerName;
use rc_tls::server::{CertFiles, ReloadingCert};
use rc_tls::tokio_rustls::{client::TlsStream, TlsAcceptor, TlsConnector};

const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A connection to a peer: TLS when the cluster uses it.
pub type PeerStream = Either<TcpStream, TlsStream<TcpStream>>;

/// The node's credentials and transport security.
pub struct Security {
    token: AdminToken,
    /// With client authentication: the tokens that may use the client API.
    clients: Option<ClientTokens>,
    tls: Option<NodeTls>,
    /// The cluster's peer port, when peers listen apart from clients: peer traffic to a member
    /// at `host:port` goes to `host:peer_port`.
    peer_port: Option<u16>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.fingerprint())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Where the node's credentials come from.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// The token file (re-read), or a fixed token.
    pub token_file: Option<PathBuf>,
    pub token: Option<String>,
    /// `--client-token-file`: client authentication.
    pub client_tokens: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// See [`Security::peer_address`].
    pub peer_port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: CertFiles,
    pub ca: PathBuf,
    /// The name a peer's certificate must carry when it is dialled by IP.
    pub server_name: String,
}

impl Security {
    pub fn load(cfg: &SecurityConfig) -> anyhow::Result<Arc<Self>> {
        let token = match (&cfg.token_file, &cfg.token) {
            (Some(file), _) => AdminToken::from_file(file.clone())?,
            (None, Some(token)) => AdminToken::fixed(token)?,
            (None, None) => {
                bail!("an admin token is required: set --admin-token-file or RC_ADMIN_TOKEN")
            }
        };
        let tls = cfg.tls.as_ref().map(NodeTls::load).transpose()?;
        let clients = cfg
            .client_tokens
            .clone()
            .map(ClientTokens::from_file)
            .transpose()?;
        Ok(Arc::new(Self {
            token,
            clients,
            tls,
            peer_port: cfg.peer_port,
        }))
    }

    /// A fixed token and no TLS.
    #[cfg(test)]
    pub(crate) fn plain(token: &str) -> anyhow::Result<Arc<Self>> {
        Self::load(&SecurityConfig {
            token: Some(token.to_owned()),
            ..SecurityConfig::default()
        })
    }

    /// The token to send to peers.
    pub fn token(&self) -> Arc<str> {
        self.token.current()
    }

    /// Whether `given` is a token this node accepts now.
    pub fn accepts(&self, given: &str) -> bool {
        self.token.accepts(given)
    }

    /// What a client with `Authorization: Bearer <given>` may do: everything without client
    /// authentication, else what its token grants (`None`: refused). The admin token may do
    /// everything: members forward clients they checked with it, and it can do more anyway.
    pub fn client_access(&self, given: Option<&str>) -> Option<ClientAccess> {
        let Some(clients) = &self.clients else {
            return Some(ClientAccess::ReadWrite);
        };
        let given = given?;
        if self.token.accepts(given) {
            return Some(ClientAccess::ReadWrite);
        }
        clients.access(given)
    }

    /// Whether the client API requires a token.
    pub fn client_auth(&self) -> bool {
        self.clients.is_some()
    }

    /// Accepts TLS on incoming connections, if the node serves TLS.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.as_ref().map(|t| t.acceptor.clone())
    }

    /// `http` or `https`, for URLs of peers.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Where a member known as `address` (`host:port`, its client address) takes peer
    /// traffic: the same host on the cluster's peer port, when peers have their own.
    pub fn peer_address(&self, address: &str) -> String {
        match (self.peer_port, address.rsplit_once(':')) {
            (Some(port), Some((host, _))) => format!("{host}:{port}"),
            _ => address.to_owned(),
        }
    }

    /// The URL of `path` on the peer surface of the member known as `address`.
    pub fn url(&self, address: &str, path: &str) -> String {
        format!("{}://{}{path}", self.scheme(), self.peer_address(address))
    }

    /// The URL of `path` on the client surface of the node at `address` (redirects, forwarding).
    pub fn client_url(&self, address: &str, path: &str) -> String {
        format!("{}://{address}{path}", self.scheme())
    }

    /// An HTTP client for calls to peers: trusts the cluster CA when TLS is on.
    pub fn http_client(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
        let builder = match &self.tls {
            Some(tls) => builder.use_preconfigured_tls(tls.http.clone()),
            None => builder,
        };
        builder.build().context("building the peer HTTP client")
    }

    /// Opens a connection to the single-leader replication stream of the member known as
    /// `address` (on its peer port).
    pub async fn connect_peer(&self, address: &str) -> std::io::Result<PeerStream> {
        let address = self.peer_address(address);
        let address = address.as_str();
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        let name = server_name(address)?;
        Ok(Either::Right(tls.peer.connect(name, tcp).await?))
    }

    /// The credentials in use, as fingerprints.
    pub fn credentials(&self) -> rc_api::Credentials {
        let (token, accepted_tokens) = self.token.fingerprints();
        rc_api::Credentials {
            token,
            accepted_tokens,
            certificate: self
                .tls
                .as_ref()
                .map(|t| t.cert.fingerprint())
                .unwrap_or_default(),
        }
    }

    /// Re-reads the token and certificate files every second, for the life of the process.
    pub fn spawn_reloader(self: &Arc<Self>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_error = None::<String>;
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let result = me.reload();
                let error = result.as_ref().err().map(|e| format!("{e:#}"));
                if error != last_error {
                    if let Some(e) = &error {
                        tracing::warn!(error = %e, "keeping the credentials in use");
                    }
                    last_error = error;
                }
            }
        });
    }

    fn reload(&self) -> anyhow::Result<()> {
        if self.token.reload()? {
            let (token, accepted) = self.token.fingerprints();
            tracing::info!(token = %token, accepted = ?accepted, "admin token files changed; reloaded");
        }
        if let Some(clients) = &self.clients {
            if clients.reload()? {
                tracing::info!(tokens = clients.count(), "client tokens changed; reloaded");
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert.reload_if_changed()? {
                tracing::info!(certificate = %tls.cert.fingerprint(), "TLS certificate changed; serving the new one");
            }
        }
        Ok(())
    }
}

/// The host of `host:port` as a TLS server name (a DNS name or an IP address).
fn server_name(address: &str) -> std::io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{address:?} has no valid TLS server name: {e}"),
        )
    })
}

struct NodeTls {
    cert: Arc<ReloadingCert>,
    acceptor: TlsAcceptor,
    /// Dials the replication stream (ALPN `rc-peer/1`).
    peer: TlsConnector,
    /// For HTTP calls to peers.
    http: rc_tls::rustls::ClientConfig,
}

impl NodeTls {
    fn load(cfg: &TlsConfig) -> anyhow::Result<Self> {
        let cert = Arc::new(ReloadingCert::load(cfg.cert.clone()).context("the TLS certificate")?);
        let acceptor = TlsAcceptor::from(rc_tls::server::server_config(cert.clone())?);
        let ca = std::fs::read(&cfg.ca)
            .with_context(|| format!("reading the CA from {}", cfg.ca.display()))?;
        let http = rc_tls::client::client_config(&ca, &cfg.server_name)?;
        let mut peer = http.clone();
        peer.alpn_protocols = vec![rc_tls::PEER_ALPN.to_vec()];
        Ok(Self {
            cert,
            acceptor,
            peer: TlsConnector::from(Arc::new(peer)),
            http,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peer_traffic_goes_to_the_peer_port_of_the_same_host() {
        let split = Security::load(&SecurityConfig {
            token: Some("a-token-of-twenty-chars".into()),
            peer_port: Some(7401),
            ..SecurityConfig::default()
        })
        .unwrap();
        assert_eq!(
            split.peer_address("orders-1.p.ns.svc:7400"),
            "orders-1.p.ns.svc:7401"
        );
        assert_eq!(split.peer_address("[::1]:7400"), "[::1]:7401");
        assert_eq!(
            split.url("10.0.0.2:7400", "/internal/v1/put"),
            "http://10.0.0.2:7401/internal/v1/put"
        );
        assert_eq!(
            split.client_url("10.0.0.2:7400", "/v1/kv/a"),
            "http://10.0.0.2:7400/v1/kv/a"
        );
        let one_port = Security::plain("a-token-of-twenty-chars").unwrap();
        assert_eq!(one_port.peer_address("10.0.0.2:7400"), "10.0.0.2:7400");
    }

    #[test]
    fn server_names_come_from_the_host() {
        assert_eq!(
            server_name("orders-0.orders-peers.shop.svc:7400").unwrap(),
            ServerName::try_from("orders-0.orders-peers.shop.svc").unwrap()
        );
        assert!(matches!(
            server_name("10.0.0.1:7400").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7400").unwrap(),
            ServerName::IpAddress(_)
        ));
    }
}
