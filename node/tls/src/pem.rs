//! PEM files to rustls types, with errors that name what was wrong.

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Every certificate in `pem` (a leaf first, then its chain), at least one.
pub fn certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing PEM certificates")?;
    if certs.is_empty() {
        bail!("no PEM certificate found");
    }
    Ok(certs)
}

/// The one private key in `pem` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).context("parsing the PEM private key")
}

/// A root store holding every CA certificate in `pem` (a bundle during a CA change).
pub fn roots(pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem).context("reading the CA bundle")? {
        roots.add(cert).context("adding a CA certificate")?;
    }
    Ok(roots)
}
