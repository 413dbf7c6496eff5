//! (I/O: TCP from the host to the pod's address over the bridge) `httpGet` and `tcpSocket`
//! probes, as the kubelet runs them: `httpGet` over HTTP or HTTPS (`scheme: HTTPS`: TLS 1.2/1.3
//! without verifying the server's certificate, as the kubelet does; see `tls.rs`), `host`
//! defaulting to the pod IP, `httpHeaders` (a `Host` among them replaces the default one), any
//! status from 200 to 399 passing, each attempt bounded by `timeoutSeconds`. Redirects are not
//! followed: a 3xx passes as it is. `exec` and `grpc` probes are not supported and always fail,
//! with a message saying so (so a pod that needs them never turns Ready by accident).

mod tls;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probe timing with the Kubernetes defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, d: i32| Duration::from_secs(u64::try_from(v.unwrap_or(d)).unwrap_or(0));
    let count = |v: Option<i32>, d: i32| u32::try_from(v.unwrap_or(d)).unwrap_or(1).max(1);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: count(p.success_threshold, 1),
        failure_threshold: count(p.failure_threshold, 3),
    }
}

/// One probe attempt: `Ok(())` on success, else why it failed.
pub async fn check(probe: &Probe, container: &Container, pod_ip: &str) -> Result<(), String> {
    let t = timing(probe);
    match tokio::time::timeout(t.timeout, attempt(probe, container, pod_ip)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {:?}", t.timeout)),
    }
}

async fn attempt(probe: &Probe, container: &Container, pod_ip: &str) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        return http_get(http, container, pod_ip).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = target_host(tcp.host.as_deref(), pod_ip);
        let port = resolve_port(&tcp.port, container)?;
        return TcpStream::connect((host, port))
            .await
            .map(drop)
            .map_err(|e| format!("connect {host}:{port}: {e}"));
    }
    Err("only httpGet and tcpSocket probes are supported by the process kubelet".into())
}

