//! (pure) `NetworkPolicy <name>`: who may reach which port of the cluster's pods.
//!
//! - the client port: anyone (applications; the kubelet's probes; Prometheus for `/metrics`);
//! - the peer port (replication, the leaderless internal API): the cluster's own pods only;
//! - the admin port (fencing, promotion, membership): the operator's pods only.
//!
//! Only built when the operator knows where its own pods run (`POD_NAMESPACE`, set by the
//! chart): an operator running outside the cluster would otherwise shut itself out. The policy
//! only has effect where the network plugin enforces NetworkPolicy.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::owned_meta;
use crate::controller::validate::{ValidatedCluster, ADMIN_PORT, NODE_PORT, PEER_PORT};

/// The operator's pods: their namespace and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

pub fn build_network_policy(cluster: &ValidatedCluster, operator: &OperatorPods) -> NetworkPolicy {
    let port = |p: i32| {
        Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(p)),
            protocol: Some("TCP".to_owned()),
            ..NetworkPolicyPort::default()
        }])
    };
    let selector = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let members = NetworkPolicyPeer {
        pod_selector: Some(selector(cluster.selector_labels())),
        ..NetworkPolicyPeer::default()
    };
    let operator_pods = NetworkPolicyPeer {
        namespace_selector: Some(selector(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            operator.namespace.clone(),
        )]))),
        pod_selector: Some(selector(operator.labels.clone())),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: owned_meta(cluster, &cluster.name),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(cluster.selector_labels())),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: port(NODE_PORT),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: port(PEER_PORT),
                    from: Some(vec![members]),
                },
                NetworkPolicyIngressRule {
                    ports: port(ADMIN_PORT),
                    from: Some(vec![operator_pods]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}
