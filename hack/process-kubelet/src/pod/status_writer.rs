//! (I/O: API writes) The pod's status, reported with server-side apply of `pods/status`
//! (field manager `rc-process-kubelet`, only the fields the kubelet owns) whenever the runtime
//! state changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kubelet::FIELD_MANAGER;
use crate::status::{build_status, PodRt, Transitions};

/// The task that reports the pod's status.
pub struct StatusWriter {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl StatusWriter {
    pub fn start(api: Api<Pod>, name: String, uid: String, rx: watch::Receiver<PodRt>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(report(api, name, uid, rx, stop.clone()));
        StatusWriter { task, stop }
    }

    /// With `last_report`, lets it send the final status first (5 s at most).
    pub async fn stop(self, last_report: bool) {
        self.stop.cancel();
        if last_report {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        } else {
            self.task.abort();
        }
    }
}

/// Reports the pod status with server-side apply (only the fields the kubelet owns), whenever
/// the runtime state changes, and once more when stopped.
async fn report(
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
