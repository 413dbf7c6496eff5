//! (client) The credentials step: with TLS, issue the cluster's CA and node certificate when
//! [`crate::credentials::cert_step`] says so and publish the CA for clients; for a managed admin
//! Secret, take the next step of a token rotation ([`crate::credentials::token_step`]). Runs
//! before the objects are applied, so a new cluster's pods find their Secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use rand::Rng;
use rc_tls::issue::ClusterCa;
use serde_json::json;
use tracing::info;

use super::apply::server_side_apply;
use super::build::owned_meta;
use super::observe::{node_auth, Observed};
use super::validate::{
    TlsNames, ValidatedCluster, ADMIN_TOKEN_KEY, CA_CERT_KEY, CA_KEY_KEY, NEXT_TOKEN_KEY,
    PREVIOUS_TOKEN_KEY, TLS_CERT_KEY, TLS_KEY_KEY,
};
use super::{Context, Error};
use crate::crd::ReplicatedCluster;
use crate::credentials::{
    cert_step, token_step, AdminTokens, CertStep, StoredCa, StoredNodeCert, TokenStep,
};
use crate::labels::{
    NAMES_ANNOTATION, NOT_AFTER_ANNOTATION, ROTATE_ADMIN_TOKEN_ANNOTATION,
    ROTATE_CERTIFICATE_ANNOTATION, ROTATION_ANNOTATION,
};

/// A cluster CA is valid this long; node certificates are renewed well before.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// What the step found or did, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialsOutcome {
    /// A token rotation under way: what it waits for.
    pub token_rotation: Option<String>,
}

/// A new random admin token (32 bytes, hex).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &mut Observed,
) -> Result<CredentialsOutcome, Error> {
    if let Some(tls) = &valid.tls {
        certificates(ctx, cluster, valid, tls, observed).await?;
    }
    let mut outcome = CredentialsOutcome::default();
    if valid.admin_secret.managed {
        outcome.token_rotation = rotate_token(ctx, cluster, valid, observed).await?;
    }
    observed.auth = node_auth(
        observed.admin.as_ref(),
        valid.tls.is_some(),
        observed.ca.as_ref(),
        observed.node_cert.as_ref(),
        &valid.name,
        &valid.namespace,
    );
    Ok(outcome)
}

async fn certificates(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    tls: &TlsNames,
    observed: &mut Observed,
) -> Result<(), Error> {
    let requested = cluster.annotations().get(ROTATE_CERTIFICATE_ANNOTATION);
    let names = tls.dns_names.join(",");
    let now_s = k8s_openapi::jiff::Timestamp::now().as_second();
    let lifetime_s = i64::try_from(ctx.certificate_lifetime.as_secs()).unwrap_or(i64::MAX);
    let step = cert_step(
        observed.ca.as_ref(),
        observed.node_cert.as_ref(),
        requested.map(String::as_str),
        &names,
        now_s,
        lifetime_s,
    );
    let ca_name = format!("{}/{} rc CA", valid.namespace, valid.name);
    let (ca, bundle, reason) = match step {
        CertStep::Keep => {
            publish_ca(ctx, valid, tls, observed).await?;
            return Ok(());
        }
        CertStep::IssueCa => {
            let ca = ClusterCa::generate(&ca_name, CA_LIFETIME).map_err(issue_failed)?;
            let stored = StoredCa {
                cert_pem: ca.cert_pem.clone(),
                key_pem: ca.key_pem.clone(),
            };
            write_secret(
                ctx,
                valid,
                &tls.ca_secret,
                None,
                ca_secret_data(&stored),
                BTreeMap::new(),
            )
            .await?;
            // Nodes not yet given the new certificate are still trusted through the old CA.
            let bundle = match &observed.node_cert {
                Some(old) => format!("{}\n{}", ca.cert_pem.trim(), old.ca_bundle.trim()),
                None => ca.cert_pem.clone(),
            };
            observed.ca = Some(stored);
            (ca, bundle, "a new cluster CA was issued")
        }
        CertStep::IssueNode(reason) => {
            let Some(stored) = &observed.ca else {
                return Ok(());
            };
            let ca = ClusterCa::from_pem(&ca_name, &stored.cert_pem, &stored.key_pem)
                .map_err(issue_failed)?;
            let bundle = stored.cert_pem.clone();
            (ca, bundle, reason)
        }
    };
    let node = issue_node_certificate(ctx, valid, tls, &ca, bundle, requested).await?;
    info!(cluster = %valid.name, namespace = %valid.namespace, reason, certificate = %node.fingerprint, not_after_s = node.stored.not_after_s, "issued the node certificate");
    let note = format!(
        "issued node certificate {} ({reason}); nodes serve it once their Secret volume refreshes",
        node.fingerprint
    );
    ctx.publish(
        &cluster.object_ref(&()),
        EventType::Normal,
        "CertificateIssued",
        note,
    )
    .await;
    observed.node_cert = Some(node.stored);
    publish_ca(ctx, valid, tls, observed).await
}

