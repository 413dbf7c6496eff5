//! Controller tests: the real `reconcile` against a mocked API server (kube-rs's tower-test
//! pattern). Each test scripts the API server's side request by request, so the order of the
//! pipeline's calls is part of what is tested. Interim: the end-to-end suite on the local control
//! plane supersedes these.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use crate::controller::observe::NodeAddressing;
use crate::metrics::Metrics;

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use rc_api::{EpochRequest, EpochResponse, FollowRequest, NodeStatus, PromoteRequest};
use serde_json::{json, Value};
use tower_test::mock::{Handle, SendResponse};

use super::*;
use crate::crd::{Mode, ReplicatedCluster};
use crate::node_client::{NodeAccess, NodeAdmin, NodeError};

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// Node admin API stand-in: answers `status` from a table, by address.
#[derive(Default)]
struct FakeNodes {
    statuses: HashMap<String, NodeStatus>,
}

impl NodeAdmin for FakeNodes {
    fn status<'a>(
        &'a self,
        address: &'a str,
        _auth: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        let answer = self
            .statuses
            .get(address)
            .cloned()
            .ok_or_else(|| NodeError::Status {
                address: address.to_owned(),
                status: 503,
                body: "down".into(),
            });
        Box::pin(async move { answer })
    }
    fn epoch<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
        _: EpochRequest,
    ) -> BoxFuture<'a, Result<EpochResponse, NodeError>> {
        unimplemented!("not used by reconcile")
    }
    fn promote<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
        _: PromoteRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        unimplemented!("not used by reconcile")
    }
    fn follow<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
        _: FollowRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        unimplemented!("not used by reconcile")
    }
    fn voters<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
        _: rc_api::VotersRequest,
    ) -> BoxFuture<'a, Result<rc_api::VoterConfig, NodeError>> {
        unimplemented!("not used by these tests")
    }
    fn ring<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
        _: &'a rc_api::Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        unimplemented!("not used by these tests")
    }
    fn decommission<'a>(
        &'a self,
        _: &'a str,
        _: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        unimplemented!("not used by these tests")
    }
    fn repair<'a>(&'a self, _: &'a str, _: &'a NodeAccess) -> BoxFuture<'a, Result<(), NodeError>> {
        unimplemented!("not used by these tests")
    }
}

/// The fixture cluster without TLS: these tests follow the plain-text request sequence (the
/// TLS one, with its certificate writes, has its own test).
fn cluster(mode: Mode) -> ReplicatedCluster {
    let mut cluster = crate::controller::fixtures::cluster(mode);
    cluster.spec.tls.enabled = false;
    cluster
}

fn context(nodes: FakeNodes) -> (Arc<Context>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rc-operator".into(),
            instance: None,
        },
    );
    let ctx = Context::new(
        client,
        recorder,
        Arc::new(nodes),
        Arc::new(Metrics::default()),
        NodeAddressing::PodIp,
    );
    (Arc::new(ctx), handle)
}

