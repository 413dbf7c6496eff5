//! (pure) `ConfigMap <name>-config`: the nodes' `RC_*` settings, loaded with `envFrom`.

use rc_api::env;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::owned_meta;
use crate::controller::validate::ValidatedCluster;

/// Settings a running node receives from the operator instead of a restart; kept out of
/// [`config_hash`] so that scaling does not make every pod look outdated.
const LIVE_KEYS: &[&str] = &[env::PEERS];

pub fn build_config_map(cluster: &ValidatedCluster) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(cluster, &cluster.config_map_name),
        data: Some(cluster.node_config.clone()),
        ..ConfigMap::default()
    }
}

/// A stable fingerprint (FNV-1a, hex) of the settings a node reads only at start. The pod
/// template carries it, so a settings change is a new StatefulSet revision and the operator can
/// tell which pods run with old settings.
pub fn config_hash(config: &BTreeMap<String, String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (key, value) in config
        .iter()
        .filter(|(k, _)| !LIVE_KEYS.contains(&k.as_str()))
    {
        feed(key.as_bytes());
        feed(b"=");
        feed(value.as_bytes());
        feed(b"\n");
    }
    format!("{hash:016x}")
}
