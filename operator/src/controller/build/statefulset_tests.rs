//! Exact-object test of the StatefulSet builder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::build_statefulset;
use crate::controller::fixtures::{cluster, UID};
use crate::controller::validate::{validate, ObservedFacts};
use crate::crd::Mode;

fn probe(path: &str, period: i32, failures: i32) -> Value {
    json!({
        "httpGet": { "path": path, "port": "node", "scheme": "HTTPS" },
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    })
}

#[test]
fn the_statefulset_runs_the_node_binary_with_its_volume_token_probes_and_settings() {
    let v = validate(&cluster(Mode::SingleLeader), &ObservedFacts::default()).unwrap();
    let selector = json!({
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/name": "rc-node",
        "replicated.dev/cluster": "orders",
    });
    let labels = json!({
        "app.kubernetes.io/instance": "orders",
        "app.kubernetes.io/managed-by": "rc-operator",
        "app.kubernetes.io/name": "rc-node",
        "app.kubernetes.io/part-of": "replicated-cluster",
        "replicated.dev/cluster": "orders",
    });
    let config_hash = super::config_hash(&v.node_config);
    let expected = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "orders",
            "namespace": "shop",
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "replicated.dev/v1alpha1",
                "kind": "ReplicatedCluster",
                "name": "orders",
                "uid": UID,
                "controller": true,
            }],
        },
        "spec": {
            "replicas": 3,
            "serviceName": "orders-peers",
            "selector": { "matchLabels": selector },
            "podManagementPolicy": "Parallel",
            "updateStrategy": { "type": "OnDelete" },
            "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Retain" },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": { "replicated.dev/config-hash": config_hash },
                },
                "spec": {
                    "affinity": { "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": { "matchLabels": selector },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }],
                    }},
                    "containers": [{
                        "name": "node",
                        "image": "ghcr.io/replicated-dev/rc-node:0.1.0",
                        "ports": [
                            { "name": "node", "containerPort": 7400, "protocol": "TCP" },
                            { "name": "peer", "containerPort": 7401, "protocol": "TCP" },
                            { "name": "admin", "containerPort": 7402, "protocol": "TCP" },
                        ],
                        "envFrom": [{ "configMapRef": { "name": "orders-config", "optional": false } }],
                        "env": [
                            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "RC_NODE_ID", "value": "$(POD_NAME)" },
                            { "name": "RC_ADVERTISE", "value": "$(POD_NAME).orders-peers.shop.svc:7400" },
                        ],
                        "volumeMounts": [
                            { "name": "data", "mountPath": "/data" },
                            { "name": "admin-token", "mountPath": "/etc/rc-node/admin", "readOnly": true },
                            { "name": "tmp", "mountPath": "/tmp" },
                            { "name": "tls", "mountPath": "/etc/rc-node/tls", "readOnly": true },
                        ],
                        "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
                        "readinessProbe": probe("/readyz", 5, 2),
                        "livenessProbe": probe("/healthz", 10, 3),
                        "startupProbe": probe("/healthz", 2, 150),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                    "volumes": [
                        { "name": "admin-token", "secret": {
                            "secretName": "orders-admin",
                            "defaultMode": 0o440,
                            "optional": false,
                        }},
                        { "name": "tls", "secret": {
                            "secretName": "orders-tls",
                            "defaultMode": 0o440,
                            "optional": false,
                        }},
                        { "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } },
                    ],
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "terminationGracePeriodSeconds": 30,
                    "enableServiceLinks": false,
                },
            },
            "volumeClaimTemplates": [{
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": { "name": "data", "labels": selector },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } },
                },
            }],
        },
    });
    assert_eq!(
        serde_json::to_value(build_statefulset(&v)).unwrap(),
        expected
    );
}

#[test]
fn spec_resources_image_policy_and_storage_class_reach_the_pods() {
    let mut c = cluster(Mode::Leaderless);
    c.spec.image = "registry.local/rc-node:dev".into();
    c.spec.image_pull_policy = Some(crate::crd::PullPolicy::Always);
    c.spec.storage.storage_class_name = Some("fast".into());
    c.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("5Gi".into());
    c.spec.resources = serde_json::from_value(json!({ "limits": { "memory": "1Gi" } })).unwrap();
    let v = validate(&c, &ObservedFacts::default()).unwrap();
    let sts = serde_json::to_value(build_statefulset(&v)).unwrap();
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.local/rc-node:dev");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(
        container["resources"],
        json!({ "limits": { "memory": "1Gi" } })
    );
    let claim = &sts["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "fast");
    assert_eq!(claim["resources"]["requests"]["storage"], "5Gi");
}

#[test]
fn an_existing_volume_claim_template_is_kept_because_it_is_immutable() {
    let mut c = cluster(Mode::SingleLeader);
    c.spec.storage.size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Gi".into());
    let facts = ObservedFacts {
        existing_storage: Some((
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
            None,
        )),
        ..ObservedFacts::default()
    };
    let v = validate(&c, &facts).unwrap();
    let sts = serde_json::to_value(build_statefulset(&v)).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
}
