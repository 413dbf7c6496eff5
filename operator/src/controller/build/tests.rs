//! Exact-object tests of the builders: given a spec, the whole object, field by field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;
use crate::controller::fixtures::{cluster, UID};
use crate::controller::validate::{validate, ObservedFacts, ValidatedCluster};
use crate::crd::{LeaderlessSpec, Mode};

fn validated(mode: Mode) -> ValidatedCluster {
    validate(&cluster(mode), &ObservedFacts::default()).unwrap()
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

fn selector() -> Value {
    json!({
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/name": "rc-node",
        "replicated.dev/cluster": "orders",
    })
}

/// Metadata every owned object carries: the cluster's labels and a controller owner reference.
fn meta(name: &str) -> Value {
    json!({
        "name": name,
        "namespace": "shop",
        "labels": {
            "app.kubernetes.io/instance": "orders",
            "app.kubernetes.io/managed-by": "rc-operator",
            "app.kubernetes.io/name": "rc-node",
            "app.kubernetes.io/part-of": "replicated-cluster",
            "replicated.dev/cluster": "orders",
        },
        "ownerReferences": [{
            "apiVersion": "replicated.dev/v1alpha1",
            "kind": "ReplicatedCluster",
            "name": "orders",
            "uid": UID,
            "controller": true,
        }],
    })
}

fn node_port() -> Value {
    json!([{ "name": "node", "port": 7400, "protocol": "TCP", "targetPort": "node" }])
}

#[test]
fn the_single_leader_config_map_holds_every_node_setting() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta("orders-config"),
        "data": {
            "RC_ADMIN_LISTEN": "0.0.0.0:7402",
            "RC_ADMIN_TOKEN_FILE": "/etc/rc-node/admin/token",
            "RC_DATA_DIR": "/data",
            "RC_FENCE_TIMEOUT_MS": "1000",
            "RC_FORWARDING": "redirect",
            "RC_HEARTBEAT_MS": "100",
            "RC_LISTEN": "0.0.0.0:7400",
            "RC_LOG_FORMAT": "json",
            "RC_LOG_LEVEL": "info",
            "RC_MODE": "single-leader",
            "RC_PEER_LISTEN": "0.0.0.0:7401",
            "RC_PEERS": "orders-0=orders-0.orders-peers.shop.svc:7400,\
                         orders-1=orders-1.orders-peers.shop.svc:7400,\
                         orders-2=orders-2.orders-peers.shop.svc:7400",
            "RC_REPLICATION": "quorum",
            "RC_TLS_CA_FILE": "/etc/rc-node/tls/ca.crt",
            "RC_TLS_CERT_FILE": "/etc/rc-node/tls/tls.crt",
            "RC_TLS_KEY_FILE": "/etc/rc-node/tls/tls.key",
            "RC_TLS_SERVER_NAME": "orders.shop.svc",
        },
    });
    assert_eq!(
        to_json(&build_config_map(&validated(Mode::SingleLeader))),
        expected
    );
}

#[test]
fn the_leaderless_config_map_holds_the_quorum_settings() {
    let mut c = cluster(Mode::Leaderless);
    c.spec.replicas = 5;
    c.spec.leaderless = Some(LeaderlessSpec {
        replication_factor: Some(5),
        write_quorum: Some(4),
        read_quorum: Some(2),
        conflict_resolution: crate::crd::ConflictResolution::Siblings,
    });
    let v = validate(&c, &ObservedFacts::default()).unwrap();
    let data = to_json(&build_config_map(&v))["data"].clone();
    let mut expected_peers = Vec::new();
    for i in 0..5 {
        expected_peers.push(format!("orders-{i}=orders-{i}.orders-peers.shop.svc:7400"));
    }
    assert_eq!(
        data,
        json!({
            "RC_ADMIN_LISTEN": "0.0.0.0:7402",
            "RC_ADMIN_TOKEN_FILE": "/etc/rc-node/admin/token",
            "RC_CONFLICT_RESOLUTION": "siblings",
            "RC_DATA_DIR": "/data",
            "RC_LISTEN": "0.0.0.0:7400",
            "RC_LOG_FORMAT": "json",
            "RC_LOG_LEVEL": "info",
            "RC_MODE": "leaderless",
            "RC_PEER_LISTEN": "0.0.0.0:7401",
            "RC_PEERS": expected_peers.join(","),
            "RC_READ_QUORUM": "2",
            "RC_REPLICATION_FACTOR": "5",
            "RC_TLS_CA_FILE": "/etc/rc-node/tls/ca.crt",
            "RC_TLS_CERT_FILE": "/etc/rc-node/tls/tls.crt",
            "RC_TLS_KEY_FILE": "/etc/rc-node/tls/tls.key",
            "RC_TLS_SERVER_NAME": "orders.shop.svc",
            "RC_WRITE_QUORUM": "4",
        })
    );
}

