//! (I/O) The kubelet's shared context and one pod's life: sandbox (network namespace, hosts
//! file, volumes), containers (init containers in order, then the rest side by side), the status
//! writer, and deletion (stop the processes within the grace period, report them terminated,
//! then `DELETE` with grace 0 and a UID precondition so the object really goes away).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::hosts::HostsTable;
use crate::images::ImageMap;
use crate::logs::{LogRegistry, PodLogs};
use crate::net::{Network, PodNet};
use crate::runtime::{run_container, Ended};
use crate::status::{build_status, ContainerRt, PodRt, Terminal, Transitions};
use crate::volumes::{materialize, VolumeContext, Volumes};

pub const FIELD_MANAGER: &str = "rc-process-kubelet";

/// Everything pods share.
pub struct Kubelet {
    pub client: Client,
    pub node_name: String,
    pub net: Network,
    pub images: ImageMap,
    pub state_dir: PathBuf,
    /// This binary, re-executed as the `sandbox` helper.
    pub self_exe: PathBuf,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest grace period granted when the kubelet itself shuts down.
    pub shutdown_grace: Duration,
    /// Port of the API-server proxy on the bridge address.
    pub api_proxy_port: u16,
    /// Pod names resolvable by other pods, through their hosts files.
    pub hosts: HostsTable,
    /// Containers' log files and runs, for the kubelet API.
    pub logs: Arc<LogRegistry>,
}

/// The name pods use for the API server; their hosts file maps it to the bridge address, where
/// the kubelet proxies to the real API server (whose certificate carries this name).
pub const API_HOST: &str = "kubernetes.default.svc";

impl Kubelet {
    /// Variables every container starts with, as a container runtime and the kubelet set them.
    pub fn base_env(&self, pod_name: &str) -> Vec<(String, String)> {
        let port = self.api_proxy_port.to_string();
        vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), pod_name.into()),
            // Never the host's home: a ~/.kube/config there would bypass in-cluster RBAC.
            ("HOME".into(), "/nonexistent".into()),
            ("KUBERNETES_SERVICE_HOST".into(), API_HOST.into()),
            ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
            ("KUBERNETES_PORT".into(), format!("tcp://{API_HOST}:{port}")),
        ]
    }
}

/// One pod, shared by its container tasks.
pub struct PodCtx {
    pub kubelet: Arc<Kubelet>,
    pub pod: watch::Receiver<Pod>,
    pub rt: watch::Sender<PodRt>,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub net: PodNet,
    pub pod_dir: PathBuf,
    pub volumes: Volumes,
    /// This pod's container logs (where each run starts and ends).
    pub logs: Arc<PodLogs>,
    /// Grace period for stopping processes, set when deletion starts.
    pub grace_seconds: AtomicU64,
}

impl PodCtx {
    pub fn restart_policy(&self) -> String {
        self.pod
            .borrow()
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }
}

/// Why a pod task stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Deleting,
    Gone,
    Shutdown,
}

