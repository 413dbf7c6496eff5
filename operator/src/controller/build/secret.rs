//! (pure) The admin Secret `<name>-admin`, built only when the user named none. The token comes
//! from the caller (randomness is I/O); `apply` creates the Secret once and never updates it, so
//! the token is stable for the cluster's life.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::owned_meta;
use crate::controller::validate::{ValidatedCluster, ADMIN_TOKEN_KEY};

pub fn build_admin_secret(cluster: &ValidatedCluster, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(cluster, &cluster.admin_secret.name),
        type_: Some("Opaque".to_owned()),
        string_data: Some(BTreeMap::from([(
            ADMIN_TOKEN_KEY.to_owned(),
            token.to_owned(),
        )])),
        ..Secret::default()
    }
}
