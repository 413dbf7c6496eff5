//! (pure) The admin Secret `<name>-admin`, built only when the user named none and it does not
//! exist: at creation with a new token, or after it was deleted with the tokens (and rotation
//! step) it last held, so the nodes' token stays valid. The tokens come from the caller
//! (randomness is I/O); token changes are rotations (`crate::credentials`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::owned_meta;
use crate::controller::validate::{
    ValidatedCluster, ADMIN_TOKEN_KEY, NEXT_TOKEN_KEY, PREVIOUS_TOKEN_KEY,
};
use crate::credentials::AdminTokens;
use crate::labels::ROTATION_ANNOTATION;

pub fn build_admin_secret(cluster: &ValidatedCluster, tokens: &AdminTokens) -> Secret {
    let mut metadata = owned_meta(cluster, &cluster.admin_secret.name);
    if let Some(rotation) = &tokens.rotation {
        metadata.annotations = Some(BTreeMap::from([(
            ROTATION_ANNOTATION.to_owned(),
            rotation.clone(),
        )]));
    }
    let keys = [
        (ADMIN_TOKEN_KEY, Some(&tokens.token)),
        (NEXT_TOKEN_KEY, tokens.next.as_ref()),
        (PREVIOUS_TOKEN_KEY, tokens.previous.as_ref()),
    ];
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        string_data: Some(
            keys.into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.clone())))
                .collect(),
        ),
        ..Secret::default()
    }
}
