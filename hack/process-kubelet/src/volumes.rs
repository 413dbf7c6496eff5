//! (I/O: API reads, files) A pod's volumes as host directories, and each container's mounts.
//!
//! - `persistentVolumeClaim`: the bound PersistentVolume's `hostPath.path` (the control plane's
//!   hostpath provisioner puts them under /tmp/hostpath_pv); claims that are not bound yet, or
//!   PVs of other kinds, are an error the pod retries.
//! - `emptyDir`: `<pod dir>/volumes/<name>`.
//! - `secret`, `configMap`, `downwardAPI`, `projected` (secrets, configMaps, downward API and
//!   `serviceAccountToken` through the TokenRequest API, bound to the pod): files written into
//!   `<pod dir>/volumes/<name>`, each replaced atomically (write + rename) on refresh.
//! - `hostPath`: the path itself.
//!
//! Directories are bind-mounted at the `mountPath`s by the sandbox helper (`sandbox.rs`).
//! With `fsGroup`, every volume but `hostPath` is given to that group, as the real kubelet does.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, ProjectedVolumeSource, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::env::field_value;

/// Host directory per volume name, and when token files need renewing.
#[derive(Debug, Default)]
pub struct Volumes {
    pub dirs: BTreeMap<String, PathBuf>,
    /// Projected service-account tokens are re-requested after this long (80% of their life).
    pub refresh_after: Option<Duration>,
}

/// One bind mount for the sandbox helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub src: PathBuf,
    pub dst: String,
    pub read_only: bool,
}

pub struct VolumeContext<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    pub pod_dir: &'a Path,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

impl VolumeContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Creates or refreshes every volume of the pod.
pub async fn materialize(cx: &VolumeContext<'_>) -> anyhow::Result<Volumes> {
    let mut out = Volumes::default();
    let Some(spec) = cx.pod.spec.as_ref() else {
        return Ok(out);
    };
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    for vol in spec.volumes.iter().flatten() {
        let (dir, refresh) = volume_dir(cx, vol).await?;
        if let Some(refresh) = refresh {
            out.refresh_after = Some(out.refresh_after.map_or(refresh, |r| r.min(refresh)));
        }
        if let Some(group) = fs_group {
            // Written by the kubelet (files the operator wrote are rewritten on refresh): set
            // every time. Data volumes: only when the root does not have it yet (the real
            // kubelet's OnRootMismatch), so a large volume is not walked on every start.
            let written = vol.empty_dir.is_none()
                && vol.persistent_volume_claim.is_none()
                && vol.host_path.is_none();
            if vol.host_path.is_none() {
                give_to_group(&dir, group, written)?;
            }
        }
        out.dirs.insert(vol.name.clone(), dir);
    }
    Ok(out)
}

/// The volume's host directory, with its files written; for projected service-account tokens,
/// when to write them again.
async fn volume_dir(
    cx: &VolumeContext<'_>,
    vol: &Volume,
) -> anyhow::Result<(PathBuf, Option<Duration>)> {
    let own_dir = cx.pod_dir.join("volumes").join(&vol.name);
    let mut refresh = None;
    let dir = if let Some(pvc) = &vol.persistent_volume_claim {
        claim_dir(cx.client, cx.namespace(), &pvc.claim_name).await?
    } else if let Some(host) = &vol.host_path {
        PathBuf::from(&host.path)
    } else if vol.empty_dir.is_some() {
        create_dir(&own_dir)?;
        own_dir
    } else if let Some(s) = &vol.secret {
        create_dir(&own_dir)?;
        let name = s.secret_name.clone().unwrap_or_default();
        if let Some(secret) = referenced::<Secret>(cx, "secret", &name, s.optional).await? {
            write_secret(&own_dir, &secret, s.items.as_deref(), s.default_mode)?;
        }
        own_dir
    } else if let Some(c) = &vol.config_map {
        create_dir(&own_dir)?;
        if let Some(cm) = referenced::<ConfigMap>(cx, "configmap", &c.name, c.optional).await? {
            write_config_map(&own_dir, &cm, c.items.as_deref(), c.default_mode)?;
        }
        own_dir
    } else if let Some(d) = &vol.downward_api {
        create_dir(&own_dir)?;
        write_downward(
            cx,
            &own_dir,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode,
        )?;
        own_dir
    } else if let Some(p) = &vol.projected {
        create_dir(&own_dir)?;
        refresh = write_projected(cx, &own_dir, p).await?;
        own_dir
    } else {
        bail!("volume {:?}: unsupported volume type", vol.name);
    };
    Ok((dir, refresh))
}

