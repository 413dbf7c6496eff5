//! (pure) Builders: one per kind, each `build_<kind>(&ValidatedCluster) -> <Kind>` returning the
//! complete object the operator owns (name, namespace, labels, owner reference). No client, no
//! clock, no randomness: the same cluster always builds the same objects.

mod config_map;
mod network_policy;
mod pdb;
mod secret;
mod service;
mod statefulset;

#[cfg(test)]
mod tests;

pub use config_map::{build_config_map, config_hash};
pub use network_policy::{build_network_policy, OperatorPods};
pub use pdb::build_pdb;
pub use secret::build_admin_secret;
pub use service::{build_client_services, build_peers_service};
pub use statefulset::build_statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::validate::ValidatedCluster;

/// Every object the operator keeps in step with the spec (the admin Secret is separate: it is
/// created once, never updated).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub peers_service: Service,
    pub client_services: Vec<Service>,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// Only when the operator knows where its own pods run (see `network_policy`).
    pub network_policy: Option<NetworkPolicy>,
}

/// Builds every object of [`Desired`]; `operator` is where the operator's own pods run.
pub fn build_all(cluster: &ValidatedCluster, operator: Option<&OperatorPods>) -> Desired {
    Desired {
        config_map: build_config_map(cluster),
        peers_service: build_peers_service(cluster),
        client_services: build_client_services(cluster),
        statefulset: build_statefulset(cluster),
        pdb: build_pdb(cluster),
        network_policy: operator.map(|o| build_network_policy(cluster, o)),
    }
}

/// Metadata of an owned object: name, namespace, the cluster's labels, and the controller
/// owner reference that makes Kubernetes delete it with the cluster.
pub(super) fn owned_meta(cluster: &ValidatedCluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(cluster.labels()),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod statefulset_tests;
