//! (I/O) The Node object and its heartbeats: the Node is applied once (labels), its status
//! (Ready and the pressure conditions, capacity = allocatable, addresses, nodeInfo) every 30 s,
//! and the `kube-node-lease` Lease renewed every 10 s, as the kubelet does (control-plane.md
//! 5.1-5.2). At shutdown the node reports `Ready=False`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::kubelet::FIELD_MANAGER;

pub struct NodeConfig {
    pub name: String,
    pub internal_ip: String,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    pub kubelet_version: String,
    /// Port of the kubelet API on `internal_ip` (0: not served).
    pub kubelet_port: u16,
}

const STATUS_EVERY: Duration = Duration::from_secs(30);
const LEASE_EVERY: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

/// Creates or updates the Node and reports it Ready; returns its UID.
pub async fn register(
    client: &Client,
    cfg: &NodeConfig,
    started: Timestamp,
) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.name,
            "labels": {
                "kubernetes.io/hostname": cfg.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch(),
                "node.kubernetes.io/process-kubelet": "true",
            },
        },
    });
    let applied = api.patch(&cfg.name, &params, &Patch::Apply(&node)).await?;
    report_status(client, cfg, started, true).await?;
    Ok(applied.metadata.uid.unwrap_or_default())
}

pub async fn report_status(
    client: &Client,
    cfg: &NodeConfig,
    since: Timestamp,
    ready: bool,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now().to_string();
    let since = since.to_string();
    let cond = |type_: &str, status: bool, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        })
    };
    let resources = json!({
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "pods": cfg.max_pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let status = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": cfg.name },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                if ready {
                    cond("Ready", true, "KubeletReady", "kubelet is posting ready status (rc-process-kubelet)")
                } else {
                    cond("Ready", false, "KubeletNotReady", "rc-process-kubelet stopped")
                },
            ],
            "addresses": [
                { "type": "InternalIP", "address": cfg.internal_ip },
                { "type": "Hostname", "address": cfg.name },
            ],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": cfg.kubelet_port } },
            "nodeInfo": node_info(cfg),
        },
    });
    api.patch_status(
        &cfg.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(())
}

/// `status.nodeInfo`: this machine's kernel, IDs and architecture, and the kubelet's version.
fn node_info(cfg: &NodeConfig) -> serde_json::Value {
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned();
    json!({
        "architecture": arch(),
        "operatingSystem": "linux",
        "osImage": "rc-process-kubelet (processes on the host)",
        "kernelVersion": kernel,
        "kubeletVersion": cfg.kubelet_version,
        "kubeProxyVersion": "",
        "containerRuntimeVersion": concat!("process://", env!("CARGO_PKG_VERSION")),
        "machineID": machine_id,
        "systemUUID": machine_id,
        "bootID": boot_id,
    })
}

/// This machine's architecture as Kubernetes names it.
fn arch() -> String {
    std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64")
}

async fn renew_lease(client: &Client, cfg: &NodeConfig, node_uid: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": cfg.name,
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": cfg.name, "uid": node_uid }],
        },
        "spec": {
            "holderIdentity": cfg.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    });
    api.patch(
        &cfg.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&lease),
    )
    .await?;
    Ok(())
}

/// Lease renewals and status reports until `shutdown`; then one last `Ready=False` report.
pub async fn heartbeat(
    client: Client,
    cfg: NodeConfig,
    node_uid: String,
    started: Timestamp,
    shutdown: CancellationToken,
) {
    let mut lease_tick = tokio::time::interval(LEASE_EVERY);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&client, &cfg, &node_uid).await {
                    tracing::warn!(error = %format!("{e:#}"), "renewing the node lease");
                }
            }
            _ = status_tick.tick() => {
                if let Err(e) = report_status(&client, &cfg, started, true).await {
                    tracing::warn!(error = %format!("{e:#}"), "reporting node status");
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = report_status(&client, &cfg, Timestamp::now(), false).await {
        tracing::debug!(error = %format!("{e:#}"), "reporting node not ready at shutdown");
    }
}
