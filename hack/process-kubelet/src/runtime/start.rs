//! (I/O: API reads, processes) Starting one run of a container: the image's binary, the
//! environment (with the ConfigMaps and Secrets it refers to), the command line, the bind mounts
//! and the user, handed to the `sandbox` helper (this binary, re-executed), whose stdout and
//! stderr append to the container's log file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::env::{container_env, expand_all, referenced_objects, EnvInputs};
use crate::kubelet::PodCtx;
use crate::volumes::{container_mounts, Mount};

/// A process just started, as the sandbox helper.
pub struct Started {
    pub child: Child,
    pub at: Timestamp,
    /// It leads its own process group (the helper starts a session).
    pub pgid: Pid,
    /// Where its output starts in the log file.
    pub log_start: u64,
}

/// The user, group and supplementary groups a container runs as.
type RunAs = (u32, u32, Vec<u32>);

/// Starts the process; on failure, the waiting reason and the error.
pub async fn start_process(
    cx: &PodCtx,
    container: &Container,
) -> Result<Started, (&'static str, anyhow::Error)> {
    let image = container.image.clone().unwrap_or_default();
    let Some(binary) = cx.kubelet.images.resolve(&image) else {
        return Err((
            "ErrImageNeverPull",
            anyhow::anyhow!("image {image:?} is not in the process kubelet's --image-map"),
        ));
    };
    let env = resolve_env(cx, container)
        .await
        .map_err(|e| ("CreateContainerConfigError", e))?;
    let argv = command_line(container, binary, &env).map_err(|e| ("RunContainerError", e))?;
    let mut mounts =
        container_mounts(container, &cx.volumes).map_err(|e| ("CreateContainerConfigError", e))?;
    mounts.push(Mount {
        src: cx.pod_dir.join("etc-hosts"),
        dst: "/etc/hosts".into(),
        read_only: true,
    });
    let log_dir = cx.pod_dir.join("logs");
    let log = open_log(&log_dir, &container.name).map_err(|e| ("RunContainerError", e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| ("RunContainerError", e.into()))?;
    let log_start = log
        .metadata()
        .map_err(|e| ("RunContainerError", e.into()))?
        .len();
    let spec = cx.pod.borrow().spec.clone();
    let user = run_as(spec.as_ref(), container).map_err(|e| ("CreateContainerConfigError", e))?;
    let mut cmd = sandbox_command(cx, container, &mounts, user, &argv);
    cmd.env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(false);
    let child = cmd
        .spawn()
        .context("spawning the sandbox helper")
        .map_err(|e| ("RunContainerError", e))?;
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Err((
            "RunContainerError",
            anyhow::anyhow!("the process exited at once"),
        ));
    };
    tracing::info!(pod = %cx.name, container = %container.name, pid, binary = %binary.display(), "container started");
    Ok(Started {
        child,
        at: Timestamp::now(),
        pgid: Pid::from_raw(pid),
        log_start,
    })
}

/// `rc-process-kubelet sandbox ...` for this container (see `sandbox.rs`).
fn sandbox_command(
    cx: &PodCtx,
    container: &Container,
    mounts: &[Mount],
    user: Option<RunAs>,
    argv: &[String],
) -> Command {
    let mut cmd = Command::new(&cx.kubelet.self_exe);
    cmd.arg("sandbox")
        .arg("--netns")
        .arg(&cx.net.netns)
        .arg("--hostname")
        .arg(&cx.name)
        .arg("--workdir")
        .arg(container.working_dir.as_deref().unwrap_or("/"));
    for m in mounts {
        let ro = if m.read_only { ":ro" } else { "" };
        cmd.arg("--bind")
            .arg(format!("{}:{}{ro}", m.src.display(), m.dst));
    }
    if let Some((uid, gid, groups)) = user {
        cmd.arg("--uid")
            .arg(uid.to_string())
            .arg("--gid")
            .arg(gid.to_string());
        for g in groups {
            cmd.arg("--group").arg(g.to_string());
        }
    }
    cmd.arg("--").args(argv);
    cmd
}

fn open_log(dir: &Path, container: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{container}.log")))
        .with_context(|| format!("opening the log of {container}"))
}