#[test]
fn the_config_hash_ignores_the_peer_list_but_not_the_settings() {
    let v = validated(Mode::SingleLeader);
    let mut scaled = v.node_config.clone();
    scaled.insert("RC_PEERS".into(), "orders-0=elsewhere:7400".into());
    assert_eq!(config_hash(&v.node_config), config_hash(&scaled));
    let mut changed = v.node_config.clone();
    changed.insert("RC_REPLICATION".into(), "all".into());
    assert_ne!(config_hash(&v.node_config), config_hash(&changed));
}

#[test]
fn the_peers_service_is_headless_and_publishes_pods_before_they_are_ready() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("orders-peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": selector(),
            "ports": node_port(),
        },
    });
    assert_eq!(
        to_json(&build_peers_service(&validated(Mode::SingleLeader))),
        expected
    );
}

#[test]
fn single_leader_client_services_select_the_leader_and_the_followers_by_role() {
    let mut leader_selector = selector();
    leader_selector["replicated.dev/role"] = json!("leader");
    let mut follower_selector = selector();
    follower_selector["replicated.dev/role"] = json!("follower");
    let expected = json!([
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("orders-leader"),
            "spec": { "type": "ClusterIP", "selector": leader_selector, "ports": node_port() },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta("orders-replicas"),
            "spec": { "type": "ClusterIP", "selector": follower_selector, "ports": node_port() },
        },
    ]);
    assert_eq!(
        to_json(&build_client_services(&validated(Mode::SingleLeader))),
        expected
    );
}

#[test]
fn the_leaderless_client_service_selects_every_node() {
    let expected = json!([{
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("orders"),
        "spec": { "type": "ClusterIP", "selector": selector(), "ports": node_port() },
    }]);
    assert_eq!(
        to_json(&build_client_services(&validated(Mode::Leaderless))),
        expected
    );
}

#[test]
fn the_pdb_keeps_a_majority_and_always_allows_evicting_unhealthy_pods() {
    let expected = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta("orders"),
        "spec": {
            "maxUnavailable": 1,
            "selector": { "matchLabels": selector() },
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    });
    assert_eq!(
        to_json(&build_pdb(&validated(Mode::SingleLeader))),
        expected
    );
}

#[test]
fn the_admin_secret_carries_the_given_tokens_and_rotation_step() {
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta("orders-admin"),
        "type": "Opaque",
        "stringData": { "token": "t0k3n" },
    });
    let tokens = crate::credentials::AdminTokens {
        token: "t0k3n".into(),
        ..Default::default()
    };
    assert_eq!(
        to_json(&build_admin_secret(&validated(Mode::SingleLeader), &tokens)),
        expected
    );
    // Restored in the middle of a rotation: the step and the request it handled come back.
    let rotating = crate::credentials::AdminTokens {
        token: "t0k3n".into(),
        next: Some("n3xt".into()),
        previous: None,
        rotation: Some("7".into()),
    };
    let secret = to_json(&build_admin_secret(
        &validated(Mode::SingleLeader),
        &rotating,
    ));
    assert_eq!(
        secret["stringData"],
        json!({ "token": "t0k3n", "token.next": "n3xt" })
    );
    assert_eq!(
        secret["metadata"]["annotations"]["replicated.dev/rotation"],
        "7"
    );
}

#[test]
fn build_all_is_deterministic() {
    let v = validated(Mode::SingleLeader);
    let operator = operator_pods();
    assert_eq!(
        build_all(&v, Some(&operator)),
        build_all(&v, Some(&operator))
    );
    assert_eq!(build_all(&v, None).network_policy, None);
}

fn operator_pods() -> OperatorPods {
    OperatorPods {
        namespace: "rc-system".into(),
        labels: [(
            "app.kubernetes.io/name".to_owned(),
            "rc-operator".to_owned(),
        )]
        .into(),
    }
}

#[test]
fn the_network_policy_opens_the_client_port_and_keeps_peers_and_admin_to_their_callers() {
    let v = validated(Mode::SingleLeader);
    let pods = json!({ "matchLabels": {
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/name": "rc-node",
        "replicated.dev/cluster": "orders",
    }});
    let port = |p: i32| json!([{ "port": p, "protocol": "TCP" }]);
    let expected = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta("orders"),
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [
                { "ports": port(7400) },
                { "ports": port(7401), "from": [{ "podSelector": pods }] },
                { "ports": port(7402), "from": [{
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "rc-system" } },
                    "podSelector": { "matchLabels": { "app.kubernetes.io/name": "rc-operator" } },
                }] },
            ],
        },
    });
    assert_eq!(
        to_json(&build_network_policy(&v, &operator_pods())),
        expected
    );
}
