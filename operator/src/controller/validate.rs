//! (pure) Spec + observations -> [`ValidatedCluster`]: every name, label, quorum size, peer
//! address and node setting the builders need, computed once. Builders never read the raw spec.
//!
//! The CRD's CEL rules reject most bad specs at admission; this re-checks them because a CRD
//! installed without them (or an older version) must not make the operator build nonsense, and
//! it checks what CEL cannot see (the admin Secret). The mode sections (`spec.singleLeader`,
//! `spec.leaderless`) are checked in `validate/modes.rs`.

use rc_api::env;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use rc_api::{Peer, Ring};

use crate::crd::{
    reason, LogFormat, LogLevel, Mode, PullPolicy, ReplicatedCluster, ReplicatedClusterSpec,
};
use crate::labels::{CLUSTER_LABEL, RESTARTED_AT_ANNOTATION};
use crate::membership;

mod modes;
mod secrets;
mod tls;

use secrets::{admin_secret, client_tokens_secret};
pub use secrets::{CLIENT_TOKENS_DIR, CLIENT_TOKENS_KEY};

use tls::tls_node_config;
pub use tls::{
    ca_config_map_name, ca_secret_name, tls_secret_name, TlsNames, CA_CERT_KEY, CA_KEY_KEY,
    TLS_CERT_KEY, TLS_DIR, TLS_KEY_KEY,
};

/// The single TCP port of a node: client, admin, peer, probe and metrics traffic.
pub const NODE_PORT: i32 = 7400;
/// The nodes' peer port (replication, the leaderless internal API): only members reach it.
pub const PEER_PORT: i32 = 7401;
pub const PEER_PORT_NAME: &str = "peer";
/// The nodes' admin port: only the operator reaches it.
pub const ADMIN_PORT: i32 = 7402;
pub const ADMIN_PORT_NAME: &str = "admin";
/// Name of the container port, used by probes and Services.
pub const NODE_PORT_NAME: &str = "node";
/// Where each node's PersistentVolumeClaim is mounted.
pub const DATA_DIR: &str = "/data";
/// Directory the admin Secret is mounted into, and the token file inside it.
pub const ADMIN_TOKEN_DIR: &str = "/etc/rc-node/admin";
pub const ADMIN_TOKEN_FILE: &str = "/etc/rc-node/admin/token";
/// Key of the admin token in the admin Secret.
pub const ADMIN_TOKEN_KEY: &str = "token";
/// During a token rotation: the token every node accepts before it is sent.
pub const NEXT_TOKEN_KEY: &str = "token.next";
/// During a token rotation: the token still accepted after the new one is sent.
pub const PREVIOUS_TOKEN_KEY: &str = "token.previous";
/// Longest cluster name: keeps `<name>-replicas`, pod names and the StatefulSet's
/// controller-revision-hash label inside 63 characters.
pub const MAX_NAME_LEN: usize = 40;

/// A spec the operator cannot act on. Permanent: reported as a condition and an Event, then the
/// operator waits for the spec to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("metadata.name {0:?} must be at most 40 characters of lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("the object has no namespace or uid yet")]
    Unpersisted,
    #[error("spec.replicas must be at least 1, got {0}")]
    Replicas(i32),
    #[error("spec.{0} may only be set when spec.mode is {1}")]
    WrongModeSettings(&'static str, &'static str),
    #[error("spec.leaderless: need 1 <= writeQuorum ({w}) <= replicationFactor ({n}), 1 <= readQuorum ({r}) <= replicationFactor, replicationFactor <= replicas ({replicas})")]
    Quorums {
        n: i32,
        w: i32,
        r: i32,
        replicas: i32,
    },
    #[error("spec.replicas ({replicas}) is below spec.leaderless.replicationFactor ({n}): refusing to scale down, the ring keeps its {members} members")]
    ScaleBelowReplicationFactor {
        replicas: i32,
        n: i32,
        members: usize,
    },
    /// The single-leader timing fields out of range or inconsistent (the same rules as the
    /// CRD's CEL, for objects that bypassed it).
    #[error("spec.singleLeader.{0}")]
    SingleLeaderTiming(String),
    #[error("spec.image must not be empty")]
    Image,
    #[error("admin Secret {0:?} does not exist or has no key \"token\"")]
    AdminSecret(String),
    #[error("spec.adminSecretRef names Secret {secret:?}, which is not made for this cluster: the operator mounts it into pods, so it must carry the label replicated.dev/admin-secret-for={cluster} (kubectl label secret {secret} replicated.dev/admin-secret-for={cluster})")]
    AdminSecretNotDedicated { secret: String, cluster: String },
    #[error("client tokens Secret {0:?} (spec.clientAuth.secretName) does not exist or has no key \"tokens\"")]
    ClientTokensSecret(String),
    #[error("spec.clientAuth.secretName names Secret {secret:?}, which is not made for this cluster: the operator mounts it into pods, so it must carry the label replicated.dev/client-tokens-for={cluster} (kubectl label secret {secret} replicated.dev/client-tokens-for={cluster})")]
    ClientTokensSecretNotDedicated { secret: String, cluster: String },
    #[error("spec.replicas changed from {running} to {wanted} while spec.paused is true: a paused rollout holds every pod as it is; set spec.paused to false, or spec.replicas back to {running}")]
    ScaleWhilePaused { running: i32, wanted: i32 },
}

