//! Evaluates the CRD's CEL rules (`x-kubernetes-validations`) client-side with kube's `cel`
//! feature, against the schema exactly as generated, so a rule that does not compile or says
//! the wrong thing fails here rather than in a cluster. Schema defaults are applied first, as the
//! API server does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kube::core::cel::{ErrorKind, Validator};
use kube::CustomResourceExt;
use serde_json::{json, Value};

use super::ReplicatedCluster;

fn schema() -> Value {
    let crd = ReplicatedCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "replicated.dev/v1alpha1",
        "kind": "ReplicatedCluster",
        "metadata": { "name": "orders", "namespace": "default" },
        "spec": spec,
    })
}

/// The messages of the rules that reject `spec` (empty when accepted).
fn rejections(spec: Value) -> Vec<String> {
    rejections_on_update(spec, None)
}

fn rejections_on_update(spec: Value, old: Option<Value>) -> Vec<String> {
    let old = old.map(object);
    match Validator::new().validate(&schema(), &object(spec), old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                // A rule that cannot be compiled or evaluated is a bug in the rule, not a rejection.
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule {} broke: {}",
                    e.rule,
                    e.message
                );
                e.message
            })
            .collect(),
    }
}

fn assert_rejected_with(spec: Value, expected: &str) {
    let got = rejections(spec.clone());
    assert!(
        got.iter().any(|m| m.contains(expected)),
        "expected {spec} to be rejected with {expected:?}, got {got:?}"
    );
}

#[test]
fn a_single_leader_cluster_with_only_a_mode_is_accepted() {
    assert_eq!(
        rejections(json!({ "mode": "SingleLeader" })),
        Vec::<String>::new()
    );
}

#[test]
fn a_leaderless_cluster_with_only_a_mode_is_accepted_with_default_quorums() {
    assert_eq!(
        rejections(json!({ "mode": "Leaderless" })),
        Vec::<String>::new()
    );
}

#[test]
fn fully_specified_clusters_of_both_modes_are_accepted() {
    let single = json!({
        "mode": "SingleLeader", "replicas": 5, "image": "rc-node:dev",
        "storage": { "size": "10Gi", "storageClassName": "fast" },
        "singleLeader": { "replication": "All", "leaderLossTimeoutMs": 3000, "heartbeatIntervalMs": 200, "minFailoverIntervalSeconds": 30, "fenceTimeoutMs": 2000 },
        "adminSecretRef": { "name": "orders-admin" },
    });
    assert_eq!(rejections(single), Vec::<String>::new());
    let leaderless = json!({
        "mode": "Leaderless", "replicas": 5,
        "leaderless": { "replicationFactor": 5, "writeQuorum": 3, "readQuorum": 1, "conflictResolution": "Siblings" },
    });
    assert_eq!(rejections(leaderless), Vec::<String>::new());
}

#[test]
fn zero_replicas_are_rejected() {
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "replicas": 0 }),
        "spec.replicas must be at least 1",
    );
}

#[test]
fn the_mode_cannot_change_after_creation() {
    let got = rejections_on_update(
        json!({ "mode": "Leaderless" }),
        Some(json!({ "mode": "SingleLeader" })),
    );
    assert!(
        got.iter().any(|m| m.contains("spec.mode is immutable")),
        "{got:?}"
    );
}

#[test]
fn an_update_that_keeps_the_mode_is_accepted() {
    let got = rejections_on_update(
        json!({ "mode": "SingleLeader", "replicas": 5 }),
        Some(json!({ "mode": "SingleLeader", "replicas": 3 })),
    );
    assert_eq!(got, Vec::<String>::new());
}

#[test]
fn single_leader_settings_are_rejected_in_leaderless_mode() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "singleLeader": { "replication": "Async" } }),
        "spec.singleLeader may only be set when spec.mode is SingleLeader",
    );
}

#[test]
fn leaderless_settings_are_rejected_in_single_leader_mode() {
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "leaderless": { "writeQuorum": 2 } }),
        "spec.leaderless may only be set when spec.mode is Leaderless",
    );
}

#[test]
fn a_write_quorum_above_the_replication_factor_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "leaderless": { "replicationFactor": 3, "writeQuorum": 4 } }),
        "leaderless.writeQuorum must be between 1 and replicationFactor",
    );
}

#[test]
fn a_write_quorum_of_zero_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "leaderless": { "writeQuorum": 0 } }),
        "leaderless.writeQuorum must be between 1 and replicationFactor",
    );
}

