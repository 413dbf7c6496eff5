//! (client) What exists: the admin Secret, the CA and node certificate Secrets (with TLS), the
//! StatefulSet, the cluster's pods, and each node's `GET /admin/status`. Reads only: the API
//! reads concurrently, then the nodes concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use rc_api::{NodeStatus, SingleLeaderStatus};

use super::validate::{
    admin_secret_name, ca_secret_name, tls_secret_name, ObservedFacts, ADMIN_PORT, ADMIN_TOKEN_KEY,
    CA_CERT_KEY, CA_KEY_KEY, CLIENT_TOKENS_KEY, NEXT_TOKEN_KEY, NODE_PORT, PREVIOUS_TOKEN_KEY,
    TLS_CERT_KEY, TLS_KEY_KEY,
};
use crate::credentials::{AdminTokens, StoredCa, StoredNodeCert};
use crate::labels::{
    CLIENT_TOKENS_FOR_LABEL, NAMES_ANNOTATION, NOT_AFTER_ANNOTATION, ROTATION_ANNOTATION,
};
use crate::node_client::{ClusterTls, NodeAccess};

/// The label the StatefulSet controller puts on each pod: the revision it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
use super::{Context, Error};
use crate::crd::ReplicatedCluster;
use crate::labels::{ADMIN_SECRET_FOR_LABEL, CLUSTER_LABEL, FENCED_ANNOTATION, ROLE_LABEL};

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
    /// The StatefulSet revision the pod was created from (`controller-revision-hash`).
    pub revision: Option<String>,
    pub uid: Option<String>,
    /// `replicated.dev/fenced: "true"`: fenced for maintenance, never elected leader.
    pub fenced: bool,
}

/// Everything `observe` found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The admin Secret's tokens, when it exists and holds a `token`.
    pub admin: Option<AdminTokens>,
    /// How to reach the nodes: the token to send and, with TLS, the CA (`None` until both are
    /// known).
    pub auth: Option<NodeAccess>,
    /// With TLS: the cluster's CA and node certificate as stored.
    pub ca: Option<StoredCa>,
    pub node_cert: Option<StoredNodeCert>,
    /// The admin Secret is labelled `replicated.dev/admin-secret-for: <cluster>` or owned by the
    /// cluster: made for it, not just any Secret of the namespace.
    pub admin_secret_dedicated: bool,
    /// With `spec.clientAuth`: its Secret exists with a `tokens` key; and is labelled
    /// `replicated.dev/client-tokens-for: <cluster>` or owned by the cluster.
    pub client_secret_ready: bool,
    pub client_secret_dedicated: bool,
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
            admin_secret_ready: self.admin.is_some(),
            admin_secret_dedicated: self.admin_secret_dedicated,
            client_secret_ready: self.client_secret_ready,
            client_secret_dedicated: self.client_secret_dedicated,
            existing_storage,
            ring: crate::membership::newest_ring(
                None,
                self.nodes.values().filter_map(|n| n.as_ref().ok()),
            ),
            voters: self.voters(),
            statefulset_replicas: self.statefulset.as_ref().and_then(|sts| sts.spec.replicas),
        }
    }

    /// SingleLeader: the ids of the voter set in force, from the node with the newest epoch
    /// and configuration entry.
    pub fn voters(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter_map(|n| n.as_ref().ok()?.single_leader())
            .filter_map(|n| Some((n.epoch, n.config.as_ref()?)))
            .max_by_key(|(epoch, config)| (*epoch, config.index))
            .map(|(_, config)| config.voters.iter().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }
}

/// The API objects a reconcile reads: the admin Secret, with TLS the CA and node certificate
/// Secrets, with client authentication its Secret, the StatefulSet and the pods.
struct Objects {
    admin: Option<Secret>,
    ca: Option<Secret>,
    node_cert: Option<Secret>,
    client_tokens: Option<Secret>,
    statefulset: Option<StatefulSet>,
    pods: kube::core::ObjectList<Pod>,
}

