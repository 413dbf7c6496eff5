//! (pure) Services: the headless `<name>-peers` Service that gives every pod a stable DNS name,
//! and the client Services (SingleLeader: `<name>-leader`, `<name>-replicas`; Leaderless:
//! `<name>`).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::owned_meta;
use crate::controller::validate::{ValidatedCluster, NODE_PORT, NODE_PORT_NAME};
use crate::labels::ROLE_LABEL;

fn node_port() -> ServicePort {
    ServicePort {
        name: Some(NODE_PORT_NAME.to_owned()),
        port: NODE_PORT,
        target_port: Some(IntOrString::String(NODE_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// Headless Service for pod DNS (`<pod>.<name>-peers.<ns>.svc`). It publishes pods before they
/// are ready: a follower is not ready until it has a leader, and the leader must reach it to
/// become one.
pub fn build_peers_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: owned_meta(cluster, &cluster.peers_service_name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster.selector_labels()),
            ports: Some(vec![node_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Client Services. In SingleLeader mode they select on the role label the operator moves
/// between pods, so `<name>-leader` always points at the current leader.
pub fn build_client_services(cluster: &ValidatedCluster) -> Vec<Service> {
    cluster
        .client_services
        .iter()
        .map(|client| {
            let mut selector = cluster.selector_labels();
            if let Some(role) = client.role {
                selector.insert(ROLE_LABEL.to_owned(), role.to_owned());
            }
            Service {
                metadata: owned_meta(cluster, &client.name),
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".to_owned()),
                    selector: Some(selector),
                    ports: Some(vec![node_port()]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            }
        })
        .collect()
}
