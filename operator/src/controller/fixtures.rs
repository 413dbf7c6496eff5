//! Test fixtures: ReplicatedClusters as the API server would hand them to the controller.

use kube::api::ObjectMeta;

use crate::crd::{Mode, ReplicatedCluster, ReplicatedClusterSpec};

pub const UID: &str = "0b6e3a52-7d0b-4a3e-9c53-1d2f3e4a5b6c";

/// A cluster named `orders` in namespace `shop`, as stored (uid, generation set), with every
/// field at its schema default.
pub fn cluster(mode: Mode) -> ReplicatedCluster {
    let spec: ReplicatedClusterSpec = match serde_json::from_value(serde_json::json!({
        "mode": mode,
    })) {
        Ok(spec) => spec,
        Err(e) => unreachable!("fixture spec does not parse: {e}"),
    };
    ReplicatedCluster {
        metadata: ObjectMeta {
            name: Some("orders".into()),
            namespace: Some("shop".into()),
            uid: Some(UID.into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}
