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
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::{pem, provider};

/// Trusts the CA certificates in `ca_pem`; connections by IP are checked against `cluster_name`
/// (for example `orders.shop.svc`).
pub fn client_config(ca_pem: &[u8], cluster_name: &str) -> anyhow::Result<ClientConfig> {
    let roots = pem::roots(ca_pem)?;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .context("building the certificate verifier")?;
    let cluster_name = ServerName::try_from(cluster_name.to_owned())
        .with_context(|| format!("{cluster_name:?} is not a valid server name"))?;
    with_trust(Trust::Cluster {
        webpki,
        cluster_name,
    })
}

/// Accepts any server certificate (issuer, names, validity) but still checks that the server
/// signs the handshake with the key of the certificate it presents: what the kubelet's HTTPS
/// probes do (`InsecureSkipVerify`), for the process kubelet. Never for clients of the data.
#[cfg(feature = "probe")]
pub fn probe_client_config() -> anyhow::Result<ClientConfig> {
    with_trust(Trust::AnyCertificate)
}

fn with_trust(trust: Trust) -> anyhow::Result<ClientConfig> {
    let provider = provider();
    let verifier = ServerVerifier {
        trust,
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Which server certificates a client accepts.
#[derive(Debug)]
enum Trust {
    /// WebPKI verification against the cluster CA, with an IP server name replaced by the
    /// cluster's name.
    Cluster {
        webpki: Arc<WebPkiServerVerifier>,
        cluster_name: ServerName<'static>,
    },
    #[cfg(feature = "probe")]
    AnyCertificate,
}

/// The certificate checked per [`Trust`]; the handshake signatures always, with the provider's
/// algorithms.
#[derive(Debug)]
struct ServerVerifier {
    trust: Trust,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Cluster {
                webpki,
                cluster_name,
            } => {
                let name = match server_name {
                    ServerName::IpAddress(_) => cluster_name,
                    other => other,
                };
                webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
            #[cfg(feature = "probe")]
            Trust::AnyCertificate => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
