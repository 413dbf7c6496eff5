//! (I/O: API reads, files) A pod's volumes as host directories, and each container's mounts.
//!
//! - `persistentVolumeClaim`: the bound PersistentVolume's `hostPath.path` (the control plane's
//!   hostpath provisioner puts them under /tmp/hostpath_pv); claims that are not bound yet, or
//!   PVs of other kinds, are an error the pod retries.
//! - `emptyDir`: `<pod dir>/volumes/<name>`.
//! - `secret`, `configMap`, `downwardAPI` (`fieldRef`), `projected` (secrets, configMaps,
//!   downward API and `serviceAccountToken` through the TokenRequest API, bound to the pod):
//!   files written into `<pod dir>/volumes/<name>` (`sources.rs` reads what they hold,
//!   `files.rs` writes it). [`refresh`] brings them up to date in a running pod, as the
//!   kubelet's periodic sync does: a changed file is replaced atomically (write + rename), an
//!   unchanged one is left alone, a key that is gone is removed; a Secret or ConfigMap that
//!   cannot be read leaves the volume's files as they were. Tokens are requested again only
//!   when due (80% of their life).
//! - `hostPath`: the path itself.
//!
//! Directories are bind-mounted at the `mountPath`s by the sandbox helper (`sandbox.rs`).
//! With `fsGroup`, every volume but `hostPath` is given to that group, as the real kubelet does.

