//! Real handshakes on loopback: the cluster CA is trusted, a foreign one is not, an IP is
//! checked against the cluster's name, and a rewritten certificate is served without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rc_tls::client::client_config;
use rc_tls::issue::{cluster_server_name, node_dns_names, ClusterCa};
use rc_tls::rustls::pki_types::ServerName;
use rc_tls::server::{server_config, CertFiles, ReloadingCert};
use rc_tls::tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DAY: Duration = Duration::from_secs(86_400);

fn new_ca(name: &str) -> ClusterCa {
    ClusterCa::generate(name, 10 * DAY).unwrap()
}

fn write_cert(dir: &std::path::Path, ca: &ClusterCa, cluster: &str) -> CertFiles {
    let issued = ca
        .issue(
            cluster,
            &node_dns_names(cluster, "shop", &format!("{cluster}-peers")),
            &[],
            DAY,
        )
        .unwrap();
    let files = CertFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&files.cert, issued.cert_pem).unwrap();
    std::fs::write(&files.key, issued.key_pem).unwrap();
    files
}

/// Echo server: answers each connection with one byte, as many times as `accept` is polled.
async fn serve(cert: Arc<ReloadingCert>) -> std::net::SocketAddr {
    let acceptor = TlsAcceptor::from(server_config(cert).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"k").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Handshake as a client trusting `ca_pem`, dialling `name`; returns the server's leaf.
async fn dial(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    cluster_name: &str,
    name: &str,
) -> Result<Vec<u8>, String> {
    let cfg = client_config(ca_pem.as_bytes(), cluster_name).map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(leaf)
}

#[tokio::test]
async fn the_cluster_ca_is_trusted_by_ip_and_name_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("orders CA");
    let files = write_cert(dir.path(), &ca, "orders");
    let addr = serve(Arc::new(ReloadingCert::load(files).unwrap())).await;
    let svc = cluster_server_name("orders", "shop");

    // By IP: checked against the cluster's name, which the certificate carries.
    dial(addr, &ca.cert_pem, &svc, "127.0.0.1").await.unwrap();
    // By a pod's DNS name (wildcard) and by localhost.
    dial(addr, &ca.cert_pem, &svc, "orders-1.orders-peers.shop.svc")
        .await
        .unwrap();
    dial(addr, &ca.cert_pem, &svc, "localhost").await.unwrap();

    // Another cluster's CA: refused.
    let foreign = new_ca("payments CA");
    let err = dial(addr, &foreign.cert_pem, &svc, "127.0.0.1")
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
    // The right CA but a name the certificate does not carry: refused.
    let err = dial(addr, &ca.cert_pem, "payments.shop.svc", "127.0.0.1")
        .await
        .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
    let err = dial(addr, &ca.cert_pem, &svc, "orders-1.other-peers.shop.svc")
        .await
        .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid for name"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rewritten_certificate_is_served_after_reload_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("orders CA");
    let files = write_cert(dir.path(), &ca, "orders");
    let cert = Arc::new(ReloadingCert::load(files.clone()).unwrap());
    let addr = serve(cert.clone()).await;
    let svc = cluster_server_name("orders", "shop");
    let first = dial(addr, &ca.cert_pem, &svc, "127.0.0.1").await.unwrap();

    assert!(!cert.reload_if_changed().unwrap(), "nothing changed yet");
    write_cert(dir.path(), &ca, "orders");
    assert!(cert.reload_if_changed().unwrap());
    let second = dial(addr, &ca.cert_pem, &svc, "127.0.0.1").await.unwrap();
    assert_ne!(first, second, "the new certificate is served");

    // A key that does not match (the kubelet mid-swap, or a bad Secret) keeps the old one.
    let other = ca.issue("x", &["x".into()], &[], DAY).unwrap();
    std::fs::write(&files.key, other.key_pem).unwrap();
    assert!(cert.reload_if_changed().is_err());
    let third = dial(addr, &ca.cert_pem, &svc, "127.0.0.1").await.unwrap();
    assert_eq!(second, third);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("orders CA");
    let issued = ca
        .issue(
            "orders",
            &node_dns_names("orders", "shop", "orders-peers"),
            &[],
            Duration::ZERO,
        )
        .unwrap();
    let files = CertFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    std::fs::write(&files.cert, issued.cert_pem).unwrap();
    std::fs::write(&files.key, issued.key_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let addr = serve(Arc::new(ReloadingCert::load(files).unwrap())).await;
    let err = dial(
        addr,
        &ca.cert_pem,
        &cluster_server_name("orders", "shop"),
        "127.0.0.1",
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
}