/// Runs a pod until it is deleted (`pod` shows `deletionTimestamp`), removed from the API
/// (`gone`) or the kubelet stops (`shutdown`).
pub async fn run_pod(
    k: Arc<Kubelet>,
    mut pod: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let first = pod.borrow().clone();
    let name = first.metadata.name.clone().unwrap_or_default();
    let namespace = first.metadata.namespace.clone().unwrap_or_default();
    let uid = first.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(k.client.clone(), &namespace);
    if first.metadata.deletion_timestamp.is_some() {
        delete_now(&api, &name, &uid).await;
        return;
    }
    let pod_dir = k
        .state_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"));
    let exit_requested = |p: &watch::Receiver<Pod>| {
        if shutdown.is_cancelled() {
            Some(Exit::Shutdown)
        } else if gone.is_cancelled() {
            Some(Exit::Gone)
        } else if p.borrow().metadata.deletion_timestamp.is_some() {
            Some(Exit::Deleting)
        } else {
            None
        }
    };

    // 1. Sandbox: network namespace and hosts file.
    let net = loop {
        if let Some(exit) = exit_requested(&pod) {
            if exit == Exit::Deleting {
                delete_now(&api, &name, &uid).await;
            }
            return;
        }
        match k.net.create_pod_net().await {
            Ok(net) => break net,
            Err(e) => {
                tracing::warn!(pod = %name, error = %format!("{e:#}"), "creating the pod network");
                wait_change(&mut pod, &gone, &shutdown, Duration::from_secs(2)).await;
            }
        }
    };
    let host_ip = k.net.gateway().to_string();
    let pod_ip = net.ip.to_string();
    if let Err(e) = std::fs::create_dir_all(&pod_dir) {
        tracing::warn!(pod = %name, error = %e, "creating the pod directory");
    }
    k.hosts
        .add(&uid, &first, &pod_ip, pod_dir.join("etc-hosts"));
    tracing::info!(pod = %format!("{namespace}/{name}"), ip = %pod_ip, netns = %net.netns, "pod sandbox ready");

    // 2. Status writer.
    let spec = first.spec.clone().unwrap_or_default();
    let (rt_tx, rt_rx) = watch::channel(PodRt {
        pod_ip: Some(pod_ip.clone()),
        host_ip: host_ip.clone(),
        start_time: Timestamp::now(),
        sandbox_ready: true,
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRt::new(&c.name, c.image.as_deref().unwrap_or_default()))
            .collect(),
        terminal: None,
    });
    let names = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        list.map(|l| l.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let pod_logs = Arc::new(PodLogs::new(
        &uid,
        &name,
        pod_dir.join("logs"),
        names(spec.init_containers.as_ref()),
        names(Some(&spec.containers)),
        rt_tx.subscribe(),
    ));
    k.logs.register(&namespace, &name, pod_logs.clone());
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(status_writer(
        api.clone(),
        name.clone(),
        uid.clone(),
        rt_rx,
        writer_stop.clone(),
    ));

    // 3. Volumes (retried: a claim may not be bound yet, a Secret may not exist yet).
    let volumes = loop {
        if exit_requested(&pod).is_some() {
            break None;
        }
        let cx = VolumeContext {
            client: &k.client,
            pod: &first,
            pod_dir: &pod_dir,
            pod_ip: &pod_ip,
            host_ip: &host_ip,
        };
        match materialize(&cx).await {
            Ok(v) => break Some(v),
            Err(e) => {
                let message = format!("{e:#}");
                tracing::info!(pod = %name, error = %message, "volumes not ready");
                rt_tx.send_if_modified(|rt| {
                    let mut changed = false;
                    for c in &mut rt.containers {
                        let waiting = crate::status::State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        };
                        if c.state != waiting {
                            c.state = waiting;
                            changed = true;
                        }
                    }
                    changed
                });
                wait_change(&mut pod, &gone, &shutdown, Duration::from_secs(2)).await;
            }
        }
    };

    let mut exit = exit_requested(&pod);
    if let Some(volumes) = volumes {
        let refresh_after = volumes.refresh_after;
        let cx = Arc::new(PodCtx {
            kubelet: k.clone(),
            pod: pod.clone(),
            rt: rt_tx,
            name: name.clone(),
            namespace: namespace.clone(),
            uid: uid.clone(),
            net: net.clone(),
            pod_dir: pod_dir.clone(),
            volumes,
            logs: pod_logs,
            grace_seconds: AtomicU64::new(30),
        });
        let refresher = refresh_after.map(|after| {
            tokio::spawn(refresh_volumes(
                k.clone(),
                first.clone(),
                pod_dir.clone(),
                pod_ip.clone(),
                after,
            ))
        });
        let stop = CancellationToken::new();
        let containers = tokio::spawn(run_containers(cx.clone(), stop.clone()));
        tokio::pin!(containers);
        let mut containers_done = false;
        while exit.is_none() {
            tokio::select! {
                done = &mut containers, if !containers_done => {
                    containers_done = true;
                    let failed = !matches!(done, Ok(true));
                    cx.rt.send_modify(|rt| rt.terminal = Some(if failed { Terminal::Failed } else { Terminal::Succeeded }));
                    tracing::info!(pod = %name, failed, "pod finished");
                }
                _ = pod.changed() => {}
                () = gone.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
            exit = exit_requested(&pod);
        }
        let grace = match exit {
            Some(Exit::Deleting) => grace_period(&pod.borrow()),
            _ => grace_period(&pod.borrow()).min(k.shutdown_grace),
        };
        cx.grace_seconds.store(grace.as_secs(), Ordering::Relaxed);
        stop.cancel();
        if !containers_done {
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), &mut containers).await;
        }
        if let Some(r) = refresher {
            r.abort();
        }
    }

    // 4. Deletion: final status, then remove the object; always tear the sandbox down.
    writer_stop.cancel();
    if exit == Some(Exit::Deleting) {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        delete_now(&api, &name, &uid).await;
    } else {
        writer.abort();
    }
    k.hosts.remove(&uid);
    k.logs.remove(&namespace, &name, &uid);
    k.net.remove_pod_net(&net).await;
    let _ = std::fs::remove_dir_all(pod_dir.join("volumes"));
    tracing::info!(pod = %format!("{namespace}/{name}"), reason = ?exit, "pod stopped");
}