/// Reads them concurrently: a failover's reconcile waits for these before it can read the nodes.
async fn read_objects(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    namespace: &str,
    name: &str,
) -> Result<Objects, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{CLUSTER_LABEL}={name}");
    let observe_error = |kind| move |source| Error::Observe { kind, source };
    let tls = cluster.spec.tls.enabled;
    let get_secret = |name: String, wanted: bool| {
        let secrets = secrets.clone();
        async move {
            if !wanted {
                return Ok(None);
            }
            secrets
                .get_opt(&name)
                .await
                .map_err(observe_error("Secret"))
        }
    };
    let client_tokens = cluster
        .spec
        .client_auth
        .as_ref()
        .map(|a| a.secret_name.clone());
    let (admin, ca, node_cert, client_tokens, statefulset, pods) = tokio::try_join!(
        get_secret(admin_secret_name(cluster), true),
        get_secret(ca_secret_name(name), tls),
        get_secret(tls_secret_name(name), tls),
        get_secret(
            client_tokens.clone().unwrap_or_default(),
            client_tokens.is_some()
        ),
        async {
            statefulsets
                .get_opt(name)
                .await
                .map_err(observe_error("StatefulSet"))
        },
        async {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .map_err(observe_error("Pod"))
        },
    )?;
    Ok(Objects {
        admin,
        ca,
        node_cert,
        client_tokens,
        statefulset,
        pods,
    })
}

pub async fn observe(ctx: &Context, cluster: &ReplicatedCluster) -> Result<Observed, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let tls = cluster.spec.tls.enabled;
    let Objects {
        admin: secret,
        ca: ca_secret,
        node_cert: tls_secret,
        client_tokens,
        statefulset,
        pods: pod_list,
    } = read_objects(ctx, cluster, &namespace, &name).await?;
    let client_secret_ready = client_tokens
        .as_ref()
        .is_some_and(|s| secret_value(s, CLIENT_TOKENS_KEY).is_some());
    let client_secret_dedicated = client_tokens
        .as_ref()
        .is_some_and(|s| dedicated_to(s, cluster, CLIENT_TOKENS_FOR_LABEL));
    let admin_secret_dedicated = secret
        .as_ref()
        .is_some_and(|secret| dedicated_to(secret, cluster, ADMIN_SECRET_FOR_LABEL));
    let admin = secret.and_then(|secret| tokens_of(&secret));
    let ca = ca_secret.as_ref().and_then(stored_ca);
    let node_cert = tls_secret.as_ref().and_then(stored_node_cert);
    let auth = node_auth(
        admin.as_ref(),
        tls,
        ca.as_ref(),
        node_cert.as_ref(),
        &name,
        &namespace,
    );
    let mut pods: Vec<ObservedPod> = pod_list
        .items
        .iter()
        .map(|pod| observe_pod(pod, &name, &namespace, ctx.addressing))
        .collect();
    pods.sort_by_key(|p| (p.ordinal.unwrap_or(i32::MAX), p.name.clone()));

    let mut nodes_read_ms = None;
    let nodes = match &auth {
        Some(auth) => {
            nodes_read_ms = Some(k8s_openapi::jiff::Timestamp::now().as_millisecond());
            let loss_ms = cluster
                .spec
                .single_leader
                .as_ref()
                .and_then(|s| u64::try_from(s.leader_loss_timeout_ms).ok());
            observe_nodes(ctx, &pods, auth, loss_ms).await
        }
        None => BTreeMap::new(),
    };
    Ok(Observed {
        admin,
        auth,
        ca,
        node_cert,
        admin_secret_dedicated,
        client_secret_ready,
        client_secret_dedicated,
        statefulset,
        pods,
        nodes,
        nodes_read_ms,
    })
}

/// How long a node's status read may still run once the others show it to be a leader that a
/// majority has lost (see [`lost_leader_pending`]).
const LOST_LEADER_GRACE: Duration = Duration::from_millis(20);

