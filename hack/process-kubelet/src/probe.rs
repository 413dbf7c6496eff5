//! (I/O: TCP from the host to the pod's address over the bridge) `httpGet` and `tcpSocket`
//! probes. HTTPS, `exec` and `grpc` probes are not supported and always fail, with a message
//! saying so (so a pod that needs them never turns Ready by accident).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// An `httpGet` probe over plain HTTP/1.1: any status from 200 to 399 passes.
async fn http_get(http: &HTTPGetAction, container: &Container, pod_ip: &str) -> Result<(), String> {
    if http
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        return Err("HTTPS probes are not supported by the process kubelet".into());
    }
    let host = target_host(http.host.as_deref(), pod_ip);
    let port = resolve_port(&http.port, container)?;
    let path = http.path.as_deref().unwrap_or("/");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in http.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    stream
        .write_all(request.as_bytes())
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
    let head = String::from_utf8_lossy(&buf[..len]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {head:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
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
    use k8s_openapi::api::core::v1::ContainerPort;

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
