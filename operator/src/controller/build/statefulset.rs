//! (pure) `StatefulSet <name>`: the rc-node pods, one PersistentVolumeClaim each.
//!
//! Choices that matter for safety:
//! - `OnDelete` updates: the operator, not the StatefulSet controller, decides when each pod
//!   restarts, so that a later rolling update can restart followers first and the leader last.
//! - `Parallel` pod management: single-leader nodes start as followers without a leader and are
//!   not ready until the operator promotes one; `OrderedReady` would wait forever for pod 0.
//! - The role label is never part of the template: the operator moves it between live pods.

use rc_api::env;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{config_hash, owned_meta};
use crate::controller::validate::{
    ValidatedCluster, ADMIN_PORT, ADMIN_PORT_NAME, ADMIN_TOKEN_DIR, CLIENT_TOKENS_DIR, DATA_DIR,
    NODE_PORT, NODE_PORT_NAME, PEER_PORT, PEER_PORT_NAME, TLS_DIR,
};
use crate::labels::RESTARTED_AT_ANNOTATION;

/// Pod template annotation carrying [`config_hash`] of the node settings.
pub const CONFIG_HASH_ANNOTATION: &str = "replicated.dev/config-hash";
const DATA_VOLUME: &str = "data";
const ADMIN_TOKEN_VOLUME: &str = "admin-token";
const TLS_VOLUME: &str = "tls";
const CLIENT_TOKENS_VOLUME: &str = "client-tokens";
/// The root filesystem is read-only; a small scratch `/tmp` for anything that insists on one.
const TMP_VOLUME: &str = "tmp";
/// The distroless `nonroot` user of the node image.
const NODE_UID: i64 = 65532;

pub fn build_statefulset(cluster: &ValidatedCluster) -> StatefulSet {
    let selector = cluster.selector_labels();
    StatefulSet {
        metadata: owned_meta(cluster, &cluster.name),
        spec: StatefulSetSpec {
            replicas: Some(cluster.statefulset_replicas),
            service_name: Some(cluster.peers_service_name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            // Data outlives the cluster object and scale-downs; deleting it is the user's call.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: pod_template(cluster),
            volume_claim_templates: Some(vec![data_claim(cluster)]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_template(cluster: &ValidatedCluster) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(cluster.labels()),
            annotations: Some(
                std::iter::once((
                    CONFIG_HASH_ANNOTATION.to_owned(),
                    config_hash(&cluster.node_config),
                ))
                .chain(
                    cluster
                        .restarted_at
                        .iter()
                        .map(|at| (RESTARTED_AT_ANNOTATION.to_owned(), at.clone())),
                )
                .collect(),
            ),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(cluster)],
            volumes: Some(volumes(cluster)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NODE_UID),
                run_as_group: Some(NODE_UID),
                fs_group: Some(NODE_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            affinity: Some(spread_across_nodes(cluster)),
            termination_grace_period_seconds: Some(30),
            enable_service_links: Some(false),
            ..PodSpec::default()
        }),
    }
}

/// The admin Secret (every key: `token`, and during a rotation `token.next` or
/// `token.previous`), the node certificate Secret with TLS, and a scratch `/tmp`.
fn volumes(cluster: &ValidatedCluster) -> Vec<Volume> {
    let secret = |name: &str, secret_name: &str| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            default_mode: Some(0o440),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut volumes = vec![secret(ADMIN_TOKEN_VOLUME, &cluster.admin_secret.name)];
    if let Some(tls) = &cluster.tls {
        volumes.push(secret(TLS_VOLUME, &tls.tls_secret));
    }
    if let Some(clients) = &cluster.client_tokens_secret {
        volumes.push(secret(CLIENT_TOKENS_VOLUME, clients));
    }
    volumes.push(Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes
}

fn node_container(cluster: &ValidatedCluster) -> Container {
    let tls = cluster.tls.is_some();
    Container {
        name: "node".to_owned(),
        image: Some(cluster.image.clone()),
        image_pull_policy: cluster.image_pull_policy.clone(),
        ports: Some(
            [
                (NODE_PORT_NAME, NODE_PORT),
                (PEER_PORT_NAME, PEER_PORT),
                (ADMIN_PORT_NAME, ADMIN_PORT),
            ]
            .into_iter()
            .map(|(name, port)| ContainerPort {
                name: Some(name.to_owned()),
                container_port: port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            })
            .collect(),
        ),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: cluster.config_map_name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(pod_env(cluster)),
        volume_mounts: Some(volume_mounts(tls, cluster.client_tokens_secret.is_some())),
        resources: Some(cluster.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(http_probe(rc_api::paths::READYZ, tls, 5, 2)),
        liveness_probe: Some(http_probe(rc_api::paths::HEALTHZ, tls, 10, 3)),
        // Replaying a long log at start must not be mistaken for a hang: up to 5 minutes.
        startup_probe: Some(http_probe(rc_api::paths::HEALTHZ, tls, 2, 150)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// Per-pod values; the ConfigMap holds what all nodes share. POD_NAME must come first: the
/// later values refer to it with $(POD_NAME).
fn pod_env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    vec![
        EnvVar {
            name: "POD_NAME".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: env::NODE_ID.to_owned(),
            value: Some("$(POD_NAME)".to_owned()),
            ..EnvVar::default()
        },
        EnvVar {
            name: env::ADVERTISE.to_owned(),
            value: Some(format!(
                "$(POD_NAME).{}.{}.svc:{NODE_PORT}",
                cluster.peers_service_name, cluster.namespace
            )),
            ..EnvVar::default()
        },
    ]
}

/// The data volume, a scratch `/tmp`, and read-only: the admin token, the node certificate and
/// the client tokens.
fn volume_mounts(tls: bool, client_tokens: bool) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: ADMIN_TOKEN_VOLUME.to_owned(),
            mount_path: ADMIN_TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: TMP_VOLUME.to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        },
    ];
    let read_only = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    if tls {
        mounts.push(read_only(TLS_VOLUME, TLS_DIR));
    }
    if client_tokens {
        mounts.push(read_only(CLIENT_TOKENS_VOLUME, CLIENT_TOKENS_DIR));
    }
    mounts
}

/// A probe of `path` on the node port (HTTPS with TLS: the kubelet does not verify the
/// certificate), every `period` seconds, failing after `failures` misses.
fn http_probe(path: &str, tls: bool, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(NODE_PORT_NAME.to_owned()),
            scheme: tls.then(|| "HTTPS".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Requests when the spec sets none, so the scheduler does not pack every node on one machine.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".to_owned())),
            ("memory".to_owned(), Quantity("128Mi".to_owned())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Prefer one node of a cluster per Kubernetes node: losing a machine then costs one replica.
/// Preferred, not required, so that small test clusters still schedule.
fn spread_across_nodes(cluster: &ValidatedCluster) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(cluster.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn data_claim(cluster: &ValidatedCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(cluster.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: cluster.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    cluster.storage_size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
