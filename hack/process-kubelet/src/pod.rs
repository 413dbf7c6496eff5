//! (I/O) One pod's life: sandbox (network namespace, hosts file, volumes, kept current by
//! `volume_refresh.rs` while the pod runs), containers (init containers in order, then the
//! rest side by side), the status writer, and deletion (stop the processes within the grace
//! period, report them terminated, then `DELETE` with grace 0 and a UID precondition so the
//! object really goes away).

mod status_writer;
mod volume_refresh;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::kubelet::{Kubelet, PodCtx};
use crate::logs::PodLogs;
use crate::net::PodNet;
use crate::runtime::{run_container, Ended};
use crate::status::{ContainerRt, PodRt, State, Terminal};
use crate::volumes::{materialize, VolumeContext, Volumes};
use status_writer::StatusWriter;
use volume_refresh::VolumeRefresher;

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
    pod: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let task = PodTask::new(k, pod.borrow().clone());
    if task.first.metadata.deletion_timestamp.is_some() {
        task.delete_now().await;
        return;
    }
    let mut events = Events {
        pod,
        gone,
        shutdown,
    };

    // 1. Sandbox: network namespace and hosts file.
    let Some(net) = task.create_sandbox(&mut events).await else {
        return;
    };
    let host_ip = task.k.net.gateway().to_string();
    let pod_ip = net.ip.to_string();

    // 2. Status writer.
    let (rt_tx, rt_rx) = watch::channel(task.initial_rt(&pod_ip, &host_ip));
    let pod_logs = task.register_logs(rt_tx.subscribe());
    let writer = StatusWriter::start(task.api.clone(), task.name.clone(), task.uid.clone(), rt_rx);

    // 3. Volumes (retried: a claim may not be bound yet, a Secret may not exist yet).
    let volumes = task
        .wait_for_volumes(&mut events, &pod_ip, &host_ip, &rt_tx)
        .await;

    let mut exit = events.exit_requested();
    if let Some(volumes) = volumes {
        let refresher = tokio::spawn(
            VolumeRefresher {
                k: task.k.clone(),
                pod: events.pod.clone(),
                pod_dir: task.pod_dir.clone(),
                pod_ip: pod_ip.clone(),
                written: volumes.written.clone(),
                renew_after: volumes.refresh_after,
            }
            .run(),
        );
        let cx = task.context(events.pod.clone(), rt_tx, &net, volumes, pod_logs);
        exit = run_until_exit(cx, &mut events, exit).await;
        refresher.abort();
    }

    // 4. Deletion: final status, then remove the object; always tear the sandbox down.
    let deleting = exit == Some(Exit::Deleting);
    writer.stop(deleting).await;
    if deleting {
        task.delete_now().await;
    }
    task.remove_sandbox(&net, exit).await;
}

/// What a pod task watches for: the pod's changes (and its `deletionTimestamp`), its removal
/// from the API (`gone`), the kubelet's `shutdown`.
struct Events {
    pod: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
}

impl Events {
    fn exit_requested(&self) -> Option<Exit> {
        if self.shutdown.is_cancelled() {
            Some(Exit::Shutdown)
        } else if self.gone.is_cancelled() {
            Some(Exit::Gone)
        } else if self.pod.borrow().metadata.deletion_timestamp.is_some() {
            Some(Exit::Deleting)
        } else {
            None
        }
    }

    /// Until the pod changes, is gone, or the kubelet stops.
    async fn changed(&mut self) {
        tokio::select! {
            changed = self.pod.changed() => {
                if changed.is_err() {
                    // The controller stopped watching (its stream ended): nothing will change
                    // the pod any more, and answering at once would make every caller spin.
                    ended(&self.gone, &self.shutdown).await;
                }
            }
            () = ended(&self.gone, &self.shutdown) => {}
        }
    }

    /// The same, for `d` at most.
    async fn changed_within(&mut self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.changed() => {}
        }
    }
}

/// Until the pod is `gone` or the kubelet's `shutdown`.
async fn ended(gone: &CancellationToken, shutdown: &CancellationToken) {
    tokio::select! {
        () = gone.cancelled() => {}
        () = shutdown.cancelled() => {}
    }
}

/// One pod task's own facts: the pod as first seen, its names, API and directory.
struct PodTask {
    k: Arc<Kubelet>,
    first: Pod,
    name: String,
    namespace: String,
    uid: String,
    api: Api<Pod>,
    pod_dir: PathBuf,
}

impl PodTask {
    fn new(k: Arc<Kubelet>, first: Pod) -> Self {
        let name = first.metadata.name.clone().unwrap_or_default();
        let namespace = first.metadata.namespace.clone().unwrap_or_default();
        let uid = first.metadata.uid.clone().unwrap_or_default();
        let api = Api::namespaced(k.client.clone(), &namespace);
        let pod_dir = k
            .state_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        PodTask {
            k,
            first,
            name,
            namespace,
            uid,
            api,
            pod_dir,
        }
    }