/// An `httpGet` probe over HTTP/1.1, or over TLS for `scheme: HTTPS` (certificate not verified,
/// as by the kubelet: `tls.rs`): any status from 200 to 399 passes. Redirects are not
/// followed (a 3xx passes as such).
async fn http_get(http: &HTTPGetAction, container: &Container, pod_ip: &str) -> Result<(), String> {
    let https = match http.scheme.as_deref() {
        None | Some("") => false,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) => return Err(format!("unsupported probe scheme {s:?}")),
    };
    let host = target_host(http.host.as_deref(), pod_ip);
    let port = resolve_port(&http.port, container)?;
    let request = http_request(http, host, port)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let code = if https {
        let tls = tls::connect(tcp, host)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
        exchange(tls, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The request: `GET path`, the probe's `httpHeaders`, and the kubelet's `Host`, `User-Agent`
/// and `Accept` unless the probe sets its own.
fn http_request(http: &HTTPGetAction, host: &str, port: u16) -> Result<String, String> {
    let path = http
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let headers = http.http_headers.as_deref().unwrap_or(&[]);
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let defaults = [
        ("Host", authority.as_str()),
        ("User-Agent", "kube-probe/1.37"),
        ("Accept", "*/*"),
    ];
    for (name, value) in defaults.into_iter().filter(|(n, _)| !has(n)) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if [&h.name, &h.value].iter().any(|s| s.contains(['\r', '\n'])) || h.name.is_empty() {
            return Err(format!("invalid probe header {:?}", h.name));
        }
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("Connection: close\r\n\r\n");
    Ok(request)
}

/// Sends the request and reads the status code of the answer.
async fn exchange<S>(mut stream: S, request: &str) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending request: {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("reading response: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    match buf.first() {
        _ if len == 0 => return Err("connection closed without a response".into()),
        // A TLS record (alert or handshake) in answer to plain HTTP.
        Some(0x15 | 0x16) => {
            return Err(
                "the server answered with TLS, not HTTP (does the probe need scheme HTTPS?)".into(),
            )
        }
        _ => {}
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {head:?}"))
}

/// The probe's `host`, or the pod's address when it names none.
fn target_host<'a>(host: Option<&'a str>, pod_ip: &'a str) -> &'a str {
    host.filter(|h| !h.is_empty()).unwrap_or(pod_ip)
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("no container port named {name:?}"))?,
        },
    };
    u16::try_from(number).map_err(|_| format!("invalid port {number}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::ServerConfig;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_rustls::TlsAcceptor;

    fn container() -> Container {
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("node".into()),
                container_port: 7400,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c = container();
        assert_eq!(
            resolve_port(&IntOrString::String("node".into()), &c),
            Ok(7400)
        );
        assert_eq!(resolve_port(&IntOrString::Int(8080), &c), Ok(8080));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
    }

    fn probe(scheme: &str, port: u16, path: &str, headers: Vec<HTTPHeader>) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                scheme: Some(scheme.into()),
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(port)),
                http_headers: Some(headers),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        }
    }

    /// An HTTPS server on 127.0.0.1 with a self-signed certificate for another name
    /// (testdata/probe-self-signed.*, a throwaway test key): answers `GET /<code>` with that
    /// status, and sends the head of every request it reads to the channel.
    async fn tls_server() -> (u16, mpsc::UnboundedReceiver<String>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
        let certs = CertificateDer::pem_file_iter(format!("{dir}/probe-self-signed.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/probe-self-signed.key")).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        let n = tls.read(&mut buf).await.unwrap();
                        assert!(n > 0, "request cut short");
                        head.extend_from_slice(&buf[..n]);
                    }
                    let head = String::from_utf8(head).unwrap();
                    let code = head.split_whitespace().nth(1).unwrap()[1..].to_owned();
                    let _ = tx.send(head);
                    let answer = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                    tls.write_all(answer.as_bytes()).await.unwrap();
                    tls.shutdown().await.unwrap();
                });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn https_probe_accepts_200_and_rejects_500_from_a_self_signed_server() {
        let (port, mut heads) = tls_server().await;
        let c = container();
        let header = HTTPHeader {
            name: "X-Probe".into(),
            value: "yes".into(),
        };
        let ok = probe("HTTPS", port, "/200", vec![header]);
        assert_eq!(check(&ok, &c, "127.0.0.1").await, Ok(()));
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /200 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(head.contains("X-Probe: yes\r\n"), "{head}");

        let failing = probe("HTTPS", port, "/500", vec![]);
        let err = check(&failing, &c, "127.0.0.1").await.unwrap_err();
        assert_eq!(err, "HTTP probe failed with statuscode: 500");
    }

    #[tokio::test]
    async fn https_probe_says_why_when_nothing_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = check(
            &probe("HTTPS", port, "/", vec![]),
            &container(),
            "127.0.0.1",
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(&format!("connect 127.0.0.1:{port}: ")) && err.contains("refused"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn http_probe_against_a_tls_port_fails_and_the_reverse_too() {
        let (tls_port, _heads) = tls_server().await;
        let c = container();
        let err = check(&probe("HTTP", tls_port, "/200", vec![]), &c, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.contains("answered with TLS"), "{err}");

        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_port = plain.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = plain.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        });
        let err = check(&probe("HTTPS", plain_port, "/", vec![]), &c, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.starts_with("TLS handshake with 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let err = check(
            &probe("HTTPS", port, "/", vec![]),
            &container(),
            "127.0.0.1",
        )
        .await
        .unwrap_err();
        assert_eq!(err, "timed out after 1s");
    }

    #[test]
    fn probe_headers_replace_the_defaults_of_the_same_name() {
        let mut action = HTTPGetAction {
            path: Some("/readyz".into()),
            http_headers: Some(vec![HTTPHeader {
                name: "host".into(),
                value: "node-0.example".into(),
            }]),
            ..HTTPGetAction::default()
        };
        let request = http_request(&action, "10.0.0.5", 7400).unwrap();
        assert_eq!(
            request,
            "GET /readyz HTTP/1.1\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\n\
             host: node-0.example\r\nConnection: close\r\n\r\n"
        );
        action.http_headers = Some(vec![HTTPHeader {
            name: "X-Bad".into(),
            value: "a\r\nInjected: 1".into(),
        }]);
        assert!(http_request(&action, "10.0.0.5", 7400).is_err());
        action.http_headers = None;
        assert!(http_request(&action, "fd00::5", 7400)
            .unwrap()
            .contains("Host: [fd00::5]:7400\r\n"));
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_and_rejects_5xx() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 503 No\r\n\r\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(i32::from(port)),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        let c = container();
        assert_eq!(check(&probe, &c, "127.0.0.1").await, Ok(()));
        assert!(check(&probe, &c, "127.0.0.1")
            .await
            .unwrap_err()
            .contains("503"));
    }
}
