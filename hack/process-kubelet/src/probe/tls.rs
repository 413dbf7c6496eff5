//! TLS for HTTPS probes, as the kubelet does them: the server's certificate is not verified (the
//! kubelet probes with `InsecureSkipVerify`: a pod's serving certificate names its Service, not
//! the pod IP, and is often issued by a CA the node does not know). The handshake itself is
//! still checked: the server must sign it with the key of the certificate it presents (rc-tls's
//! probe client, with the `ring` provider's algorithms). Offers HTTP/1.1 by ALPN (the prober
//! speaks only that); no SNI when the host is an IP address.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The TLS handshake on a connected socket, with `host` as the server name.
pub async fn connect(tcp: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config()?;
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| format!("server name {host:?}: {e}"))?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// One client configuration for every probe.
fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build_config).clone()
}

fn build_config() -> Result<Arc<ClientConfig>, String> {
    let mut config = rc_tls::client::probe_client_config().map_err(|e| format!("{e:#}"))?;
    config.alpn_protocols = vec![rc_tls::HTTP1_ALPN.to_vec()];
    Ok(Arc::new(config))
}
