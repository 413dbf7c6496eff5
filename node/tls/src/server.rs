//! A node's TLS server configuration, with a certificate that follows its files.
//!
//! The operator rotates a node's certificate by rewriting the mounted Secret; the kubelet swaps
//! the files in place. [`ReloadingCert::reload_if_changed`] (called periodically by the node)
//! re-reads them and, when they changed and parse, later handshakes get the new certificate.
//! Connections already open keep theirs: nothing in flight fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::{pem, provider, HTTP1_ALPN, PEER_ALPN};

/// The files of a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// Leaf certificate, optionally followed by its chain.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Certificate and key bytes as last loaded, to tell a change from a no-op.
type Loaded = (Vec<u8>, Vec<u8>, Arc<CertifiedKey>);

/// Serves the certificate most recently read from `files`.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Loaded>,
}

impl ReloadingCert {
    /// Reads the files once; an unreadable or invalid certificate is an error at start.
    pub fn load(files: CertFiles) -> anyhow::Result<Self> {
        let loaded = read(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(loaded),
        })
    }

    /// Re-reads the files. `Ok(true)` when a new certificate is now served; an error (a file
    /// half-written, a key that does not match) keeps the previous certificate.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let cert = std::fs::read(&self.files.cert)
            .with_context(|| format!("reading {}", self.files.cert.display()))?;
        let key = std::fs::read(&self.files.key)
            .with_context(|| format!("reading {}", self.files.key.display()))?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == cert && current.1 == key {
                return Ok(false);
            }
        }
        let certified = certified_key(&cert, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (cert, key, certified);
        Ok(true)
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .2
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(files: &CertFiles) -> anyhow::Result<Loaded> {
    let cert = read_file(&files.cert)?;
    let key = read_file(&files.key)?;
    let certified = certified_key(&cert, &key)?;
    Ok((cert, key, certified))
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = pem::certificates(cert_pem).context("the node certificate")?;
    let key = pem::private_key(key_pem)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .context("loading the private key")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("the private key does not belong to the certificate")?;
    Ok(Arc::new(certified))
}

/// The server configuration for a node: no client certificates (peers and the operator
/// authenticate with the cluster token), ALPN for the replication stream and HTTP/1.1.
pub fn server_config(cert: Arc<ReloadingCert>) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![PEER_ALPN.to_vec(), HTTP1_ALPN.to_vec()];
    Ok(Arc::new(config))
}

impl ReloadingCert {
    /// Fingerprint of the leaf certificate served now.
    pub fn fingerprint(&self) -> String {
        self.current()
            .cert
            .first()
            .map(|c| crate::fingerprint(c.as_ref()))
            .unwrap_or_default()
    }
}
