//! `materialize` and `refresh` against a fake API server (axum on 127.0.0.1) that serves one
//! Secret, which the test rotates, trims and deletes, and TokenRequests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
use k8s_openapi::api::core::v1::{
    KeyToPath, PodSpec, ProjectedVolumeSource, SecretProjection, SecretVolumeSource,
    ServiceAccountTokenProjection, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use serde_json::{json, Value};

use super::*;

#[derive(Default)]
struct FakeApi {
    /// The data of Secret `ns/node-tls`; `None`: deleted.
    secret: Option<BTreeMap<String, String>>,
    tokens_issued: u32,
}

type Shared = Arc<Mutex<FakeApi>>;

async fn get_secret(
    State(api): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let data = api.lock().unwrap().secret.clone();
    match data.filter(|_| ns == "ns" && name == "node-tls") {
        Some(data) => {
            let data: BTreeMap<String, ByteString> = data
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect();
            let secret = k8s_openapi::api::core::v1::Secret {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..Default::default()
            };
            (StatusCode::OK, Json(serde_json::to_value(secret).unwrap()))
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("secrets \"{name}\" not found"), "reason": "NotFound",
                "details": {"name": name, "kind": "secrets"}, "code": 404
            })),
        ),
    }
}

async fn token_request(State(api): State<Shared>) -> Json<TokenRequest> {
    let n = {
        let mut api = api.lock().unwrap();
        api.tokens_issued += 1;
        api.tokens_issued
    };
    let expires = Timestamp::now()
        .checked_add(SignedDuration::from_secs(3600))
        .unwrap();
    Json(TokenRequest {
        status: Some(TokenRequestStatus {
            token: Some(format!("token-{n}")),
            expiration_timestamp: Some(Time(expires)),
        }),
        ..TokenRequest::default()
    })
}

async fn fake_api(api: Shared) -> Client {
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
        .route(
            "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            post(token_request),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    Client::try_from(config).unwrap()
}

/// Volume `certs`: the whole Secret; volume `api`: a token and the Secret's `ca.crt`.
fn pod() -> Pod {
    let secret = Volume {
        name: "certs".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some("node-tls".into()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let projected = Volume {
        name: "api".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "node-tls".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..KeyToPath::default()
                        }]),
                        ..SecretProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            volumes: Some(vec![secret, projected]),
            service_account_name: Some("sa".into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn read(dir: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(rel)).ok()
}

fn mtime(dir: &Path, rel: &str) -> SystemTime {
    std::fs::metadata(dir.join(rel))
        .unwrap()
        .modified()
        .unwrap()
}

fn secret(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Each volume's outcome: `Ok(written, removed)` as strings, or the error.
fn summary(outcomes: Vec<VolumeRefresh>) -> BTreeMap<String, Result<String, String>> {
    outcomes
        .into_iter()
        .map(|(name, r)| {
            let r = r
                .map(|a| format!("written {:?} removed {:?}", a.written, a.removed))
                .map_err(|e| format!("{e:#}"));
            (name, r)
        })
        .collect()
}

#[tokio::test]
async fn refresh_follows_a_rotated_trimmed_and_deleted_secret() {
    let api = Shared::default();
    api.lock().unwrap().secret = secret(&[("tls.crt", "c1"), ("tls.key", "k1"), ("ca.crt", "ca")]);
    let client = fake_api(api.clone()).await;
    let pod_dir = std::env::temp_dir().join(format!(
        "rc-process-kubelet-refresh-{}-{:?}",
        std::process::id(),
        SystemTime::now()
    ));
    let pod = pod();
    let cx = VolumeContext {
        client: &client,
        pod: &pod,
        pod_dir: &pod_dir,
        pod_ip: "10.0.0.2",
        host_ip: "10.0.0.1",
    };
    let (certs, proj) = (pod_dir.join("volumes/certs"), pod_dir.join("volumes/api"));

    let volumes = materialize(&cx).await.unwrap();
    assert_eq!(read(&certs, "tls.key").as_deref(), Some("k1"));
    assert_eq!(read(&proj, "token").as_deref(), Some("token-1"));
    let renew = volumes.refresh_after.unwrap();
    assert!(renew > Duration::from_secs(2700) && renew <= Duration::from_secs(2880));
    let mut written = volumes.written;

    // Nothing changed: nothing rewritten, no token requested.
    let before = (mtime(&certs, "tls.key"), mtime(&proj, "ca.crt"));
    std::thread::sleep(Duration::from_millis(20));
    let (outcomes, renew) = refresh(&cx, &mut written, Tokens::Keep).await;
    let unchanged = Ok("written [] removed []".to_owned());
    assert_eq!(
        summary(outcomes),
        BTreeMap::from([
            ("api".to_owned(), unchanged.clone()),
            ("certs".to_owned(), unchanged.clone())
        ])
    );
    assert_eq!(renew, None);

    // Rotated and trimmed: the new certificate, no key any more; ca.crt untouched.
    api.lock().unwrap().secret = secret(&[("tls.crt", "c2"), ("ca.crt", "ca")]);
    let (outcomes, _) = refresh(&cx, &mut written, Tokens::Keep).await;
    let certs_changed = Ok(r#"written ["tls.crt"] removed ["tls.key"]"#.to_owned());
    assert_eq!(
        summary(outcomes),
        BTreeMap::from([
            ("api".to_owned(), unchanged.clone()),
            ("certs".to_owned(), certs_changed)
        ])
    );
    assert_eq!(read(&certs, "tls.crt").as_deref(), Some("c2"));
    assert_eq!(read(&certs, "tls.key"), None);
    assert_eq!(mtime(&proj, "ca.crt"), before.1);
    let mode = std::fs::metadata(certs.join("tls.crt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o440);

    // Deleted: an error per volume, and every file stays as it was.
    api.lock().unwrap().secret = None;
    let (outcomes, _) = refresh(&cx, &mut written, Tokens::Keep).await;
    for (name, result) in summary(outcomes) {
        let err = result.unwrap_err();
        assert!(
            err.contains(r#"secret "node-tls" not found"#),
            "{name}: {err}"
        );
    }
    assert_eq!(read(&certs, "tls.crt").as_deref(), Some("c2"));
    assert_eq!(read(&proj, "ca.crt").as_deref(), Some("ca"));
    assert_eq!(read(&proj, "token").as_deref(), Some("token-1"));

    // Back, with tokens due: a new token, renewal scheduled again.
    api.lock().unwrap().secret = secret(&[("tls.crt", "c2"), ("ca.crt", "ca")]);
    let (outcomes, renew) = refresh(&cx, &mut written, Tokens::Request).await;
    assert_eq!(
        summary(outcomes)["api"],
        Ok(r#"written ["token"] removed []"#.to_owned())
    );
    assert_eq!(read(&proj, "token").as_deref(), Some("token-2"));
    assert!(renew.is_some_and(|r| r > Duration::from_secs(2700)));
    assert_eq!(api.lock().unwrap().tokens_issued, 2);
    let _ = std::fs::remove_dir_all(&pod_dir);
}
