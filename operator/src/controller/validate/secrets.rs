//! (pure) The Secrets a cluster names: the admin token's and the client tokens'. Both are
//! mounted into pods running an image the user chooses, so each must have been made for this
//! cluster (labelled for it, or owned by it), not be any Secret of the namespace.

use super::{AdminSecret, ObservedFacts, SpecError};
use crate::crd::ReplicatedClusterSpec;

/// Where the client tokens Secret is mounted, and its key.
pub const CLIENT_TOKENS_DIR: &str = "/etc/rc-node/clients";
pub const CLIENT_TOKENS_KEY: &str = "tokens";

/// The admin Secret: the one the user named, which must exist and be made for this cluster,
/// else `<cluster>-admin`, which `apply` creates when it does not exist yet.
pub(super) fn admin_secret(
    name: &str,
    spec: &ReplicatedClusterSpec,
    facts: &ObservedFacts,
) -> Result<AdminSecret, SpecError> {
    let Some(reference) = &spec.admin_secret_ref else {
        return Ok(AdminSecret {
            name: format!("{name}-admin"),
            managed: true,
        });
    };
    if !facts.admin_secret_ready {
        return Err(SpecError::AdminSecret(reference.name.clone()));
    }
    if !facts.admin_secret_dedicated {
        return Err(SpecError::AdminSecretNotDedicated {
            secret: reference.name.clone(),
            cluster: name.to_owned(),
        });
    }
    Ok(AdminSecret {
        name: reference.name.clone(),
        managed: false,
    })
}

/// The client tokens Secret, with `spec.clientAuth`: it must exist and be made for this cluster.
pub(super) fn client_tokens_secret(
    name: &str,
    spec: &ReplicatedClusterSpec,
    facts: &ObservedFacts,
) -> Result<Option<String>, SpecError> {
    let Some(auth) = &spec.client_auth else {
        return Ok(None);
    };
    if !facts.client_secret_ready {
        return Err(SpecError::ClientTokensSecret(auth.secret_name.clone()));
    }
    if !facts.client_secret_dedicated {
        return Err(SpecError::ClientTokensSecretNotDedicated {
            secret: auth.secret_name.clone(),
            cluster: name.to_owned(),
        });
    }
    Ok(Some(auth.secret_name.clone()))
}