/// Waits for the next request, checks its method and path, and returns its JSON body.
async fn expect(
    server: &mut ApiServer,
    method: Method,
    path: &str,
) -> (Value, SendResponse<Response<Body>>) {
    let (request, send) = server
        .next_request()
        .await
        .unwrap_or_else(|| panic!("expected {method} {path}, got nothing"));
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected request order"
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn reply(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn not_found(send: SendResponse<Response<Body>>) {
    reply(
        send,
        404,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
    );
}

fn empty_list(send: SendResponse<Response<Body>>, kind: &str) {
    reply(
        send,
        200,
        &json!({ "kind": kind, "apiVersion": "v1", "metadata": {}, "items": [] }),
    );
}

/// Answers a server-side apply by echoing the applied object, as the API server would.
async fn expect_apply(server: &mut ApiServer, path: &str) -> Value {
    let (body, send) = expect(server, Method::PATCH, path).await;
    reply(send, 200, &body);
    body
}

fn guard(cluster: ReplicatedCluster) -> Arc<DeserializeGuard<ReplicatedCluster>> {
    Arc::new(DeserializeGuard(Ok(cluster)))
}

const NS: &str = "/api/v1/namespaces/shop";

/// Answers the reconcile's first request: it reads the cluster afresh (the cached copy may
/// lag behind its own last status write).
async fn read_fresh(server: &mut ApiServer, cluster: &ReplicatedCluster) {
    let (_, send) = expect(
        server,
        Method::GET,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders",
    )
    .await;
    reply(send, 200, &serde_json::to_value(cluster).unwrap());
}

/// Answers the observe step's reads for a cluster that has nothing yet, in the order they come:
/// no admin Secret, no StatefulSet, no pods.
async fn observe_nothing_yet(server: &mut ApiServer) {
    observe_nothing_of(server, &["orders-admin"]).await;
}

/// The same, for a cluster that also reads the Secrets `secrets` (with TLS: the CA's and the
/// node certificate's), none of which exists.
async fn observe_nothing_of(server: &mut ApiServer, secrets: &[&str]) {
    for secret in secrets {
        let (_, send) = expect(server, Method::GET, &format!("{NS}/secrets/{secret}")).await;
        not_found(send);
    }
    let (_, send) = expect(
        server,
        Method::GET,
        "/apis/apps/v1/namespaces/shop/statefulsets/orders",
    )
    .await;
    not_found(send);
    let (_, send) = expect(server, Method::GET, &format!("{NS}/pods")).await;
    empty_list(send, "PodList");
}

/// The API server's answer to a status apply: the object with the applied status.
fn stored(status: &Value) -> Value {
    json!({
        "apiVersion": "replicated.dev/v1alpha1", "kind": "ReplicatedCluster",
        "metadata": { "name": "orders", "namespace": "shop" },
        "spec": { "mode": "SingleLeader" },
        "status": status,
    })
}

/// Answers a new single-leader cluster's writes, in their order: the admin Secret created, the
/// ConfigMap, the three Services, the StatefulSet and the PDB applied, the AdminSecretCreated
/// Event. Returns the Secret, the ConfigMap and the StatefulSet as sent.
async fn expect_new_objects(server: &mut ApiServer) -> (Value, Value, Value) {
    let (secret, send) = expect(server, Method::POST, &format!("{NS}/secrets")).await;
    reply(send, 201, &secret);
    let config = expect_apply(server, &format!("{NS}/configmaps/orders-config")).await;
    for service in ["orders-peers", "orders-leader", "orders-replicas"] {
        expect_apply(server, &format!("{NS}/services/{service}")).await;
    }
    let sts = expect_apply(server, "/apis/apps/v1/namespaces/shop/statefulsets/orders").await;
    expect_apply(
        server,
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders",
    )
    .await;
    let (event, send) = expect(
        server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["reason"], "AdminSecretCreated");
    reply(send, 201, &event);
    (secret, config, sts)
}

#[tokio::test]
async fn a_new_cluster_gets_a_secret_its_objects_in_order_and_a_pending_status() {
    let (ctx, mut server) = context(FakeNodes::default());
    let reconciling = tokio::spawn(reconcile(guard(cluster(Mode::SingleLeader)), ctx));
    read_fresh(&mut server, &cluster(Mode::SingleLeader)).await;

    observe_nothing_yet(&mut server).await;

    let (secret, config, sts) = expect_new_objects(&mut server).await;
    let token = secret["stringData"]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(config["data"]["RC_MODE"], "single-leader");
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");

    let (patch, send) = expect(
        &mut server,
        Method::PATCH,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders/status",
    )
    .await;
    assert_eq!(patch["status"]["phase"], "Pending");
    assert_eq!(patch["status"]["observedGeneration"], 1);
    let types: Vec<&str> = patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "Available", "Progressing", "Degraded"]);
    reply(
        send,
        200,
        &json!({ "apiVersion": "replicated.dev/v1alpha1", "kind": "ReplicatedCluster", "metadata": { "name": "orders", "namespace": "shop" }, "spec": { "mode": "SingleLeader" }, "status": patch["status"] }),
    );

    let action = reconciling.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(REFRESH_UNHEALTHY));
}

