//! (client) Server-side apply of the desired objects, one field manager, in a fixed order:
//!
//! 1. the admin Secret (created when managed and absent, with the token the nodes hold when it
//!    was deleted; token changes are rotations, `controller::credentials`),
//! 2. the ConfigMap, 3. the peers Service, 4. the client Services: everything the pods mount or
//!    resolve exists before the pods do, so they never sit in `ContainerCreating`,
//! 5. the StatefulSet, 6. the PodDisruptionBudget, 7. the NetworkPolicy.
//!
//! `force`: the operator is the only owner of these fields; a hand edit is overwritten.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use kube::runtime::events::EventType;

use super::build::Desired;
use super::observe::Observed;
use super::validate::ValidatedCluster;
use super::{Context, Error};
use crate::crd::ReplicatedCluster;
use crate::credentials::AdminTokens;

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "rc-operator";

/// Applies `desired`; `new_secret` is the admin Secret to create when it does not exist yet.
pub async fn apply(
    client: &Client,
    namespace: &str,
    desired: &Desired,
    new_secret: Option<&Secret>,
) -> Result<bool, Error> {
    let mut created_secret = false;
    if let Some(secret) = new_secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                },
                secret,
            )
            .await
        {
            Ok(_) => created_secret = true,
            // Another reconcile (or operator replica) got there first: keep its token.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Secret".into(),
                    name: secret.name_any(),
                    source,
                })
            }
        }
    }
    server_side_apply(client, namespace, &desired.config_map).await?;
    server_side_apply(client, namespace, &desired.peers_service).await?;
    for service in &desired.client_services {
        server_side_apply(client, namespace, service).await?;
    }
    server_side_apply(client, namespace, &desired.statefulset).await?;
    server_side_apply(client, namespace, &desired.pdb).await?;
    if let Some(policy) = &desired.network_policy {
        server_side_apply(client, namespace, policy).await?;
    }
    Ok(created_secret)
}

/// Server-side apply of `object`, forced, with the operator's field manager.
pub(super) async fn server_side_apply<K>(
    client: &Client,
    namespace: &str,
    object: &K,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).to_string(),
            name,
            source,
        })
}

/// Builds every owned object (pure) and applies them (client), with a new admin Secret when the
/// operator manages it and has none yet: with the token this process last saw in it when it
/// was deleted (the nodes still hold that one: no lock-out), else a new random one (the nodes
/// take it as their Secret volumes refresh).
pub(super) async fn apply_objects(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &Observed,
) -> Result<(), Error> {
    let desired = super::build::build_all(valid, ctx.operator_pods.as_ref()); // pure
    let remembered = ctx.remembered_tokens(cluster);
    let new_secret = (valid.admin_secret.managed && observed.admin.is_none()).then(|| {
        let tokens = remembered.clone().unwrap_or_else(|| AdminTokens {
            token: super::credentials::new_token(),
            ..AdminTokens::default()
        });
        super::build::build_admin_secret(valid, &tokens)
    });
    if apply(&ctx.client, &valid.namespace, &desired, new_secret.as_ref()).await? {
        let (reason, note) = match &remembered {
            Some(_) => (
                "AdminSecretRestored",
                format!(
                    "admin Secret {} was deleted; recreated with the token the nodes hold",
                    valid.admin_secret.name
                ),
            ),
            None => (
                "AdminSecretCreated",
                format!("created admin Secret {}", valid.admin_secret.name),
            ),
        };
        ctx.publish(&cluster.object_ref(&()), EventType::Normal, reason, note)
            .await;
    }
    Ok(())
}