/// Reads every addressable node's status concurrently; a node that does not answer is recorded,
/// not an error: an unreachable node is exactly what status must show.
///
/// SingleLeader (`loss_ms` set): when the only read still out is of the leader and the answers
/// in hand already show a majority without contact with it for `loss_ms` (its own silence being
/// one vote), the read gets [`LOST_LEADER_GRACE`] instead of the whole status timeout. A hung
/// leader would otherwise add that timeout to every failover; a live one could not change the
/// decision (its fence timeout is at most `loss_ms`, so it has stopped serving), and safety
/// never rests on this read: a deposed leader is fenced by epochs, not by the operator's view.
async fn observe_nodes(
    ctx: &Context,
    pods: &[ObservedPod],
    auth: &NodeAccess,
    loss_ms: Option<u64>,
) -> BTreeMap<String, Result<NodeStatus, String>> {
    let mut nodes = BTreeMap::new();
    let mut calls: FuturesUnordered<_> = pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|pod| async move {
            let result = match &pod.address {
                Some(address) => ctx
                    .nodes
                    .status(address, auth)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("pod has no address yet".to_owned()),
            };
            (pod.name.clone(), result)
        })
        .collect();
    let members = calls.len();
    let mut cut_at: Option<tokio::time::Instant> = None;
    loop {
        let next = match cut_at {
            None => calls.next().await,
            Some(at) => tokio::time::timeout_at(at, calls.next())
                .await
                .unwrap_or(None),
        };
        let Some((name, result)) = next else { break };
        nodes.insert(name, result);
        if cut_at.is_none() {
            let pending: Vec<&str> = pods
                .iter()
                .filter(|p| !p.terminating && !nodes.contains_key(&p.name))
                .map(|p| p.name.as_str())
                .collect();
            if loss_ms.is_some_and(|loss| lost_leader_pending(&nodes, &pending, members, loss)) {
                cut_at = Some(tokio::time::Instant::now() + LOST_LEADER_GRACE);
            }
        }
    }
    for pod in pods.iter().filter(|p| !p.terminating) {
        nodes.entry(pod.name.clone()).or_insert_with(|| {
            Err(format!(
                "no answer within {} ms of a majority reporting it a lost leader",
                LOST_LEADER_GRACE.as_millis()
            ))
        });
    }
    nodes
}

/// Whether the one read still `pending` is of a leader that the `answered` members, together
/// with its own silence, show lost: a majority of `members` without contact with it for
/// `loss_ms` (members that follow it and heard from it recently are not counted).
fn lost_leader_pending(
    answered: &BTreeMap<String, Result<NodeStatus, String>>,
    pending: &[&str],
    members: usize,
    loss_ms: u64,
) -> bool {
    let [leader] = pending else { return false };
    let statuses: Vec<&SingleLeaderStatus> = answered
        .values()
        .filter_map(|r| r.as_ref().ok()?.single_leader())
        .collect();
    let lost = statuses
        .iter()
        .filter(|n| {
            n.leader.as_deref() == Some(*leader)
                && n.ms_since_leader_contact.is_some_and(|ms| ms >= loss_ms)
        })
        .count();
    let in_contact = statuses.iter().any(|n| {
        n.leader.as_deref() == Some(*leader)
            && n.ms_since_leader_contact.is_none_or(|ms| ms < loss_ms)
    });
    !in_contact && lost + 1 >= crate::failover::majority(members)
}

/// Whether `secret` was made for `cluster`: labelled `<label>: <name>` or owned by it.
fn dedicated_to(secret: &Secret, cluster: &ReplicatedCluster, label: &str) -> bool {
    secret.labels().get(label) == Some(&cluster.name_any())
        || secret
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == cluster.metadata.uid.as_ref())
}

/// The trimmed, non-empty UTF-8 value of `key` in `secret`.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let value = String::from_utf8(bytes.0.clone()).ok()?;
    let value = value.trim().to_owned();
    (!value.is_empty()).then_some(value)
}

fn tokens_of(secret: &Secret) -> Option<AdminTokens> {
    Some(AdminTokens {
        token: secret_value(secret, ADMIN_TOKEN_KEY)?,
        next: secret_value(secret, NEXT_TOKEN_KEY),
        previous: secret_value(secret, PREVIOUS_TOKEN_KEY),
        rotation: secret.annotations().get(ROTATION_ANNOTATION).cloned(),
    })
}

fn stored_ca(secret: &Secret) -> Option<StoredCa> {
    Some(StoredCa {
        cert_pem: secret_value(secret, CA_CERT_KEY)?,
        key_pem: secret_value(secret, CA_KEY_KEY)?,
    })
}

