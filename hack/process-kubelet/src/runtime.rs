//! (I/O: processes, API reads) One container's life: resolve image, env and mounts, start the
//! process through the sandbox helper, run its probes, stop it gracefully, and restart it per
//! `restartPolicy` with the kubelet's exponential back-off.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::env::{container_env, expand_all, referenced_objects, EnvInputs};
use crate::kubelet::PodCtx;
use crate::probe;
use crate::status::{State, Termination};
use crate::volumes::container_mounts;

/// A container that ran this long has its back-off reset, as in the kubelet.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// How a container task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited and will not be restarted (policy); carries the exit code.
    Exited(i32),
    /// Stopped because the pod is being deleted or the kubelet shuts down.
    Stopped,
}

enum Outcome {
    Exited(ExitStatus),
    Stop,
    Killed(String),
}

/// Runs container `idx` (an init container when `init`) until it ends for good or `stop`.
pub async fn run_container(
    cx: Arc<PodCtx>,
    idx: usize,
    init: bool,
    stop: CancellationToken,
) -> Ended {
    let mut crashes: u32 = 0;
    loop {
        let container = {
            let pod = cx.pod.borrow();
            let spec = pod.spec.as_ref();
            let list = if init {
                spec.and_then(|s| s.init_containers.clone())
                    .unwrap_or_default()
            } else {
                spec.map(|s| s.containers.clone()).unwrap_or_default()
            };
            list.get(idx).cloned()
        };
        let Some(container) = container else {
            return Ended::Stopped;
        };
        let slot = if init { None } else { Some(idx) };
        let (mut child, started_at, pgid, log_start) = match spawn(&cx, &container).await {
            Ok(started) => started,
            Err((reason, e)) => {
                tracing::warn!(pod = %cx.name, container = %container.name, error = %format!("{e:#}"), "cannot start container");
                set_state(&cx, slot, |c| {
                    c.state = State::Waiting {
                        reason: reason.into(),
                        message: format!("{e:#}"),
                    };
                });
                crashes += 1;
                if sleep_or_stop(backoff(&cx, crashes), &stop).await {
                    return Ended::Stopped;
                }
                continue;
            }
        };
        let container_id = format!("process://{}/{}", cx.uid, pgid);
        let log_run = cx
            .logs
            .started(&container.name, &container_id, log_start, started_at);
        tokio::spawn(crate::logs::sample(log_run.clone()));
        set_state(&cx, slot, |c| {
            c.state = State::Running { started_at };
            c.container_id = Some(container_id.clone());
            c.image_id = format!("process://{}", c.image);
            c.started = container.startup_probe.is_none();
            c.ready = false;
        });
        let probe_stop = stop.child_token();
        let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
        if !init {
            tokio::spawn(run_probes(
                cx.clone(),
                idx,
                container.clone(),
                probe_stop.clone(),
                kill_tx,
            ));
        }
        let ran_since = Instant::now();
        let outcome = tokio::select! {
            status = child.wait() => match status {
                Ok(s) => Outcome::Exited(s),
                Err(e) => Outcome::Killed(format!("waiting for the process: {e}")),
            },
            () = stop.cancelled() => Outcome::Stop,
            Some(why) = kill_rx.recv() => Outcome::Killed(why),
        };
        probe_stop.cancel();
        let (status, message) = match outcome {
            Outcome::Exited(s) => (s, None),
            Outcome::Stop => {
                let grace = Duration::from_secs(cx.grace_seconds.load(Ordering::Relaxed));
                (terminate(&mut child, pgid, grace).await, None)
            }
            Outcome::Killed(why) => {
                tracing::info!(pod = %cx.name, container = %container.name, reason = %why, "killing container");
                let grace = Duration::from_secs(cx.grace_seconds.load(Ordering::Relaxed));
                (terminate(&mut child, pgid, grace).await, Some(why))
            }
        };
        // Whatever the program left behind in its group goes with it.
        let _ = killpg(pgid, Signal::SIGKILL);
        log_run.finish(crate::logs::file_len(&log_run.path), Timestamp::now());
        let code = status
            .code()
            .unwrap_or_else(|| 128 + signal_of(status).unwrap_or(0));
        let term = Termination {
            exit_code: code,
            signal: signal_of(status),
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at,
            finished_at: Timestamp::now(),
            container_id,
        };
        tracing::info!(pod = %cx.name, container = %container.name, exit_code = code, "container exited");
        if stop.is_cancelled() {
            set_state(&cx, slot, |c| {
                c.state = State::Terminated(term.clone());
                c.ready = false;
            });
            return Ended::Stopped;
        }
        let policy = cx.restart_policy();
        let restart = match (init, policy.as_str()) {
            (true, "Never") => false,
            (true, _) => code != 0,
            (false, "Never") => false,
            (false, "OnFailure") => code != 0,
            (false, _) => true,
        };
        if !restart {
            set_state(&cx, slot, |c| {
                c.state = State::Terminated(term.clone());
                c.ready = false;
            });
            return Ended::Exited(code);
        }
        if ran_since.elapsed() >= BACKOFF_RESET_AFTER {
            crashes = 0;
        }
        crashes += 1;
        let delay = backoff(&cx, crashes);
        set_state(&cx, slot, |c| {
            c.last = Some(term.clone());
            c.ready = false;
            c.started = false;
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container={} pod={}",
                    delay.as_secs(),
                    container.name,
                    cx.name
                ),
            };
        });
        if sleep_or_stop(delay, &stop).await {
            return Ended::Stopped;
        }
        set_state(&cx, slot, |c| c.restart_count += 1);
    }
}