/// A node certificate just issued and stored, and its fingerprint.
struct IssuedNode {
    stored: StoredNodeCert,
    fingerprint: String,
}

/// Issues a node certificate from `ca` and writes it, with `bundle`, into the node Secret.
async fn issue_node_certificate(
    ctx: &Context,
    valid: &ValidatedCluster,
    tls: &TlsNames,
    ca: &ClusterCa,
    bundle: String,
    requested: Option<&String>,
) -> Result<IssuedNode, Error> {
    let common_name = format!("{}/{} rc-node", valid.namespace, valid.name);
    let issued = ca
        .issue(&common_name, &tls.dns_names, &[], ctx.certificate_lifetime)
        .map_err(issue_failed)?;
    let not_after_s = issued
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let node = StoredNodeCert {
        ca_bundle: bundle,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
        not_after_s,
        names: tls.dns_names.join(","),
        rotation: requested.cloned(),
    };
    let mut annotations = BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_owned(), not_after_s.to_string()),
        (NAMES_ANNOTATION.to_owned(), node.names.clone()),
    ]);
    if let Some(r) = &node.rotation {
        annotations.insert(ROTATION_ANNOTATION.to_owned(), r.clone());
    }
    write_secret(
        ctx,
        valid,
        &tls.tls_secret,
        Some("kubernetes.io/tls"),
        node_secret_data(&node),
        annotations,
    )
    .await?;
    let fingerprint =
        rc_tls::server::certified_key(node.cert_pem.as_bytes(), node.key_pem.as_bytes())
            .ok()
            .and_then(|k| k.cert.first().map(|c| rc_tls::fingerprint(c.as_ref())))
            .unwrap_or_default();
    Ok(IssuedNode {
        stored: node,
        fingerprint,
    })
}

fn issue_failed(e: anyhow::Error) -> Error {
    Error::Credentials(format!("issuing certificates: {e:#}"))
}

fn ca_secret_data(ca: &StoredCa) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (CA_CERT_KEY.to_owned(), bytes(&ca.cert_pem)),
        (CA_KEY_KEY.to_owned(), bytes(&ca.key_pem)),
    ])
}

fn node_secret_data(node: &StoredNodeCert) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (CA_CERT_KEY.to_owned(), bytes(&node.ca_bundle)),
        (TLS_CERT_KEY.to_owned(), bytes(&node.cert_pem)),
        (TLS_KEY_KEY.to_owned(), bytes(&node.key_pem)),
    ])
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// Server-side apply of an operator-owned Secret (owned by the cluster, so deleted with it).
async fn write_secret(
    ctx: &Context,
    valid: &ValidatedCluster,
    name: &str,
    type_: Option<&str>,
    data: BTreeMap<String, ByteString>,
    annotations: BTreeMap<String, String>,
) -> Result<(), Error> {
    let mut metadata = owned_meta(valid, name);
    metadata.annotations = Some(annotations);
    let secret = Secret {
        metadata,
        type_: type_.map(str::to_owned),
        data: Some(data),
        ..Secret::default()
    };
    server_side_apply(&ctx.client, &valid.namespace, &secret).await
}