/// The user, group and supplementary groups a container runs as, from its and its pod's
/// `securityContext` (the container's settings win). `None`: as the kubelet's user. There are no
/// images here to name a default user, so `runAsNonRoot` without `runAsUser` is refused, as the
/// real kubelet refuses an image whose user is root.
fn run_as(spec: Option<&PodSpec>, container: &Container) -> anyhow::Result<Option<RunAs>> {
    let pod = spec.and_then(|s| s.security_context.as_ref());
    let own = container.security_context.as_ref();
    let uid = own
        .and_then(|c| c.run_as_user)
        .or(pod.and_then(|p| p.run_as_user));
    let gid = own
        .and_then(|c| c.run_as_group)
        .or(pod.and_then(|p| p.run_as_group));
    let non_root = own
        .and_then(|c| c.run_as_non_root)
        .or(pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| anyhow::anyhow!("{what} {v} is out of range"))
    };
    let Some(uid) = uid else {
        if non_root {
            anyhow::bail!("runAsNonRoot is set but no runAsUser: this kubelet has no image user to check; set runAsUser");
        }
        return Ok(None);
    };
    if non_root && uid == 0 {
        anyhow::bail!("runAsNonRoot is set but runAsUser is 0");
    }
    let uid = id(uid, "runAsUser")?;
    let gid = match gid {
        Some(g) => id(g, "runAsGroup")?,
        None => 0,
    };
    let mut groups = Vec::new();
    if let Some(g) = pod.and_then(|p| p.fs_group) {
        groups.push(id(g, "fsGroup")?);
    }
    for g in pod
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
    {
        groups.push(id(*g, "supplementalGroups")?);
    }
    Ok(Some((uid, gid, groups)))
}

/// `command` replaces the image's entrypoint (the mapped binary), so its first word must name
/// that binary; `args` follow. Both get `$(VAR)` expansion.
fn command_line(
    container: &Container,
    binary: &Path,
    env: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let mut argv = vec![binary.display().to_string()];
    let command = expand_all(container.command.as_deref().unwrap_or(&[]), env);
    if let Some(first) = command.first() {
        let base = |p: &str| p.rsplit('/').next().map(str::to_owned).unwrap_or_default();
        if base(first) != base(&binary.display().to_string()) {
            bail!(
                "command {first:?} is not the image's binary {}",
                binary.display()
            );
        }
        argv.extend(command.into_iter().skip(1));
    }
    argv.extend(expand_all(container.args.as_deref().unwrap_or(&[]), env));
    Ok(argv)
}

async fn resolve_env(cx: &PodCtx, container: &Container) -> anyhow::Result<Vec<(String, String)>> {
    let (cm_names, secret_names) = referenced_objects(container);
    let (client, ns) = (&cx.kubelet.client, &cx.namespace);
    let config_maps = existing(Api::<ConfigMap>::namespaced(client.clone(), ns), cm_names).await?;
    let secrets = existing(Api::<Secret>::namespaced(client.clone(), ns), secret_names).await?;
    let pod = cx.pod.borrow().clone();
    let pod_ip = cx.net.ip.to_string();
    let host_ip = cx.kubelet.net.gateway().to_string();
    let base = cx.kubelet.base_env(&cx.name);
    let inputs = EnvInputs {
        pod: &pod,
        pod_ip: &pod_ip,
        host_ip: &host_ip,
        config_maps: &config_maps,
        secrets: &secrets,
        base: &base,
    };
    Ok(container_env(container, &inputs)?)
}

/// Those of the named objects that exist, by name.
async fn existing<K>(api: Api<K>, names: Vec<String>) -> kube::Result<BTreeMap<String, K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut found = BTreeMap::new();
    for name in names {
        if let Some(object) = api.get_opt(&name).await? {
            found.insert(name, object);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn command_replaces_the_entrypoint_only_with_the_same_binary() {
        let env = vec![("MODE".to_owned(), "run".to_owned())];
        let c = Container {
            args: Some(vec!["$(MODE)".into()]),
            ..Container::default()
        };
        let bin = Path::new("/x/target/debug/rc-operator");
        assert_eq!(
            command_line(&c, bin, &env).unwrap(),
            vec!["/x/target/debug/rc-operator", "run"]
        );
        let c = Container {
            command: Some(vec!["/usr/local/bin/rc-operator".into(), "crd".into()]),
            ..Container::default()
        };
        assert_eq!(
            command_line(&c, bin, &env).unwrap(),
            vec!["/x/target/debug/rc-operator", "crd"]
        );
        let c = Container {
            command: Some(vec!["/bin/sh".into()]),
            ..Container::default()
        };
        assert!(command_line(&c, bin, &env).is_err());
    }

    #[test]
    fn the_user_comes_from_the_container_then_the_pod_and_root_is_refused_to_non_root() {
        use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
        let pod = |ctx: PodSecurityContext| PodSpec {
            security_context: Some(ctx),
            ..PodSpec::default()
        };
        let restricted = pod(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            supplemental_groups: Some(vec![7]),
            ..PodSecurityContext::default()
        });
        let plain = Container::default();
        assert_eq!(
            run_as(Some(&restricted), &plain).unwrap(),
            Some((65532, 65532, vec![65532, 7]))
        );
        let own = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                ..SecurityContext::default()
            }),
            ..Container::default()
        };
        assert_eq!(run_as(Some(&restricted), &own).unwrap().unwrap().0, 1000);
        assert_eq!(run_as(None, &plain).unwrap(), None);
        let no_user = pod(PodSecurityContext {
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        });
        assert!(run_as(Some(&no_user), &plain).is_err());
        let root = pod(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(0),
            ..PodSecurityContext::default()
        });
        assert!(run_as(Some(&root), &plain).is_err());
    }
}
