//! (pure) `PodDisruptionBudget <name>`: voluntary disruptions (drains, evictions) never take
//! more nodes than the cluster can lose and still serve.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::owned_meta;
use crate::controller::validate::ValidatedCluster;

pub fn build_pdb(cluster: &ValidatedCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(cluster, &cluster.name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(cluster.max_unavailable())),
            selector: Some(LabelSelector {
                match_labels: Some(cluster.selector_labels()),
                ..LabelSelector::default()
            }),
            // A pod that is already unhealthy adds nothing to quorum; evicting it must not be
            // blocked, or a node drain hangs on an already degraded cluster.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