mod files;
#[cfg(test)]
mod refresh_tests;
mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{Container, PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use kube::{Api, Client};

pub use files::Applied;
pub use sources::Tokens;

/// Host directory per volume name, the files the kubelet wrote, and when tokens need renewing.
#[derive(Debug, Default)]
pub struct Volumes {
    pub dirs: BTreeMap<String, PathBuf>,
    /// Per volume the kubelet writes (secret, configMap, downwardAPI, projected): the files it
    /// wrote there, relative to the volume; what [`refresh`] may remove.
    pub written: BTreeMap<String, BTreeSet<PathBuf>>,
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

    fn own_dir(&self, vol: &Volume) -> PathBuf {
        self.pod_dir.join("volumes").join(&vol.name)
    }

    fn fs_group(&self) -> Option<u32> {
        self.pod
            .spec
            .as_ref()?
            .security_context
            .as_ref()?
            .fs_group
            .and_then(|g| u32::try_from(g).ok())
    }
}

/// Creates every volume of the pod (tokens requested).
pub async fn materialize(cx: &VolumeContext<'_>) -> anyhow::Result<Volumes> {
    let mut out = Volumes::default();
    let Some(spec) = cx.pod.spec.as_ref() else {
        return Ok(out);
    };
    let fs_group = cx.fs_group();
    for vol in spec.volumes.iter().flatten() {
        let dir = if sources::is_written(vol) {
            let dir = cx.own_dir(vol);
            let mut paths = BTreeSet::new();
            let (_, renew) = update_written(cx, vol, &dir, &mut paths, Tokens::Request).await?;
            if let Some(renew) = renew {
                out.refresh_after = Some(out.refresh_after.map_or(renew, |r| r.min(renew)));
            }
            out.written.insert(vol.name.clone(), paths);
            dir
        } else {
            data_dir(cx, vol).await?
        };
        if let Some(group) = fs_group {
            // Written by the kubelet: every time (files are written with the group, but the
            // directories need it too). Data volumes: only when the root does not have it yet
            // (the real kubelet's OnRootMismatch), so a large volume is not walked on every
            // start.
            if vol.host_path.is_none() {
                give_to_group(&dir, group, sources::is_written(vol))?;
            }
        }
        out.dirs.insert(vol.name.clone(), dir);
    }
    Ok(out)
}

/// What one volume's refresh did: its name, and what changed or why nothing could.
pub type VolumeRefresh = (String, anyhow::Result<Applied>);

/// One refresh pass over the volumes the kubelet writes, each on its own: one that fails (its
/// Secret deleted, the API unreachable) keeps its files as they were and does not hold up the
/// others. `written` (from [`Volumes::written`]) is updated to the files now there. With
/// `Tokens::Request`, also when tokens need renewing next (10 s when a request failed).
pub async fn refresh(
    cx: &VolumeContext<'_>,
    written: &mut BTreeMap<String, BTreeSet<PathBuf>>,
    tokens: Tokens,
) -> (Vec<VolumeRefresh>, Option<Duration>) {
    let mut outcomes = Vec::new();
    let mut renew_after: Option<Duration> = None;
    let mut earliest = |d: Duration| renew_after = Some(renew_after.map_or(d, |r| r.min(d)));
    let volumes = cx.pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
    for vol in volumes.unwrap_or(&[]) {
        let Some(paths) = written.get_mut(&vol.name) else {
            continue;
        };
        let dir = cx.own_dir(vol);
        let result = match update_written(cx, vol, &dir, paths, tokens).await {
            Ok((applied, renew)) => {
                if let Some(renew) = renew {
                    earliest(renew);
                }
                Ok(applied)
            }
            Err(e) => {
                if tokens == Tokens::Request && has_tokens(vol) {
                    earliest(Duration::from_secs(10));
                }
                Err(e)
            }
        };
        outcomes.push((vol.name.clone(), result));
    }
    (outcomes, renew_after)
}

/// Writes a volume the kubelet writes into `dir`, given `paths`, the files written there before
/// (updated to the files there now); what changed, and when its tokens need renewing.
async fn update_written(
    cx: &VolumeContext<'_>,
    vol: &Volume,
    dir: &Path,
    paths: &mut BTreeSet<PathBuf>,
    tokens: Tokens,
) -> anyhow::Result<(Applied, Option<Duration>)> {
    let Some(collected) = sources::collect(cx, vol, tokens).await? else {
        bail!("volume {:?}: not written by the kubelet", vol.name);
    };
    create_dir(dir)?;
    let group = cx.fs_group();
    let previous = std::mem::take(paths);
    // Until the pass is through, old and new files may both be there.
    *paths = previous
        .union(&collected.payload.paths())
        .cloned()
        .collect();
    let applied = files::apply(dir, &collected.payload, &previous, group)
        .with_context(|| format!("volume {:?}", vol.name))?;
    *paths = collected.payload.paths();
    if let (Some(g), true) = (group, applied.changed()) {
        give_to_group(dir, g, true)?; // directories made for new nested paths
    }
    Ok((applied, collected.renew_after))
}

fn has_tokens(vol: &Volume) -> bool {
    vol.projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .any(|s| s.service_account_token.is_some())
}

/// A volume the kubelet does not write: a claim's, a host path, an `emptyDir`.
async fn data_dir(cx: &VolumeContext<'_>, vol: &Volume) -> anyhow::Result<PathBuf> {
    if let Some(pvc) = &vol.persistent_volume_claim {
        claim_dir(cx.client, cx.namespace(), &pvc.claim_name).await
    } else if let Some(host) = &vol.host_path {
        Ok(PathBuf::from(&host.path))
    } else if vol.empty_dir.is_some() {
        let dir = cx.own_dir(vol);
        create_dir(&dir)?;
        Ok(dir)
    } else {
        bail!("volume {:?}: unsupported volume type", vol.name);
    }
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
            // Secret, ConfigMap, downward API and projected volumes are read-only whatever the
            // mount says, as with the real kubelet: the kubelet owns their files.
            read_only: m.read_only == Some(true) || volumes.written.contains_key(&m.name),
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

/// Rejects absolute paths and `..`, as the API server does for volume item paths.
fn safe_relative(rel: &str) -> anyhow::Result<&Path> {
    let p = Path::new(rel);
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(p)
    } else {
        bail!("path {rel:?} must be relative without '..'")
    }
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
            ..Volumes::default()
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
        // A Secret's volume is read-only even when the mount does not say so.
        let with_secret = Volumes {
            dirs: BTreeMap::from([("token".to_owned(), PathBuf::from("/pods/p/volumes/token"))]),
            written: BTreeMap::from([("token".to_owned(), BTreeSet::new())]),
            ..Volumes::default()
        };
        let writable = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "token".into(),
                mount_path: "/etc/token".into(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        };
        assert!(container_mounts(&writable, &with_secret).unwrap()[0].read_only);
    }
}
