//! (I/O: API reads, TokenRequests) What a volume the kubelet writes should hold, read from the
//! API: the keys of a `secret` or `configMap` (all, or the `items` chosen), `downwardAPI`
//! fields, and the sources of a `projected` volume in order (a later one wins a path), with
//! `serviceAccountToken`s from the TokenRequest API, bound to the pod.
//!
//! As in the kubelet: a Secret or ConfigMap that does not exist is an error (the volume's
//! files stay as they were) unless the reference is `optional`, when it contributes nothing
//! (so a refresh removes the files it had); a key named in `items` that is missing is an error
//! unless `optional`. The alpha `user`/`defaultUser` file owners are not supported.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, ProjectedVolumeSource, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::api::PostParams;
use kube::Api;

use super::files::Payload;
use super::VolumeContext;
use crate::env::field_value;

/// Whether a pass requests new service-account tokens or keeps the files already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Request,
    Keep,
}

/// One volume's payload, and when its tokens need renewing (80% of the shortest life), if it
/// requested any.
#[derive(Debug, Default)]
pub struct Collected {
    pub payload: Payload,
    pub renew_after: Option<Duration>,
}

/// Whether the kubelet writes this volume's files (and so refreshes them).
pub fn is_written(vol: &Volume) -> bool {
    vol.secret.is_some()
        || vol.config_map.is_some()
        || vol.downward_api.is_some()
        || vol.projected.is_some()
}

/// The payload of a volume the kubelet writes; `None` for other kinds.
pub async fn collect(
    cx: &VolumeContext<'_>,
    vol: &Volume,
    tokens: Tokens,
) -> anyhow::Result<Option<Collected>> {
    let mut out = Collected::default();
    if let Some(s) = &vol.secret {
        let name = s.secret_name.as_deref().unwrap_or_default();
        let keys = Keys::new(s.items.as_deref(), s.default_mode, s.optional);
        add_object::<Secret>(cx, &mut out.payload, name, keys).await?;
    } else if let Some(c) = &vol.config_map {
        let keys = Keys::new(c.items.as_deref(), c.default_mode, c.optional);
        add_object::<ConfigMap>(cx, &mut out.payload, &c.name, keys).await?;
    } else if let Some(d) = &vol.downward_api {
        let items = d.items.as_deref().unwrap_or(&[]);
        add_downward(cx, &mut out.payload, items, d.default_mode)?;
    } else if let Some(p) = &vol.projected {
        add_projected(cx, &mut out, p, tokens).await?;
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Which keys of a Secret or ConfigMap become files, with what mode, and whether it may be
/// missing.
struct Keys<'a> {
    items: Option<&'a [KeyToPath]>,
    mode: Option<i32>,
    optional: Option<bool>,
}

impl<'a> Keys<'a> {
    fn new(items: Option<&'a [KeyToPath]>, mode: Option<i32>, optional: Option<bool>) -> Self {
        Keys {
            items,
            mode,
            optional,
        }
    }
}

/// An object whose keys a volume can make files of: a Secret or a ConfigMap.
trait KeyData:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// What the object is called in errors.
    const KIND: &'static str;
    /// Every key with its bytes (string and binary data together).
    fn key_data(&self) -> BTreeMap<&str, &[u8]>;
}

impl KeyData for Secret {
    const KIND: &'static str = "secret";
    fn key_data(&self) -> BTreeMap<&str, &[u8]> {
        secret_data(self)
    }
}

impl KeyData for ConfigMap {
    const KIND: &'static str = "configmap";
    fn key_data(&self) -> BTreeMap<&str, &[u8]> {
        config_map_data(self)
    }
}

/// The keys of the Secret or ConfigMap `name` as files (nothing if optional and missing).
async fn add_object<K: KeyData>(
    cx: &VolumeContext<'_>,
    payload: &mut Payload,
    name: &str,
    keys: Keys<'_>,
) -> anyhow::Result<()> {
    let Some(object) = referenced::<K>(cx, K::KIND, name, keys.optional).await? else {
        return Ok(());
    };
    add_keys(payload, &object.key_data(), keys)
}

/// Every source of a projected volume, in order.
async fn add_projected(
    cx: &VolumeContext<'_>,
    out: &mut Collected,
    p: &ProjectedVolumeSource,
    tokens: Tokens,
) -> anyhow::Result<()> {
    let mode = p.default_mode;
    for source in p.sources.iter().flatten() {
        if let Some(s) = &source.secret {
            let keys = Keys::new(s.items.as_deref(), mode, s.optional);
            add_object::<Secret>(cx, &mut out.payload, &s.name, keys).await?;
        }
        if let Some(c) = &source.config_map {
            let keys = Keys::new(c.items.as_deref(), mode, c.optional);
            add_object::<ConfigMap>(cx, &mut out.payload, &c.name, keys).await?;
        }
        if let Some(d) = &source.downward_api {
            add_downward(
                cx,
                &mut out.payload,
                d.items.as_deref().unwrap_or(&[]),
                mode,
            )?;
        }
        if let Some(t) = &source.service_account_token {
            if tokens == Tokens::Keep {
                out.payload.keep(&t.path)?;
                continue;
            }
            let (token, life) = request_token(cx, t).await?;
            out.payload.add(&t.path, token, mode.unwrap_or(0o644))?;
            let after = life.mul_f64(0.8);
            out.renew_after = Some(out.renew_after.map_or(after, |r| r.min(after)));
        }
    }
    Ok(())
}