impl SpecError {
    /// The reason of the `Degraded` condition and of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::ScaleBelowReplicationFactor { .. } => reason::SCALE_DOWN_BLOCKED,
            _ => reason::INVALID_SPEC,
        }
    }
}

/// Which Secret holds the admin token, and whether the operator owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSecret {
    pub name: String,
    /// True when the user named none and the operator creates `<cluster>-admin`.
    pub managed: bool,
}

/// A client Service: its name and the role label its pods must carry (none: every ready pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientService {
    pub name: String,
    pub role: Option<&'static str>,
}

/// Everything the builders need, derived once from a valid spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    pub mode: Mode,
    pub replicas: i32,
    /// Pods the StatefulSet keeps: `replicas`, or in Leaderless mode more while members beyond
    /// it are still in the ring (a scale-down stops a pod only after its member left).
    pub statefulset_replicas: i32,
    /// Leaderless mode: copies of every key (N); zero in SingleLeader mode.
    pub replication_factor: i32,
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub storage_size: Quantity,
    pub storage_class_name: Option<String>,
    pub config_map_name: String,
    pub peers_service_name: String,
    pub client_services: Vec<ClientService>,
    pub admin_secret: AdminSecret,
    /// `None` when `spec.tls.enabled` is false.
    pub tls: Option<TlsNames>,
    /// With client authentication: the Secret of client tokens (mounted).
    pub client_tokens_secret: Option<String>,
    /// Node settings, as the `RC_*` environment variables of the ConfigMap.
    pub node_config: BTreeMap<String, String>,
    /// Every node by ordinal: pod name and the stable address peers and the operator dial.
    pub peers: Vec<Peer>,
    /// `peers` plus the pods kept beyond `replicas` (`statefulset_replicas` in all).
    pub members: Vec<Peer>,
    /// Nodes that must stay up for the cluster to serve every read and write.
    pub quorum: i32,
    /// SingleLeader mode: when the operator fails over (zero in Leaderless mode).
    pub failover: crate::failover::Timing,
    /// `spec.paused`: no pod is restarted for a rolling update.
    pub paused: bool,
    /// The cluster's `replicated.dev/restartedAt` annotation, copied into the pod template.
    pub restarted_at: Option<String>,
}

impl ValidatedCluster {
    /// Labels that select this cluster's pods (stable: part of the StatefulSet's selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "rc-node".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (CLUSTER_LABEL.to_owned(), self.name.clone()),
        ])
    }

    /// Labels of every object the operator creates for this cluster.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert("app.kubernetes.io/managed-by".into(), "rc-operator".into());
        labels.insert(
            "app.kubernetes.io/part-of".into(),
            "replicated-cluster".into(),
        );
        labels
    }

    /// The selector as a string, for `status.selector` (scale subresource).
    pub fn selector_string(&self) -> String {
        let labels = self.selector_labels();
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join(",")
    }

    /// Most nodes that may be voluntarily disrupted at once without losing quorum.
    pub fn max_unavailable(&self) -> i32 {
        (self.replicas - self.quorum).max(0)
    }
}