#[tokio::test]
async fn server_side_apply_uses_one_forced_field_manager() {
    let (ctx, mut server) = context(FakeNodes::default());
    let reconciling = tokio::spawn(reconcile(guard(cluster(Mode::Leaderless)), ctx));
    read_fresh(&mut server, &cluster(Mode::Leaderless)).await;
    for _ in 0..2 {
        let (_, send) = server.next_request().await.unwrap();
        not_found(send);
    }
    let (_, send) = expect(&mut server, Method::GET, &format!("{NS}/pods")).await;
    empty_list(send, "PodList");
    let (secret, send) = expect(&mut server, Method::POST, &format!("{NS}/secrets")).await;
    reply(
        send,
        409,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists" }),
    );
    let _ = secret;
    let (request, send) = server.next_request().await.unwrap();
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(
        query.contains("fieldManager=rc-operator") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    reply(
        send,
        500,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd is sad" }),
    );
    // A failed apply is a transient error for the error policy, not a panic: a Warning Event
    // and Degraded (ReconcileFailed) in the status say so.
    let (event, send) = expect(
        &mut server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["reason"], "ReconcileFailed");
    assert_eq!(event["type"], "Warning");
    reply(send, 201, &event);
    let (patch, send) = expect(
        &mut server,
        Method::PATCH,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders/status",
    )
    .await;
    let degraded = patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("ReconcileFailed"))
    );
    assert!(degraded["message"]
        .as_str()
        .unwrap()
        .contains("etcd is sad"));
    reply(
        send,
        200,
        &json!({ "apiVersion": "replicated.dev/v1alpha1", "kind": "ReplicatedCluster", "metadata": { "name": "orders", "namespace": "shop" }, "spec": { "mode": "Leaderless" }, "status": patch["status"] }),
    );
    let error = reconciling.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, Error::Apply { kind, name, .. } if kind == "ConfigMap" && name == "orders-config"),
        "{error}"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_with_an_event_and_a_condition_and_nothing_is_applied() {
    let (ctx, mut server) = context(FakeNodes::default());
    let mut invalid = cluster(Mode::SingleLeader);
    invalid.spec.replicas = 0;
    let reconciling = tokio::spawn(reconcile(guard(invalid.clone()), ctx));
    read_fresh(&mut server, &invalid).await;
    observe_nothing_yet(&mut server).await;
    let (event, send) = expect(
        &mut server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    assert_eq!(event["note"], "spec.replicas must be at least 1, got 0");
    reply(send, 201, &event);
    let (patch, send) = expect(
        &mut server,
        Method::PATCH,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders/status",
    )
    .await;
    assert_eq!(patch["status"]["phase"], "Invalid");
    let degraded = patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("InvalidSpec"))
    );
    reply(send, 200, &stored(&patch["status"]));
    assert_eq!(reconciling.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_healthy_cluster_whose_status_is_current_is_applied_but_its_status_not_rewritten() {
    let mut nodes = FakeNodes::default();
    let mut leader =
        crate::controller::status::tests::node_status("orders-0", rc_api::Role::Leader, 2);
    leader.stats.count = 0;
    // One member, one voter.
    if let Some(config) = leader.single_leader_mut().and_then(|s| s.config.as_mut()) {
        config.voters.truncate(1);
    }
    nodes.statuses.insert("10.0.0.1:7400".into(), leader);
    let (ctx, mut server) = context(nodes);
    let mut existing = cluster(Mode::SingleLeader);
    existing.spec.replicas = 1;

    // First pass: learn the status the operator computes for this world.
    let world = |server: &mut ApiServer, role: Option<&'static str>| {
        let mut server = std::mem::replace(server, tower_test::mock::pair().1);
        async move {
            let labels = match role {
                Some(role) => {
                    json!({ "replicated.dev/cluster": "orders", "replicated.dev/role": role })
                }
                None => json!({ "replicated.dev/cluster": "orders" }),
            };
            let (_, send) = expect(
                &mut server,
                Method::GET,
                &format!("{NS}/secrets/orders-admin"),
            )
            .await;
            let secret = Secret {
                data: Some([("token".to_owned(), ByteString(b"s3cret".to_vec()))].into()),
                ..Secret::default()
            };
            reply(send, 200, &serde_json::to_value(&secret).unwrap());
            let (_, send) = expect(
                &mut server,
                Method::GET,
                "/apis/apps/v1/namespaces/shop/statefulsets/orders",
            )
            .await;
            not_found(send);
            let (_, send) = expect(&mut server, Method::GET, &format!("{NS}/pods")).await;
            reply(
                send,
                200,
                &json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": { "name": "orders-0", "namespace": "shop", "labels": labels },
                "status": { "podIP": "10.0.0.1", "conditions": [{ "type": "Ready", "status": "True" }] },
            }] }),
            );
            server
        }
    };
    let applies = |server: &mut ApiServer| {
        let mut server = std::mem::replace(server, tower_test::mock::pair().1);
        async move {
            for path in [
                format!("{NS}/configmaps/orders-config"),
                format!("{NS}/services/orders-peers"),
                format!("{NS}/services/orders-leader"),
                format!("{NS}/services/orders-replicas"),
                "/apis/apps/v1/namespaces/shop/statefulsets/orders".to_owned(),
                "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders".to_owned(),
            ] {
                expect_apply(&mut server, &path).await;
            }
            server
        }
    };
    let task = tokio::spawn(reconcile(guard(existing.clone()), ctx.clone()));
    read_fresh(&mut server, &existing).await;
    server = world(&mut server, None).await;
    // The leader's pod gets the role label the leader Service selects, by server-side apply.
    let (label, send) = expect(&mut server, Method::PATCH, &format!("{NS}/pods/orders-0")).await;
    assert_eq!(
        label,
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "orders-0", "labels": { "replicated.dev/role": "leader" } } })
    );
    reply(send, 200, &label);
    // Then the owned objects (after the leader step, which must not wait for them).
    server = applies(&mut server).await;
    let (patch, send) = expect(
        &mut server,
        Method::PATCH,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders/status",
    )
    .await;
    reply(send, 200, &stored(&patch["status"]));
    task.await.unwrap().unwrap();
    assert_eq!(patch["status"]["leader"], "orders-0");
    assert_eq!(patch["status"]["members"][0]["reachable"], true);

    // Second pass with that status stored: everything is re-applied (idempotent), no status write.
    existing.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
    let task = tokio::spawn(reconcile(guard(existing.clone()), ctx.clone()));
    read_fresh(&mut server, &existing).await;
    server = world(&mut server, Some("leader")).await;
    server = applies(&mut server).await;
    task.await.unwrap().unwrap();
    drop(ctx);
    assert!(
        server.next_request().await.is_none(),
        "no request after the applies"
    );
}