/// The Secret or ConfigMap a volume names; `None` when it does not exist and the reference is
/// optional.
async fn referenced<K>(
    cx: &VolumeContext<'_>,
    kind: &str,
    name: &str,
    optional: Option<bool>,
) -> anyhow::Result<Option<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let found = Api::<K>::namespaced(cx.client.clone(), cx.namespace())
        .get_opt(name)
        .await
        .with_context(|| format!("reading {kind} {name:?}"))?;
    if found.is_none() && optional != Some(true) {
        bail!("{kind} {name:?} not found");
    }
    Ok(found)
}

/// A token for the pod's service account, bound to the pod, and how long it lives.
async fn request_token(
    cx: &VolumeContext<'_>,
    proj: &ServiceAccountTokenProjection,
) -> anyhow::Result<(String, Duration)> {
    let ns = cx.namespace();
    let sa = cx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: proj.audience.clone().map(|a| vec![a]),
            expiration_seconds: Some(proj.expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: cx.pod.metadata.name.clone(),
                uid: cx.pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(cx.client.clone(), ns)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for serviceaccount {ns}/{sa}"))?;
    let Some((token, expires)) = answer
        .status
        .and_then(|s| Some((s.token?, s.expiration_timestamp?)))
    else {
        bail!("TokenRequest for {ns}/{sa} returned no token");
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let life = expires.0.duration_since(now);
    let life = Duration::from_secs(u64::try_from(life.as_secs()).unwrap_or(0).max(60));
    Ok((token, life))
}

fn secret_data(secret: &Secret) -> BTreeMap<&str, &[u8]> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .chain(
            secret
                .string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        )
        .collect()
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<&str, &[u8]> {
    cm.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .chain(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice())),
        )
        .collect()
}

/// Every key as a file named after it, or only the `items` chosen, at their paths.
fn add_keys(payload: &mut Payload, data: &BTreeMap<&str, &[u8]>, keys: Keys) -> anyhow::Result<()> {
    let default_mode = keys.mode.unwrap_or(0o644);
    let Some(items) = keys.items else {
        for (k, v) in data {
            payload.add(k, *v, default_mode)?;
        }
        return Ok(());
    };
    for item in items {
        match data.get(item.key.as_str()) {
            Some(v) => payload.add(&item.path, *v, item.mode.unwrap_or(default_mode))?,
            None if keys.optional == Some(true) => {}
            None => bail!("key {:?} not found", item.key),
        }
    }
    Ok(())
}

fn add_downward(
    cx: &VolumeContext<'_>,
    payload: &mut Payload,
    items: &[DownwardAPIVolumeFile],
    mode: Option<i32>,
) -> anyhow::Result<()> {
    for item in items {
        let value = match &item.field_ref {
            Some(f) => field_value(cx.pod, &f.field_path, cx.pod_ip, cx.host_ip)?,
            None => bail!("downwardAPI {:?}: only fieldRef is supported", item.path),
        };
        payload.add(&item.path, value, item.mode.or(mode).unwrap_or(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::path::PathBuf;

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..KeyToPath::default()
        }
    }

    #[test]
    fn items_choose_keys_and_a_missing_one_fails_unless_optional() {
        let data = BTreeMap::from([("tls.crt", &b"c"[..]), ("tls.key", &b"k"[..])]);
        let mut all = Payload::default();
        add_keys(&mut all, &data, Keys::new(None, Some(0o400), None)).unwrap();
        let paths: Vec<_> = all.files.keys().cloned().collect();
        assert_eq!(paths, vec![PathBuf::from("tls.crt"), "tls.key".into()]);
        assert_eq!(all.files[&PathBuf::from("tls.key")].mode, 0o400);

        let mut chosen = Payload::default();
        let items = [item("tls.crt", "certs/node.crt", Some(0o444))];
        add_keys(&mut chosen, &data, Keys::new(Some(&items), None, None)).unwrap();
        let file = &chosen.files[&PathBuf::from("certs/node.crt")];
        assert_eq!((file.bytes.as_slice(), file.mode), (&b"c"[..], 0o444));
        assert_eq!(chosen.files.len(), 1);

        let missing = [item("ca.crt", "ca.crt", None)];
        let err = add_keys(
            &mut Payload::default(),
            &data,
            Keys::new(Some(&missing), None, None),
        );
        assert!(err.is_err());
        let mut optional = Payload::default();
        add_keys(
            &mut optional,
            &data,
            Keys::new(Some(&missing), None, Some(true)),
        )
        .unwrap();
        assert!(optional.files.is_empty());
    }
}