/// Init containers one after another (each must succeed), then all containers side by side.
/// `true` when every container ended with exit code 0.
async fn run_containers(cx: Arc<PodCtx>, stop: CancellationToken) -> bool {
    let (inits, mains) = {
        let pod = cx.pod.borrow();
        let spec = pod.spec.as_ref();
        (
            spec.and_then(|s| s.init_containers.as_ref())
                .map_or(0, Vec::len),
            spec.map_or(0, |s| s.containers.len()),
        )
    };
    for i in 0..inits {
        match run_container(cx.clone(), i, true, stop.clone()).await {
            Ended::Exited(0) => {}
            Ended::Exited(_) | Ended::Stopped => {
                stop.cancelled().await;
                return false;
            }
        }
    }
    let mut set = JoinSet::new();
    for i in 0..mains {
        set.spawn(run_container(cx.clone(), i, false, stop.clone()));
    }
    let mut ok = true;
    while let Some(r) = set.join_next().await {
        ok &= matches!(r, Ok(Ended::Exited(0)));
    }
    ok
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

async fn wait_change(
    pod: &mut watch::Receiver<Pod>,
    gone: &CancellationToken,
    shutdown: &CancellationToken,
    d: Duration,
) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        _ = pod.changed() => {}
        () = gone.cancelled() => {}
        () = shutdown.cancelled() => {}
    }
}

/// Re-requests projected tokens (and re-reads Secrets/ConfigMaps) before the tokens expire.
async fn refresh_volumes(
    k: Arc<Kubelet>,
    pod: Pod,
    pod_dir: PathBuf,
    pod_ip: String,
    mut after: Duration,
) {
    let host_ip = k.net.gateway().to_string();
    loop {
        tokio::time::sleep(after).await;
        let cx = VolumeContext {
            client: &k.client,
            pod: &pod,
            pod_dir: &pod_dir,
            pod_ip: &pod_ip,
            host_ip: &host_ip,
        };
        match materialize(&cx).await {
            Ok(v) => after = v.refresh_after.unwrap_or(after),
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, error = %format!("{e:#}"), "refreshing volumes");
                after = Duration::from_secs(10);
            }
        }
    }
}

/// Reports the pod status with server-side apply (only the fields the kubelet owns), whenever
/// the runtime state changes, and once more when stopped.
async fn status_writer(
    api: Api<Pod>,
    name: String,
    uid: String,
    mut rx: watch::Receiver<PodRt>,
    stop: CancellationToken,
) {
    let mut transitions = Transitions::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut last_sent: Option<PodRt> = None;
    loop {
        let snapshot = rx.borrow_and_update().clone();
        if last_sent.as_ref() != Some(&snapshot) {
            let status = build_status(&snapshot, &mut transitions, Timestamp::now());
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": name, "uid": uid },
                "status": status,
            });
            match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
                Ok(_) => last_sent = Some(snapshot),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "patching pod status; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = stop.cancelled() => {}
        }
        // Coalesce bursts (a container start and its first probe) into one write.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DELETE` with grace period 0 and this pod's UID as precondition: finishes a graceful deletion
/// and can never remove a newer pod of the same name.
async fn delete_now(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    for attempt in 0..5 {
        match api.delete(name, &params).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %name, attempt, error = %e, "deleting pod");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