#[test]
fn a_read_quorum_outside_one_to_n_is_rejected() {
    for r in [0, 4] {
        assert_rejected_with(
            json!({ "mode": "Leaderless", "leaderless": { "readQuorum": r } }),
            "leaderless.readQuorum must be between 1 and replicationFactor",
        );
    }
}

#[test]
fn quorums_are_checked_against_the_default_replication_factor_of_three() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "leaderless": { "writeQuorum": 4 } }),
        "leaderless.writeQuorum must be between 1 and replicationFactor",
    );
    assert_eq!(
        rejections(json!({ "mode": "Leaderless", "leaderless": { "writeQuorum": 3 } })),
        Vec::<String>::new()
    );
}

#[test]
fn a_replication_factor_above_replicas_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "replicas": 3, "leaderless": { "replicationFactor": 4 } }),
        "spec.leaderless.replicationFactor (default 3) must not exceed spec.replicas",
    );
}

#[test]
fn a_leaderless_cluster_smaller_than_the_default_replication_factor_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "Leaderless", "replicas": 2 }),
        "spec.leaderless.replicationFactor (default 3) must not exceed spec.replicas",
    );
    let small =
        json!({ "mode": "Leaderless", "replicas": 1, "leaderless": { "replicationFactor": 1 } });
    assert_eq!(rejections(small), Vec::<String>::new());
}

#[test]
fn a_single_node_single_leader_cluster_is_accepted() {
    assert_eq!(
        rejections(json!({ "mode": "SingleLeader", "replicas": 1 })),
        Vec::<String>::new()
    );
}

#[test]
fn a_fence_timeout_above_the_leader_loss_timeout_is_rejected() {
    let why = "singleLeader.fenceTimeoutMs must be at least three heartbeatIntervalMs and at most leaderLossTimeoutMs";
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "leaderLossTimeoutMs": 2000, "fenceTimeoutMs": 2500 } }),
        why,
    );
    // Checked against the default leader-loss timeout (1000 ms) and heartbeat (100 ms) too.
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "fenceTimeoutMs": 1500 } }),
        why,
    );
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "fenceTimeoutMs": 250 } }),
        why,
    );
}

#[test]
fn a_leader_loss_timeout_out_of_range_or_within_a_few_heartbeats_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "leaderLossTimeoutMs": 150 } }),
        "singleLeader.leaderLossTimeoutMs must be between 200 and 60000",
    );
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "leaderLossTimeoutMs": 70000 } }),
        "singleLeader.leaderLossTimeoutMs must be between 200 and 60000",
    );
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "leaderLossTimeoutMs": 400 } }),
        "singleLeader.leaderLossTimeoutMs must be at least five heartbeatIntervalMs",
    );
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "heartbeatIntervalMs": 5 } }),
        "singleLeader.heartbeatIntervalMs must be between 10 and 10000",
    );
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "singleLeader": { "minFailoverIntervalSeconds": -1 } }),
        "singleLeader.minFailoverIntervalSeconds must be between 0 and 3600",
    );
    // 500 ms over 50 ms heartbeats, and the deprecated delay still accepted (and ignored).
    assert_eq!(
        rejections(json!({ "mode": "SingleLeader", "singleLeader": {
            "leaderLossTimeoutMs": 500, "heartbeatIntervalMs": 50, "fenceTimeoutMs": 400,
            "failoverDelaySeconds": 2 } })),
        Vec::<String>::new()
    );
}

#[test]
fn an_empty_image_is_rejected() {
    assert_rejected_with(
        json!({ "mode": "SingleLeader", "image": "" }),
        "spec.image must not be empty",
    );
}

#[test]
fn a_cluster_name_too_long_for_pod_and_service_names_is_rejected() {
    let mut obj = object(json!({ "mode": "SingleLeader" }));
    obj["metadata"]["name"] = json!("a".repeat(41));
    let errors = Validator::new()
        .validate(&schema(), &obj, None)
        .unwrap_err()
        .into_vec();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("metadata.name must be at most 40")),
        "{errors:?}"
    );
    obj["metadata"]["name"] = json!("9orders");
    assert!(Validator::new().validate(&schema(), &obj, None).is_err());
    obj["metadata"]["name"] = json!("orders-eu-1");
    assert!(Validator::new().validate(&schema(), &obj, None).is_ok());
}