/// What validation needs to know about the world (from `observe`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedFacts {
    /// True when the admin Secret exists and holds a `token` key.
    pub admin_secret_ready: bool,
    /// True when it is labelled for this cluster or owned by it.
    pub admin_secret_dedicated: bool,
    /// With `spec.clientAuth`: whether its Secret exists with a `tokens` key, and is labelled
    /// for this cluster (or owned by it).
    pub client_secret_ready: bool,
    pub client_secret_dedicated: bool,
    /// Size and class of the existing StatefulSet's volume claim template, which Kubernetes
    /// never lets change: a different `spec.storage` only applies to a new cluster.
    pub existing_storage: Option<(Quantity, Option<String>)>,
    /// Leaderless mode: the newest ring the nodes report, if any.
    pub ring: Option<Ring>,
    /// SingleLeader mode: the ids of the voter set in force, as the nodes report it (empty when
    /// no node answered with one).
    pub voters: Vec<String>,
    /// `spec.replicas` of the existing StatefulSet, if any.
    pub statefulset_replicas: Option<i32>,
}

/// Name of the Secret holding the admin token: the one the user named, else `<cluster>-admin`.
pub fn admin_secret_name(cluster: &ReplicatedCluster) -> String {
    match &cluster.spec.admin_secret_ref {
        Some(reference) => reference.name.clone(),
        None => format!("{}-admin", cluster.name_any()),
    }
}

/// Checks the spec and derives the [`ValidatedCluster`].
pub fn validate(
    cluster: &ReplicatedCluster,
    facts: &ObservedFacts,
) -> Result<ValidatedCluster, SpecError> {
    let name = cluster.name_any();
    if !valid_name(&name) {
        return Err(SpecError::Name(name));
    }
    let (Some(namespace), Some(owner)) = (cluster.namespace(), cluster.controller_owner_ref(&()))
    else {
        return Err(SpecError::Unpersisted);
    };
    let spec = &cluster.spec;
    check_replicas_and_image(spec)?;
    let ring = known_ring(cluster, facts);
    let mode = match spec.mode {
        Mode::SingleLeader => modes::single_leader(&name, spec)?,
        Mode::Leaderless => {
            modes::leaderless(&name, spec, ring.as_ref().map_or(0, |r| r.members.len()))?
        }
    };
    let admin_secret = admin_secret(&name, spec, facts)?;
    let client_tokens_secret = client_tokens_secret(&name, spec, facts)?;
    let statefulset_replicas = statefulset_replicas(cluster, facts, ring.as_ref())?;
    let peers_service_name = format!("{name}-peers");
    let peer = |ordinal: i32| {
        let id = format!("{name}-{ordinal}");
        let address = format!("{id}.{peers_service_name}.{namespace}.svc:{NODE_PORT}");
        Peer { id, address }
    };
    let peers: Vec<Peer> = (0..spec.replicas).map(peer).collect();
    let members: Vec<Peer> = (0..statefulset_replicas).map(peer).collect();
    let tls = spec
        .tls
        .enabled
        .then(|| TlsNames::new(&name, &namespace, &peers_service_name));
    let mut node_config = shared_node_config(spec, &peers);
    node_config.extend(mode.node_config);
    node_config.extend(security_node_config(
        tls.as_ref(),
        client_tokens_secret.is_some(),
    ));
    let (storage_size, storage_class_name) = facts.existing_storage.clone().unwrap_or_else(|| {
        (
            spec.storage.size.clone(),
            spec.storage.storage_class_name.clone(),
        )
    });
    Ok(ValidatedCluster {
        statefulset_replicas,
        replication_factor: mode.replication_factor,
        config_map_name: format!("{name}-config"),
        peers_service_name,
        client_services: mode.client_services,
        admin_secret,
        tls,
        client_tokens_secret,
        node_config,
        peers,
        members,
        quorum: mode.quorum,
        failover: mode.failover,
        owner,
        namespace,
        mode: spec.mode,
        replicas: spec.replicas,
        image: spec.image.clone(),
        image_pull_policy: spec.image_pull_policy.map(|p| pull_policy(p).to_owned()),
        resources: spec.resources.clone(),
        storage_size,
        storage_class_name,
        paused: spec.paused,
        restarted_at: cluster.annotations().get(RESTARTED_AT_ANNOTATION).cloned(),
        name,
    })
}

