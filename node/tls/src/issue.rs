//! Issuing a cluster's CA and node certificates (ECDSA P-256).
//!
//! The CA's key stays in a Secret only the operator reads; nodes get their certificate, its key
//! and the CA certificate. One node certificate serves every pod of a cluster: it names the
//! per-pod DNS names by wildcard, the Services, and `localhost` (port-forwards).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, PEM-encoded, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// A cluster's CA: its certificate and the key that signs node certificates.
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "replicated.dev");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl ClusterCa {
    /// A new CA named `common_name`, valid for `lifetime` from now.
    pub fn generate(common_name: &str, lifetime: Duration) -> anyhow::Result<Self> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = ca_params(common_name);
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + lifetime).into();
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(ca_params(common_name), key),
        })
    }

    /// The CA stored earlier: its certificate and key, and the name it was generated with.
    pub fn from_pem(common_name: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer: Issuer::new(ca_params(common_name), key),
        })
    }

    /// A server certificate for `dns_names` and `ips`, valid for `lifetime` from now.
    pub fn issue(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generating a node key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        for name in dns_names {
            let name = name
                .clone()
                .try_into()
                .with_context(|| format!("{name:?} is not a valid DNS name"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = not_after.into();
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the node certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// The names a node certificate of cluster `name` in `namespace` carries: every pod through the
/// peers Service (`<pod>.<peers>.<ns>.svc`), the client Service, and `localhost`.
pub fn node_dns_names(name: &str, namespace: &str, peers_service: &str) -> Vec<String> {
    let mut names = Vec::new();
    for suffix in ["svc", "svc.cluster.local"] {
        names.push(format!("*.{peers_service}.{namespace}.{suffix}"));
        names.push(format!("{name}.{namespace}.{suffix}"));
    }
    names.push(format!("{name}.{namespace}"));
    names.push(name.to_owned());
    names.push("localhost".to_owned());
    names
}

/// The name a client checks when it dials a node of the cluster by IP.
pub fn cluster_server_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc")
}