#[tokio::test]
async fn a_malformed_object_gets_a_warning_event_and_waits_for_an_edit() {
    let (ctx, mut server) = context(FakeNodes::default());
    let raw = json!({
        "apiVersion": "replicated.dev/v1alpha1", "kind": "ReplicatedCluster",
        "metadata": { "name": "orders", "namespace": "shop", "uid": "u" },
        "spec": { "mode": "Sideways" },
    });
    let malformed: DeserializeGuard<ReplicatedCluster> = serde_json::from_value(raw).unwrap();
    assert!(malformed.0.is_err());
    let reconciling = tokio::spawn(reconcile(Arc::new(malformed), ctx));
    let (event, send) = expect(
        &mut server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["reason"], "MalformedSpec");
    reply(send, 201, &event);
    assert_eq!(reconciling.await.unwrap().unwrap(), Action::await_change());
}

#[test]
fn the_error_policy_backs_off_exponentially_up_to_five_minutes() {
    let delays: Vec<u64> = [1, 2, 3, 4, 5, 6, 7, 20]
        .iter()
        .map(|n| backoff(*n).as_secs())
        .collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
}

#[tokio::test]
async fn a_new_tls_cluster_gets_a_ca_a_node_certificate_and_a_published_ca_before_its_pods() {
    let (ctx, mut server) = context(FakeNodes::default());
    let tls_cluster = crate::controller::fixtures::cluster(Mode::SingleLeader);
    let reconciling = tokio::spawn(reconcile(guard(tls_cluster.clone()), ctx));
    read_fresh(&mut server, &tls_cluster).await;
    observe_nothing_of(&mut server, &["orders-admin", "orders-ca", "orders-tls"]).await;

    // The CA: kept in its own Secret, owned by the cluster.
    let ca = expect_apply(&mut server, &format!("{NS}/secrets/orders-ca")).await;
    assert_eq!(ca["metadata"]["ownerReferences"][0]["name"], "orders");
    let ca_pem = String::from_utf8(
        serde_json::from_value::<ByteString>(ca["data"]["ca.crt"].clone())
            .unwrap()
            .0,
    )
    .unwrap();
    // The node certificate, chained to it, with the names the nodes are dialled by.
    let node = expect_apply(&mut server, &format!("{NS}/secrets/orders-tls")).await;
    assert_eq!(node["type"], "kubernetes.io/tls");
    assert!(
        node["data"].get("ca.key").is_none(),
        "the CA key never reaches pods"
    );
    let decode = |key: &str| {
        String::from_utf8(
            serde_json::from_value::<ByteString>(node["data"][key].clone())
                .unwrap()
                .0,
        )
        .unwrap()
    };
    assert_eq!(decode("ca.crt"), ca_pem);
    rc_tls::server::certified_key(decode("tls.crt").as_bytes(), decode("tls.key").as_bytes())
        .unwrap();
    let names = node["metadata"]["annotations"]["replicated.dev/names"]
        .as_str()
        .unwrap();
    assert!(
        names.contains("*.orders-peers.shop.svc") && names.contains("orders.shop.svc"),
        "{names}"
    );
    let not_after: i64 = node["metadata"]["annotations"]["replicated.dev/not-after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days = (not_after - k8s_openapi::jiff::Timestamp::now().as_second()) / 86_400;
    assert!((89..=90).contains(&days), "{days} days");
    let (event, send) = expect(
        &mut server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["reason"], "CertificateIssued");
    reply(send, 201, &event);
    // The CA for clients.
    let published = expect_apply(&mut server, &format!("{NS}/configmaps/orders-ca")).await;
    assert_eq!(published["data"]["ca.crt"], ca_pem);

    // Then the admin Secret and the objects, as without TLS.
    let (_, _, sts) = expect_new_objects(&mut server).await;
    let volumes = sts["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("orders-tls"), "{volumes}");
    let (patch, send) = expect(
        &mut server,
        Method::PATCH,
        "/apis/replicated.dev/v1alpha1/namespaces/shop/replicatedclusters/orders/status",
    )
    .await;
    assert_eq!(patch["status"]["security"]["tls"], true);
    assert_eq!(patch["status"]["security"]["caConfigMap"], "orders-ca");
    assert!(patch["status"]["security"]["certificateExpires"].is_string());
    reply(send, 200, &stored(&patch["status"]));
    reconciling.await.unwrap().unwrap();
}
