//! Clients of a cluster's nodes: trust the cluster CA, check the cluster's name.
//!
//! Certificates are issued before pods have IPs, so they carry DNS names only (the per-pod
//! names, the Services, `localhost`). A client that dials a pod IP has no name to check; this
//! verifier checks the cluster's Service name then, which every node certificate of the cluster
//! carries. Since the CA is the cluster's own and signs nothing but that cluster's nodes, the
//! chain is what proves "a node of this cluster"; the name check keeps a certificate of the same
//! CA that was issued for something else from passing.

use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::{pem, provider};

/// Trusts the CA certificates in `ca_pem`; connections by IP are checked against `cluster_name`
/// (for example `orders.shop.svc`).
pub fn client_config(ca_pem: &[u8], cluster_name: &str) -> anyhow::Result<ClientConfig> {
    let verifier = ClusterVerifier::new(ca_pem, cluster_name)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// WebPKI verification against the cluster CA, with an IP server name replaced by the cluster's
/// name.
#[derive(Debug)]
pub struct ClusterVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cluster_name: ServerName<'static>,
}

impl ClusterVerifier {
    pub fn new(ca_pem: &[u8], cluster_name: &str) -> anyhow::Result<Self> {
        let roots = pem::roots(ca_pem)?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("building the certificate verifier")?;
        let cluster_name = ServerName::try_from(cluster_name.to_owned())
            .with_context(|| format!("{cluster_name:?} is not a valid server name"))?;
        Ok(Self {
            inner,
            cluster_name,
        })
    }
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match server_name {
            ServerName::IpAddress(_) => &self.cluster_name,
            other => other,
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