/// The CA bundle for clients, in ConfigMap `<cluster>-ca` (`ca.crt`).
async fn publish_ca(
    ctx: &Context,
    valid: &ValidatedCluster,
    tls: &TlsNames,
    observed: &Observed,
) -> Result<(), Error> {
    let Some(bundle) = observed
        .node_cert
        .as_ref()
        .map(|n| n.ca_bundle.clone())
        .or_else(|| observed.ca.as_ref().map(|c| c.cert_pem.clone()))
    else {
        return Ok(());
    };
    let config_map = ConfigMap {
        metadata: owned_meta(valid, &tls.ca_config_map),
        data: Some(BTreeMap::from([(CA_CERT_KEY.to_owned(), bundle)])),
        ..ConfigMap::default()
    };
    server_side_apply(&ctx.client, &valid.namespace, &config_map).await
}

/// The merge patch of the admin Secret for a rotation step, what to say about it, and the
/// tokens after it.
fn token_patch(
    step: TokenStep,
    tokens: &AdminTokens,
) -> Option<(serde_json::Value, &'static str, AdminTokens)> {
    let b64 = |t: &str| json!(ByteString(t.as_bytes().to_vec()));
    match step {
        TokenStep::Idle | TokenStep::Waiting(_) => None,
        TokenStep::Begin { request } => {
            let next = new_token();
            let patch = json!({
                "metadata": {"annotations": {ROTATION_ANNOTATION: request}},
                "data": {NEXT_TOKEN_KEY: b64(&next)},
            });
            let after = AdminTokens {
                next: Some(next),
                rotation: Some(request),
                ..tokens.clone()
            };
            Some((
                patch,
                "admin token rotation: step 1 of 3, every node accepts the next token",
                after,
            ))
        }
        TokenStep::Promote => {
            let next = tokens.next.clone()?;
            let patch = json!({"data": {
                ADMIN_TOKEN_KEY: b64(&next),
                PREVIOUS_TOKEN_KEY: b64(&tokens.token),
                NEXT_TOKEN_KEY: null,
            }});
            let after = AdminTokens {
                token: next,
                next: None,
                previous: Some(tokens.token.clone()),
                rotation: tokens.rotation.clone(),
            };
            Some((
                patch,
                "admin token rotation: step 2 of 3, nodes and the operator send the new token",
                after,
            ))
        }
        TokenStep::Finish => {
            let patch = json!({"data": {PREVIOUS_TOKEN_KEY: null}});
            let after = AdminTokens {
                previous: None,
                ..tokens.clone()
            };
            Some((
                patch,
                "admin token rotation: step 3 of 3, the previous token is no longer accepted",
                after,
            ))
        }
    }
}

/// Takes the next step of an admin-token rotation; returns what a step under way waits for.
async fn rotate_token(
    ctx: &Context,
    cluster: &ReplicatedCluster,
    valid: &ValidatedCluster,
    observed: &mut Observed,
) -> Result<Option<String>, Error> {
    let Some(tokens) = observed.admin.clone() else {
        return Ok(None);
    };
    let requested = cluster.annotations().get(ROTATE_ADMIN_TOKEN_ANNOTATION);
    let members: Vec<(String, Option<&rc_api::Credentials>)> = observed
        .pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|p| {
            let status = observed.nodes.get(&p.name).and_then(|r| r.as_ref().ok());
            (p.name.clone(), status.map(|s| &s.credentials))
        })
        .collect();
    let step = token_step(&tokens, requested.map(String::as_str), &members);
    let (patch, note, next) = match step {
        TokenStep::Idle => return Ok(None),
        TokenStep::Waiting(message) => return Ok(Some(message)),
        step => match token_patch(step, &tokens) {
            Some(change) => change,
            None => return Ok(None),
        },
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    api.patch(
        &valid.admin_secret.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Secret".into(),
        name: valid.admin_secret.name.clone(),
        source,
    })?;
    info!(cluster = %valid.name, namespace = %valid.namespace, "{note}");
    ctx.publish(
        &cluster.object_ref(&()),
        EventType::Normal,
        "AdminTokenRotation",
        note.to_owned(),
    )
    .await;
    // What the Secret holds now, should it be deleted before the next pass reads it.
    ctx.remember_tokens(cluster, &next);
    observed.admin = Some(next);
    Ok(Some(note.to_owned()))
}