/// Every source of a projected volume into `dir`; when its tokens need renewing, if it has any.
async fn write_projected(
    cx: &VolumeContext<'_>,
    dir: &Path,
    p: &ProjectedVolumeSource,
) -> anyhow::Result<Option<Duration>> {
    let mode = p.default_mode;
    let mut refresh: Option<Duration> = None;
    for source in p.sources.iter().flatten() {
        if let Some(s) = &source.secret {
            if let Some(secret) = referenced::<Secret>(cx, "secret", &s.name, s.optional).await? {
                write_secret(dir, &secret, s.items.as_deref(), mode)?;
            }
        }
        if let Some(c) = &source.config_map {
            if let Some(cm) = referenced::<ConfigMap>(cx, "configmap", &c.name, c.optional).await? {
                write_config_map(dir, &cm, c.items.as_deref(), mode)?;
            }
        }
        if let Some(d) = &source.downward_api {
            write_downward(cx, dir, d.items.as_deref().unwrap_or(&[]), mode)?;
        }
        if let Some(t) = &source.service_account_token {
            let life = write_token(cx, dir, t, mode).await?;
            let after = life.mul_f64(0.8);
            refresh = Some(refresh.map_or(after, |r| r.min(after)));
        }
    }
    Ok(refresh)
}

/// `fsGroup`, as the real kubelet applies it: every file and directory of the volume owned by
/// the group, group-readable (and writable unless `read_only`), directories setgid so that new
/// files inherit the group. Lets a pod running as a non-root user use its volumes.
fn give_to_group(dir: &Path, group: u32, read_only: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let gid = nix::unistd::Gid::from_raw(group);
    if !read_only {
        let meta = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
        if meta.gid() == group && meta.mode() & 0o2070 == 0o2070 {
            return Ok(());
        }
    }
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(path) = stack.pop() {
        visited += 1;
        if visited > 1_000_000 {
            bail!(
                "{}: too many files to give to fsGroup {group}",
                dir.display()
            );
        }
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        nix::unistd::chown(&path, None, Some(gid))
            .with_context(|| format!("chown :{group} {}", path.display()))?;
        let add = match (meta.is_dir(), read_only) {
            (true, true) => 0o2050,
            (true, false) => 0o2070,
            (false, true) => 0o040,
            (false, false) => 0o060,
        };
        let mode = meta.permissions().mode() | add;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?
            {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The container's `volumeMounts` as bind mounts (`subPath` included).
pub fn container_mounts(container: &Container, volumes: &Volumes) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(dir) = volumes.dirs.get(&m.name) else {
            bail!("volumeMount {:?}: no such volume", m.name);
        };
        let src = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let p = dir.join(safe_relative(sub)?);
                if !p.exists() {
                    create_dir(&p)?;
                }
                p
            }
            None => dir.clone(),
        };
        mounts.push(Mount {
            src,
            dst: m.mount_path.clone(),
            read_only: m.read_only == Some(true),
        });
    }
    Ok(mounts)
}

