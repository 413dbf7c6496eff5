//! (I/O: API reads, files) Keeps a running pod's secret, configMap, downwardAPI and projected
//! volumes current, as the kubelet's periodic pod sync does (there every `--sync-frequency`,
//! 1 min; here `--volume-refresh-seconds`, 2 s by default, so tests see a rotated Secret
//! quickly): each pass reads them again and replaces only the files that changed
//! (`volumes::refresh`). Projected service-account tokens are requested again only at 80% of
//! their life. A volume that cannot be refreshed (its Secret deleted) keeps its files; that is
//! logged once per distinct error, and again when it recovers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::kubelet::Kubelet;
use crate::volumes::{refresh, Tokens, VolumeContext, VolumeRefresh};

/// One pod's volume refresher, until the pod has finished (phase Succeeded or Failed).
pub struct VolumeRefresher {
    pub k: Arc<Kubelet>,
    /// The latest pod object (downwardAPI files follow its labels and annotations).
    pub pod: watch::Receiver<Pod>,
    pub pod_dir: PathBuf,
    pub pod_ip: String,
    /// `Volumes::written`: the volumes to refresh and the files written in each.
    pub written: BTreeMap<String, BTreeSet<PathBuf>>,
    /// When the tokens written first need renewing.
    pub renew_after: Option<Duration>,
}

impl VolumeRefresher {
    /// Refreshes until the task is aborted or the pod has finished; returns at once when there
    /// is nothing to refresh.
    pub async fn run(mut self) {
        if self.written.is_empty() {
            return;
        }
        let period = self.k.volume_refresh;
        let mut renew_at = self.renew_after.map(|d| Instant::now() + d);
        let mut failing = BTreeMap::new();
        loop {
            let wake = match (period.map(|p| Instant::now() + p), renew_at) {
                (Some(sync), Some(renew)) => sync.min(renew),
                (Some(at), None) | (None, Some(at)) => at,
                (None, None) => return,
            };
            tokio::time::sleep_until(wake).await;
            let tokens = if renew_at.is_some_and(|at| Instant::now() >= at) {
                Tokens::Request
            } else {
                Tokens::Keep
            };
            let pod = self.pod.borrow().clone();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return; // no container will read them again
            }
            let host_ip = self.k.net.gateway().to_string();
            let cx = VolumeContext {
                client: &self.k.client,
                pod: &pod,
                pod_dir: &self.pod_dir,
                pod_ip: &self.pod_ip,
                host_ip: &host_ip,
            };
            let (outcomes, renew_after) = refresh(&cx, &mut self.written, tokens).await;
            if tokens == Tokens::Request {
                let after = renew_after.unwrap_or(Duration::from_secs(10));
                renew_at = Some(Instant::now() + after);
            }
            report(&pod_name(&pod), outcomes, &mut failing);
        }
    }
}

fn pod_name(pod: &Pod) -> String {
    let meta = &pod.metadata;
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Logs what changed, and each volume's failure once (`failing`: the last error per volume).
fn report(pod: &str, outcomes: Vec<VolumeRefresh>, failing: &mut BTreeMap<String, String>) {
    for (volume, result) in outcomes {
        match result {
            Ok(applied) => {
                if failing.remove(&volume).is_some() {
                    tracing::info!(%pod, %volume, "volume refreshed again");
                }
                if applied.changed() {
                    tracing::info!(%pod, %volume, written = ?applied.written, removed = ?applied.removed, "volume files updated");
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                if failing.get(&volume) != Some(&error) {
                    tracing::warn!(%pod, %volume, %error, "cannot refresh volume; its files stay as they were");
                    failing.insert(volume, error);
                }
            }
        }
    }
}