fn signal_of(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

/// base * 2^(crashes-1), capped.
fn backoff(cx: &PodCtx, crashes: u32) -> Duration {
    let k = &cx.kubelet;
    let factor = 1u32
        .checked_shl(crashes.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    k.backoff_base.saturating_mul(factor).min(k.backoff_max)
}

/// Sleeps; `true` when stopped first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.cancelled() => true,
    }
}

/// Updates a main container's runtime state (init containers are not reported).
fn set_state(cx: &PodCtx, slot: Option<usize>, f: impl FnOnce(&mut crate::status::ContainerRt)) {
    let Some(idx) = slot else { return };
    cx.rt
        .send_if_modified(|rt| match rt.containers.get_mut(idx) {
            Some(c) => {
                let before = c.clone();
                f(c);
                *c != before
            }
            None => false,
        });
}

/// SIGTERM to the process group, SIGKILL after the grace period.
async fn terminate(child: &mut Child, pgid: Pid, grace: Duration) -> ExitStatus {
    let _ = killpg(pgid, Signal::SIGTERM);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    match child.wait().await {
        Ok(s) => s,
        Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
    }
}

/// Starts the process; returns it, when, its process group and where its output starts in the
/// log file; on failure, the waiting reason and the error.
async fn spawn(
    cx: &PodCtx,
    container: &Container,
) -> Result<(Child, Timestamp, Pid, u64), (&'static str, anyhow::Error)> {
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
    mounts.push(crate::volumes::Mount {
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

    let mut cmd = Command::new(&cx.kubelet.self_exe);
    cmd.arg("sandbox")
        .arg("--netns")
        .arg(&cx.net.netns)
        .arg("--hostname")
        .arg(&cx.name)
        .arg("--workdir")
        .arg(container.working_dir.as_deref().unwrap_or("/"));
    for m in &mounts {
        let ro = if m.read_only { ":ro" } else { "" };
        cmd.arg("--bind")
            .arg(format!("{}:{}{ro}", m.src.display(), m.dst));
    }
    let spec = cx.pod.borrow().spec.clone();
    let user = run_as(spec.as_ref(), container).map_err(|e| ("CreateContainerConfigError", e))?;
    if let Some((uid, gid, groups)) = user {
        cmd.arg("--uid")
            .arg(uid.to_string())
            .arg("--gid")
            .arg(gid.to_string());
        for g in groups {
            cmd.arg("--group").arg(g.to_string());
        }
    }
    cmd.arg("--").args(&argv);
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
    Ok((child, Timestamp::now(), Pid::from_raw(pid), log_start))
}

fn open_log(dir: &Path, container: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{container}.log")))
        .with_context(|| format!("opening the log of {container}"))
}

/// `command` replaces the image's entrypoint (the mapped binary), so its first word must name
/// that binary; `args` follow. Both get `$(VAR)` expansion.
/// The user, group and supplementary groups a container runs as, from its and its pod's
/// `securityContext` (the container's settings win). `None`: as the kubelet's user. There are no
/// images here to name a default user, so `runAsNonRoot` without `runAsUser` is refused, as the
/// real kubelet refuses an image whose user is root.
pub fn run_as(
    spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    container: &Container,
) -> anyhow::Result<Option<(u32, u32, Vec<u32>)>> {
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
    let client = &cx.kubelet.client;
    let mut config_maps = BTreeMap::new();
    for name in cm_names {
        if let Some(cm) = Api::<ConfigMap>::namespaced(client.clone(), &cx.namespace)
            .get_opt(&name)
            .await?
        {
            config_maps.insert(name, cm);
        }
    }
    let mut secrets = BTreeMap::new();
    for name in secret_names {
        if let Some(s) = Api::<Secret>::namespaced(client.clone(), &cx.namespace)
            .get_opt(&name)
            .await?
        {
            secrets.insert(name, s);
        }
    }
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

/// Startup probe first (it gates the others), then readiness and liveness side by side.
async fn run_probes(
    cx: Arc<PodCtx>,
    idx: usize,
    container: Container,
    stop: CancellationToken,
    kill: mpsc::Sender<String>,
) {
    let ip = cx.net.ip.to_string();
    let work = async {
        if let Some(p) = &container.startup_probe {
            let t = probe::timing(p);
            tokio::time::sleep(t.initial_delay).await;
            let mut failures = 0;
            loop {
                match probe::check(p, &container, &ip).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        if failures >= t.failure_threshold {
                            let _ = kill.send(format!("Startup probe failed: {e}")).await;
                            return;
                        }
                    }
                }
                tokio::time::sleep(t.period).await;
            }
            set_state(&cx, Some(idx), |c| c.started = true);
        }
        let readiness = async {
            let Some(p) = &container.readiness_probe else {
                set_state(&cx, Some(idx), |c| c.ready = true);
                return;
            };
            let t = probe::timing(p);
            tokio::time::sleep(t.initial_delay).await;
            let (mut ok, mut bad) = (0u32, 0u32);
            loop {
                match probe::check(p, &container, &ip).await {
                    Ok(()) => {
                        ok += 1;
                        bad = 0;
                        if ok >= t.success_threshold {
                            set_state(&cx, Some(idx), |c| c.ready = true);
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        ok = 0;
                        if bad >= t.failure_threshold {
                            tracing::debug!(pod = %cx.name, error = %e, "readiness probe failed");
                            set_state(&cx, Some(idx), |c| c.ready = false);
                        }
                    }
                }
                tokio::time::sleep(t.period).await;
            }
        };
        let liveness = async {
            let Some(p) = &container.liveness_probe else {
                return;
            };
            let t = probe::timing(p);
            tokio::time::sleep(t.initial_delay).await;
            let mut bad = 0u32;
            loop {
                tokio::time::sleep(t.period).await;
                match probe::check(p, &container, &ip).await {
                    Ok(()) => bad = 0,
                    Err(e) => {
                        bad += 1;
                        if bad >= t.failure_threshold {
                            let _ = kill.send(format!("Liveness probe failed: {e}")).await;
                            return;
                        }
                    }
                }
            }
        };
        tokio::join!(readiness, liveness);
    };
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
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