async fn claim_dir(client: &Client, ns: &str, claim: &str) -> anyhow::Result<PathBuf> {
    let pvc: PersistentVolumeClaim = Api::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .with_context(|| format!("reading PVC {claim}"))?;
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        bail!("PVC {claim} is not bound yet");
    };
    let pv: PersistentVolume = Api::all(client.clone())
        .get(&pv_name)
        .await
        .with_context(|| format!("reading PV {pv_name}"))?;
    let Some(path) = pv.spec.and_then(|s| s.host_path).map(|h| h.path) else {
        bail!("PV {pv_name} is not a hostPath volume (only hostPath PVs are supported)");
    };
    let dir = PathBuf::from(path);
    create_dir(&dir)?;
    Ok(dir)
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
        .with_context(|| format!("reading {name}"))?;
    if found.is_none() && optional != Some(true) {
        bail!("{kind} {name:?} not found");
    }
    Ok(found)
}

async fn write_token(
    cx: &VolumeContext<'_>,
    dir: &Path,
    proj: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
    mode: Option<i32>,
) -> anyhow::Result<Duration> {
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
    write_file(dir, &proj.path, token.as_bytes(), mode.unwrap_or(0o644))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let life = expires.0.duration_since(now);
    Ok(Duration::from_secs(
        u64::try_from(life.as_secs()).unwrap_or(0).max(60),
    ))
}

fn write_secret(
    dir: &Path,
    secret: &Secret,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> anyhow::Result<()> {
    let data: BTreeMap<&str, &[u8]> = secret
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
        .collect();
    write_keys(dir, &data, items, mode)
}

fn write_config_map(
    dir: &Path,
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> anyhow::Result<()> {
    let data: BTreeMap<&str, &[u8]> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .chain(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice())),
        )
        .collect();
    write_keys(dir, &data, items, mode)
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<&str, &[u8]>,
    items: Option<&[KeyToPath]>,
    mode: Option<i32>,
) -> anyhow::Result<()> {
    let default_mode = mode.unwrap_or(0o644);
    match items {
        None => {
            for (k, v) in data {
                write_file(dir, k, v, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(item.key.as_str()) else {
                    bail!("key {:?} not found", item.key);
                };
                write_file(dir, &item.path, v, item.mode.unwrap_or(default_mode))?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    cx: &VolumeContext<'_>,
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    mode: Option<i32>,
) -> anyhow::Result<()> {
    for item in items {
        let value = match &item.field_ref {
            Some(f) => field_value(cx.pod, &f.field_path, cx.pod_ip, cx.host_ip)?,
            None => bail!("downwardAPI {:?}: only fieldRef is supported", item.path),
        };
        write_file(
            dir,
            &item.path,
            value.as_bytes(),
            item.mode.or(mode).unwrap_or(0o644),
        )?;
    }
    Ok(())
}

/// Rejects absolute paths and `..`, as the API server does for volume item paths.
fn safe_relative(rel: &str) -> anyhow::Result<&Path> {
    let p = Path::new(rel);
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(p)
    } else {
        bail!("path {rel:?} must be relative without '..'")
    }
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], mode: i32) -> anyhow::Result<()> {
    let path = dir.join(safe_relative(rel)?);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    let tmp = path.with_extension("rc-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    let mode = u32::try_from(mode).unwrap_or(0o644) & 0o7777;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn item_paths_may_not_escape_the_volume() {
        assert!(safe_relative("a/b").is_ok());
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
    }

    #[test]
    fn mounts_map_volume_names_to_dirs() {
        let volumes = Volumes {
            dirs: BTreeMap::from([("data".to_owned(), PathBuf::from("/tmp/hostpath_pv/x"))]),
            refresh_after: None,
        };
        let container = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            container_mounts(&container, &volumes).unwrap(),
            vec![Mount {
                src: "/tmp/hostpath_pv/x".into(),
                dst: "/data".into(),
                read_only: true
            }]
        );
        let missing = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/x".into(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        assert!(container_mounts(&missing, &volumes).is_err());
    }
}
