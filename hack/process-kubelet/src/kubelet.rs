//! The kubelet's shared context: what every pod task shares ([`Kubelet`]) and what one pod's
//! container tasks share ([`PodCtx`]). One pod's life is `pod.rs`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use tokio::sync::watch;

use crate::hosts::HostsTable;
use crate::images::ImageMap;
use crate::logs::{LogRegistry, PodLogs};
use crate::net::{Network, PodNet};
use crate::status::PodRt;
use crate::volumes::Volumes;

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
    /// How often running pods' secret, configMap, downwardAPI and projected volumes are read
    /// again (`None`: never; projected tokens are still renewed when due).
    pub volume_refresh: Option<Duration>,
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
