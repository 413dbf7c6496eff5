//! (client) What exists: the admin Secret, the StatefulSet, the cluster's pods, and each node's
//! `GET /admin/status`. Reads only; requests go out in a fixed order (Secret, StatefulSet, Pods,
//! then the nodes concurrently).

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use rc_api::NodeStatus;

use super::validate::{
    admin_secret_name, ObservedFacts, ADMIN_TOKEN_KEY, CLUSTER_LABEL, NODE_PORT, ROLE_LABEL,
};
use super::{Context, Error};
use crate::crd::ReplicatedCluster;

/// How the operator dials a node's admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NodeAddressing {
    /// `<pod IP>:7400`: needs no DNS, works as soon as the pod has an IP.
    #[default]
    PodIp,
    /// `<pod>.<cluster>-peers.<namespace>.svc:7400`: the address nodes advertise to each other.
    Dns,
}

/// One pod of the cluster, as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: Option<i32>,
    pub ready: bool,
    pub terminating: bool,
    /// The admin API address, when the pod has one.
    pub address: Option<String>,
    /// The `replicated.dev/role` label the operator last set.
    pub role_label: Option<String>,
}

/// Everything `observe` found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The admin token, when the admin Secret exists and holds one.
    pub admin_token: Option<String>,
    pub statefulset: Option<StatefulSet>,
    /// Pods sorted by ordinal.
    pub pods: Vec<ObservedPod>,
    /// Each reachable node's status, by pod name; `Err` holds why a node could not be read.
    pub nodes: BTreeMap<String, Result<NodeStatus, String>>,
    /// When those reads were sent (ms since the Unix epoch): their "ms since" figures count
    /// from about then.
    pub nodes_read_ms: Option<i64>,
}

impl Observed {
    /// The part validation needs.
    pub fn facts(&self) -> ObservedFacts {
        let existing_storage = self.statefulset.as_ref().and_then(|sts| {
            let claim = sts
                .spec
                .volume_claim_templates
                .as_ref()?
                .first()?
                .spec
                .as_ref()?;
            let size = claim
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?
                .clone();
            Some((size, claim.storage_class_name.clone()))
        });
        ObservedFacts {
            admin_secret_ready: self.admin_token.is_some(),
            existing_storage,
            ring: crate::membership::newest_ring(
                None,
                self.nodes.values().filter_map(|n| n.as_ref().ok()),
            ),
            voters: self.voters(),
        }
    }

    /// SingleLeader: the ids of the voter set in force, from the node with the newest epoch
    /// and configuration entry.
    pub fn voters(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter_map(|n| n.as_ref().ok())
            .filter_map(|n| Some((n.epoch, n.config.as_ref()?)))
            .max_by_key(|(epoch, config)| (*epoch, config.index))
            .map(|(_, config)| config.voters.iter().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }
}

pub async fn observe(ctx: &Context, cluster: &ReplicatedCluster) -> Result<Observed, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = admin_secret_name(cluster);
    let admin_token = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|source| Error::Observe {
            kind: "Secret",
            source,
        })?
        .and_then(|secret| token_of(&secret));

    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let statefulset = statefulsets
        .get_opt(&name)
        .await
        .map_err(|source| Error::Observe {
            kind: "StatefulSet",
            source,
        })?;

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{CLUSTER_LABEL}={name}");
    let pod_list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Observe {
            kind: "Pod",
            source,
        })?;
    let mut pods: Vec<ObservedPod> = pod_list
        .items
        .iter()
        .map(|pod| observe_pod(pod, &name, &namespace, ctx.addressing))
        .collect();
    pods.sort_by_key(|p| (p.ordinal.unwrap_or(i32::MAX), p.name.clone()));

    let mut nodes_read_ms = None;
    let nodes = match &admin_token {
        Some(token) => {
            nodes_read_ms = Some(k8s_openapi::jiff::Timestamp::now().as_millisecond());
            observe_nodes(ctx, &pods, token).await
        }
        None => BTreeMap::new(),
    };
    Ok(Observed {
        admin_token,
        statefulset,
        pods,
        nodes,
        nodes_read_ms,
    })
}

/// Reads every addressable node's status concurrently; a node that does not answer is recorded,
/// not an error: an unreachable node is exactly what status must show.
async fn observe_nodes(
    ctx: &Context,
    pods: &[ObservedPod],
    token: &str,
) -> BTreeMap<String, Result<NodeStatus, String>> {
    let calls = pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|pod| async move {
            let result = match &pod.address {
                Some(address) => ctx
                    .nodes
                    .status(address, token)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("pod has no address yet".to_owned()),
            };
            (pod.name.clone(), result)
        });
    join_all(calls).await.into_iter().collect()
}

fn token_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(ADMIN_TOKEN_KEY)?;
    let token = String::from_utf8(bytes.0.clone()).ok()?;
    let token = token.trim().to_owned();
    (!token.is_empty()).then_some(token)
}

fn observe_pod(
    pod: &Pod,
    cluster: &str,
    namespace: &str,
    addressing: NodeAddressing,
) -> ObservedPod {
    let name = pod.name_any();
    let ordinal = name
        .strip_prefix(cluster)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse().ok());
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let pod_ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let address = match addressing {
        NodeAddressing::PodIp => pod_ip.map(|ip| {
            // IPv6 addresses need brackets in host:port.
            if ip.contains(':') {
                format!("[{ip}]:{NODE_PORT}")
            } else {
                format!("{ip}:{NODE_PORT}")
            }
        }),
        NodeAddressing::Dns => Some(format!(
            "{name}.{cluster}-peers.{namespace}.svc:{NODE_PORT}"
        )),
    };
    ObservedPod {
        ordinal,
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        address,
        role_label: pod.labels().get(ROLE_LABEL).cloned(),
        name,
    }
}