fn stored_node_cert(secret: &Secret) -> Option<StoredNodeCert> {
    let annotations = secret.annotations();
    Some(StoredNodeCert {
        ca_bundle: secret_value(secret, CA_CERT_KEY)?,
        cert_pem: secret_value(secret, TLS_CERT_KEY)?,
        key_pem: secret_value(secret, TLS_KEY_KEY)?,
        not_after_s: annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
        names: annotations.get(NAMES_ANNOTATION)?.clone(),
        rotation: annotations.get(ROTATION_ANNOTATION).cloned(),
    })
}

/// The credentials for the nodes: the token, and with TLS the CA bundle the nodes trust (the
/// node certificate chains to it). `None` while either is missing.
pub fn node_auth(
    admin: Option<&AdminTokens>,
    tls: bool,
    ca: Option<&StoredCa>,
    node_cert: Option<&StoredNodeCert>,
    name: &str,
    namespace: &str,
) -> Option<NodeAccess> {
    let token = admin?.token.clone();
    let admin_port = u16::try_from(ADMIN_PORT).ok();
    if !tls {
        return Some(NodeAccess {
            token,
            tls: None,
            admin_port,
        });
    }
    // The node Secret's bundle when there is one (it may still list a previous CA), else the CA.
    let ca_pem = node_cert
        .map(|n| n.ca_bundle.clone())
        .or_else(|| ca.map(|c| c.cert_pem.clone()))?;
    Some(NodeAccess {
        token,
        tls: Some(ClusterTls {
            ca_pem,
            server_name: rc_tls::issue::cluster_server_name(name, namespace),
        }),
        admin_port,
    })
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
        revision: pod.labels().get(REVISION_LABEL).cloned(),
        uid: pod.metadata.uid.clone(),
        fenced: pod
            .annotations()
            .get(FENCED_ANNOTATION)
            .is_some_and(|v| v == "true"),
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::tests::{follower, node_status};

    fn answers(
        list: &[(&str, Option<usize>, Option<u64>)],
    ) -> BTreeMap<String, Result<NodeStatus, String>> {
        list.iter()
            .map(|(name, leader, contact)| {
                (
                    name.to_string(),
                    Ok(node_status(
                        name.to_string(),
                        follower(3, *leader, (3, 10), *contact),
                    )),
                )
            })
            .collect()
    }

    #[test]
    fn a_leader_lost_by_a_majority_is_not_waited_for() {
        // orders-1 lost orders-0 for 1000 ms: with orders-0's silence, 2 of 3.
        let nodes = answers(&[("orders-1", Some(0), Some(1000))]);
        assert!(lost_leader_pending(&nodes, &["orders-0"], 3, 1000));
        // Five members: two followers lost it, plus its silence, is three of five.
        let nodes = answers(&[
            ("orders-1", Some(0), Some(1500)),
            ("orders-2", Some(0), Some(1200)),
        ]);
        assert!(lost_leader_pending(&nodes, &["orders-0"], 5, 1000));
    }

    #[test]
    fn the_leader_read_runs_its_course_otherwise() {
        // Contact younger than the timeout.
        let nodes = answers(&[("orders-1", Some(0), Some(999))]);
        assert!(!lost_leader_pending(&nodes, &["orders-0"], 3, 1000));
        // One follower lost it, another still hears it.
        let nodes = answers(&[
            ("orders-1", Some(0), Some(1500)),
            ("orders-2", Some(0), Some(10)),
        ]);
        assert!(!lost_leader_pending(&nodes, &["orders-0"], 3, 1000));
        // Not a majority of five.
        let nodes = answers(&[("orders-1", Some(0), Some(1500))]);
        assert!(!lost_leader_pending(&nodes, &["orders-0"], 5, 1000));
        // The pending member is not the leader they name.
        let nodes = answers(&[("orders-1", Some(2), Some(1500))]);
        assert!(!lost_leader_pending(&nodes, &["orders-0"], 3, 1000));
        // Two reads out.
        let nodes = answers(&[("orders-1", Some(0), Some(1500))]);
        assert!(!lost_leader_pending(
            &nodes,
            &["orders-0", "orders-2"],
            3,
            1000
        ));
        // Unreadable answers count for nothing.
        let mut nodes = answers(&[]);
        nodes.insert("orders-1".into(), Err("timeout".into()));
        assert!(!lost_leader_pending(&nodes, &["orders-0"], 3, 1000));
    }
}
