//! (I/O: watch) Pods bound to this node (`spec.nodeName`), each handed to its own task
//! (`pod::run_pod`) with a channel of the latest object. A pod deleted from the API, or
//! missing after a re-list, is stopped without another `DELETE`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kubelet::Kubelet;
use crate::pod::run_pod;

struct Handle {
    pod: watch::Sender<Pod>,
    gone: CancellationToken,
    task: JoinHandle<()>,
}

pub async fn run(k: Arc<Kubelet>, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(k.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", k.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut pods: HashMap<String, Handle> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = shutdown.cancelled() => break,
        };
        match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(seen) = listed.as_mut() {
                    seen.insert(uid.clone());
                }
                upsert(&k, &mut pods, uid, pod, &shutdown);
            }
            Some(Ok(Event::Delete(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(h) = pods.get(&uid) {
                    h.gone.cancel();
                }
            }
            Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(Event::InitDone)) => {
                if let Some(seen) = listed.take() {
                    for (uid, h) in &pods {
                        if !seen.contains(uid) {
                            h.gone.cancel();
                        }
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
            None => break,
        }
        pods.retain(|_, h| !h.task.is_finished());
    }
    // Shutdown: every pod task stops its processes and removes its sandbox.
    let tasks: Vec<_> = pods.into_values().map(|h| h.task).collect();
    let all = futures::future::join_all(tasks);
    let bound = k.shutdown_grace + Duration::from_secs(10);
    if tokio::time::timeout(bound, all).await.is_err() {
        tracing::warn!("pods did not stop within {bound:?}");
    }
}

fn upsert(
    k: &Arc<Kubelet>,
    pods: &mut HashMap<String, Handle>,
    uid: String,
    pod: Pod,
    shutdown: &CancellationToken,
) {
    if let Some(h) = pods.get(&uid) {
        h.pod.send_replace(pod);
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded" | "Failed"));
    if terminal && pod.metadata.deletion_timestamp.is_none() {
        return; // finished before; nothing to run (a later deletion arrives as a new event)
    }
    tracing::info!(pod = %format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or(""), pod.metadata.name.as_deref().unwrap_or("")), "pod bound to this node");
    let (tx, rx) = watch::channel(pod);
    let gone = CancellationToken::new();
    let task = tokio::spawn(run_pod(k.clone(), rx, gone.clone(), shutdown.clone()));
    pods.insert(
        uid,
        Handle {
            pod: tx,
            gone,
            task,
        },
    );
}