fn check_replicas_and_image(spec: &ReplicatedClusterSpec) -> Result<(), SpecError> {
    if spec.replicas < 1 {
        return Err(SpecError::Replicas(spec.replicas));
    }
    if spec.image.is_empty() {
        return Err(SpecError::Image);
    }
    Ok(())
}

/// Leaderless: the ring the nodes (or the last status) know; its members keep their pods.
fn known_ring(cluster: &ReplicatedCluster, facts: &ObservedFacts) -> Option<Ring> {
    let recorded = cluster
        .status
        .as_ref()
        .and_then(|s| s.ring.as_ref())
        .and_then(membership::from_record);
    [recorded, facts.ring.clone()]
        .into_iter()
        .flatten()
        .max_by_key(|r| r.version)
        .filter(|_| cluster.spec.mode == Mode::Leaderless)
}

/// The pods the StatefulSet keeps. A member is never stopped before it left the ring, or the
/// voters: keep pods up to its ordinal (a voter's pod deleted early takes acknowledged writes
/// with it). A paused rollout holds their number too.
fn statefulset_replicas(
    cluster: &ReplicatedCluster,
    facts: &ObservedFacts,
    ring: Option<&Ring>,
) -> Result<i32, SpecError> {
    let spec = &cluster.spec;
    let prefix = format!("{}-", cluster.name_any());
    let recorded_voters = cluster.status.as_ref().and_then(|s| s.voters.clone());
    let voters = match spec.mode {
        Mode::Leaderless => Vec::new(),
        Mode::SingleLeader if !facts.voters.is_empty() => facts.voters.clone(),
        Mode::SingleLeader => recorded_voters.unwrap_or_default(),
    };
    let highest_member = ring
        .iter()
        .flat_map(|r| r.members.iter())
        .map(|m| &m.id)
        .chain(voters.iter())
        .filter_map(|id| id.strip_prefix(&prefix)?.parse::<i32>().ok())
        .max();
    let statefulset_replicas = highest_member.map_or(spec.replicas, |o| spec.replicas.max(o + 1));
    if let Some(running) = facts.statefulset_replicas {
        if spec.paused && running != statefulset_replicas {
            return Err(SpecError::ScaleWhilePaused {
                running,
                wanted: spec.replicas,
            });
        }
    }
    Ok(statefulset_replicas)
}

/// The node settings of TLS and client authentication: where their mounted files are.
fn security_node_config(tls: Option<&TlsNames>, client_tokens: bool) -> BTreeMap<String, String> {
    let mut config = tls.map(tls_node_config).unwrap_or_default();
    if client_tokens {
        config.insert(
            env::CLIENT_TOKEN_FILE.to_owned(),
            format!("{CLIENT_TOKENS_DIR}/{CLIENT_TOKENS_KEY}"),
        );
    }
    config
}

/// The node settings every mode shares, with every node's stable address (`RC_PEERS`).
fn shared_node_config(spec: &ReplicatedClusterSpec, peers: &[Peer]) -> BTreeMap<String, String> {
    let peer_list: Vec<String> = peers
        .iter()
        .map(|p| format!("{}={}", p.id, p.address))
        .collect();
    BTreeMap::from([
        (env::LISTEN.to_owned(), format!("0.0.0.0:{NODE_PORT}")),
        (env::PEER_LISTEN.to_owned(), format!("0.0.0.0:{PEER_PORT}")),
        (
            env::ADMIN_LISTEN.to_owned(),
            format!("0.0.0.0:{ADMIN_PORT}"),
        ),
        (env::DATA_DIR.to_owned(), DATA_DIR.to_owned()),
        (
            env::ADMIN_TOKEN_FILE.to_owned(),
            ADMIN_TOKEN_FILE.to_owned(),
        ),
        (
            env::LOG_LEVEL.to_owned(),
            log_level(spec.logging.level).to_owned(),
        ),
        (
            env::LOG_FORMAT.to_owned(),
            log_format(spec.logging.format).to_owned(),
        ),
        (env::PEERS.to_owned(), peer_list.join(",")),
    ])
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn log_level(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

fn log_format(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Json => "json",
        LogFormat::Text => "text",
    }
}

fn pull_policy(policy: PullPolicy) -> &'static str {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