    /// The network namespace (retried until it exists or the task must end), the pod directory
    /// and the hosts file. `None`: the task ends (after a `DELETE` when the pod is deleting).
    async fn create_sandbox(&self, events: &mut Events) -> Option<PodNet> {
        let net = loop {
            if let Some(exit) = events.exit_requested() {
                if exit == Exit::Deleting {
                    self.delete_now().await;
                }
                return None;
            }
            match self.k.net.create_pod_net().await {
                Ok(net) => break net,
                Err(e) => {
                    tracing::warn!(pod = %self.name, error = %format!("{e:#}"), "creating the pod network");
                    events.changed_within(Duration::from_secs(2)).await;
                }
            }
        };
        let pod_ip = net.ip.to_string();
        if let Err(e) = std::fs::create_dir_all(&self.pod_dir) {
            tracing::warn!(pod = %self.name, error = %e, "creating the pod directory");
        }
        self.k.hosts.add(
            &self.uid,
            &self.first,
            &pod_ip,
            self.pod_dir.join("etc-hosts"),
        );
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), ip = %pod_ip, netns = %net.netns, "pod sandbox ready");
        Some(net)
    }

    /// The runtime state before any container has run.
    fn initial_rt(&self, pod_ip: &str, host_ip: &str) -> PodRt {
        let spec = self.first.spec.clone().unwrap_or_default();
        PodRt {
            pod_ip: Some(pod_ip.to_owned()),
            host_ip: host_ip.to_owned(),
            start_time: Timestamp::now(),
            sandbox_ready: true,
            containers: spec
                .containers
                .iter()
                .map(|c| ContainerRt::new(&c.name, c.image.as_deref().unwrap_or_default()))
                .collect(),
            terminal: None,
        }
    }

    /// The pod's container logs, registered for the kubelet API.
    fn register_logs(&self, rt: watch::Receiver<PodRt>) -> Arc<PodLogs> {
        let spec = self.first.spec.clone().unwrap_or_default();
        let names = |list: Option<&Vec<Container>>| {
            list.map(|l| l.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let pod_logs = Arc::new(PodLogs::new(
            &self.uid,
            &self.name,
            self.pod_dir.join("logs"),
            names(spec.init_containers.as_ref()),
            names(Some(&spec.containers)),
            rt,
        ));
        self.k
            .logs
            .register(&self.namespace, &self.name, pod_logs.clone());
        pod_logs
    }

    /// The volumes, retried until they can all be made or the task must end (`None`); until
    /// then every container waits in `ContainerCreating` with the reason.
    async fn wait_for_volumes(
        &self,
        events: &mut Events,
        pod_ip: &str,
        host_ip: &str,
        rt: &watch::Sender<PodRt>,
    ) -> Option<Volumes> {
        loop {
            if events.exit_requested().is_some() {
                return None;
            }
            let cx = VolumeContext {
                client: &self.k.client,
                pod: &self.first,
                pod_dir: &self.pod_dir,
                pod_ip,
                host_ip,
            };
            match materialize(&cx).await {
                Ok(v) => return Some(v),
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::info!(pod = %self.name, error = %message, "volumes not ready");
                    containers_creating(rt, &message);
                    events.changed_within(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// What the pod's container tasks share.
    fn context(
        &self,
        pod: watch::Receiver<Pod>,
        rt: watch::Sender<PodRt>,
        net: &PodNet,
        volumes: Volumes,
        logs: Arc<PodLogs>,
    ) -> Arc<PodCtx> {
        Arc::new(PodCtx {
            kubelet: self.k.clone(),
            pod,
            rt,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            net: net.clone(),
            pod_dir: self.pod_dir.clone(),
            volumes,
            logs,
            grace_seconds: AtomicU64::new(30),
        })
    }

    /// `DELETE` with grace period 0 and this pod's UID as precondition: finishes a graceful
    /// deletion and can never remove a newer pod of the same name.
    async fn delete_now(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..5 {
            match self.api.delete(&self.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(pod = %self.name, attempt, error = %e, "deleting pod");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The hosts entry, the logs' registration, the network namespace and the volume files.
    async fn remove_sandbox(&self, net: &PodNet, exit: Option<Exit>) {
        self.k.hosts.remove(&self.uid);
        self.k.logs.remove(&self.namespace, &self.name, &self.uid);
        self.k.net.remove_pod_net(net).await;
        let _ = std::fs::remove_dir_all(self.pod_dir.join("volumes"));
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), reason = ?exit, "pod stopped");
    }
}

/// Every container waits in `ContainerCreating` with `message`.
fn containers_creating(rt: &watch::Sender<PodRt>, message: &str) {
    rt.send_if_modified(|rt| {
        let mut changed = false;
        for c in &mut rt.containers {
            let waiting = State::Waiting {
                reason: "ContainerCreating".into(),
                message: message.to_owned(),
            };
            if c.state != waiting {
                c.state = waiting;
                changed = true;
            }
        }
        changed
    });
}

/// Runs the containers until the task must end (`exit`), then stops them within the grace
/// period; returns why it ends.
async fn run_until_exit(
    cx: Arc<PodCtx>,
    events: &mut Events,
    mut exit: Option<Exit>,
) -> Option<Exit> {
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
                tracing::info!(pod = %cx.name, failed, "pod finished");
            }
            () = events.changed() => {}
        }
        exit = events.exit_requested();
    }
    let grace = match exit {
        Some(Exit::Deleting) => grace_period(&events.pod.borrow()),
        _ => grace_period(&events.pod.borrow()).min(cx.kubelet.shutdown_grace),
    };
    cx.grace_seconds.store(grace.as_secs(), Ordering::Relaxed);
    stop.cancel();
    if !containers_done {
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), &mut containers).await;
    }
    exit
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pod_whose_watch_ended_waits_for_shutdown_instead_of_spinning() {
        let (tx, pod) = watch::channel(Pod::default());
        let mut events = Events {
            pod,
            gone: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        };
        drop(tx);
        let waited = tokio::time::timeout(Duration::from_millis(200), events.changed()).await;
        assert!(
            waited.is_err(),
            "changed() returned although nothing changed"
        );
        events.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), events.changed()).await;
        assert!(stopped.is_ok(), "changed() did not return on shutdown");
    }
}
