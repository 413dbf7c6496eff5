//! `kubectl rcl`: the kubectl plugin for ReplicatedClusters (put `kubectl-rcl` on PATH).
//!
//! ```text
//! kubectl rcl status CLUSTER [-n NS] [-o json]     members, roles, epoch, lag, last failover, ring, load
//! kubectl rcl switchover CLUSTER [POD|any]         move the leader (SingleLeader), wait for the outcome
//! kubectl rcl restart CLUSTER                      a rolling restart of every pod, leader last
//! kubectl rcl fence POD | unfence POD              keep a pod from leading (maintenance)
//! ```
//!
//! Everything goes through the cluster object and annotations the operator acts on
//! (`replicated.dev/switchover`, `replicated.dev/restartedAt`, `replicated.dev/fenced`), so
//! the plugin needs only the RBAC to read and patch those objects, and never talks to nodes.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rc_operator::crd::{condition, MemberStatus, Mode, ReplicatedCluster, ReplicatedClusterStatus};
use rc_operator::labels::{FENCED_ANNOTATION, RESTARTED_AT_ANNOTATION, SWITCHOVER_ANNOTATION};
use serde_json::json;

#[derive(Parser)]
#[command(name = "kubectl rcl", version, about = "Operate ReplicatedClusters")]
struct Cli {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Members, roles, epoch, replication lag, last failover, ring and load of a cluster.
    Status { cluster: String },
    /// Move the leader of a SingleLeader cluster to POD (default: the most caught-up
    /// follower), and wait for the outcome.
    Switchover {
        cluster: String,
        /// Target pod, or `any`.
        #[arg(default_value = "any")]
        pod: String,
        /// How long to wait for the outcome (seconds); 0 returns at once.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Restart every pod by a rolling update (followers first, the leader last).
    Restart { cluster: String },
    /// Keep POD from leading: it is never chosen, and a leader is switched away from.
    Fence { pod: String },
    /// Undo `fence`.
    Unfence { pod: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (set KUBECONFIG or run in a pod)")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let clusters: Api<ReplicatedCluster> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Status { cluster } => {
            let object = get(&clusters, &cluster, &namespace).await?;
            print_status(&object, cli.output)
        }
        Command::Switchover { cluster, pod, wait } => {
            switchover(
                &clusters, &pods, &namespace, &cluster, &pod, wait, cli.output,
            )
            .await
        }
        Command::Restart { cluster } => {
            let object = get(&clusters, &cluster, &namespace).await?;
            let at = k8s_openapi::jiff::Timestamp::now().to_string();
            annotate(
                &clusters,
                &object.name_any(),
                RESTARTED_AT_ANNOTATION,
                Some(&at),
            )
            .await?;
            say(
                cli.output,
                json!({ "cluster": cluster, "restartedAt": at }),
                &format!("rolling restart of {cluster} requested ({RESTARTED_AT_ANNOTATION}={at}); follow it with `kubectl rcl status {cluster}`"),
            );
            Ok(())
        }
        Command::Fence { pod } | Command::Unfence { pod }
            if pods.get_opt(&pod).await?.is_none() =>
        {
            bail!("pod {pod} not found in namespace {namespace}")
        }
        Command::Fence { pod } => {
            annotate(&pods, &pod, FENCED_ANNOTATION, Some("true")).await?;
            say(cli.output, json!({ "pod": pod, "fenced": true }),
                &format!("{pod} fenced: it will not be elected leader; if it leads, the operator switches over to a caught-up follower"));
            Ok(())
        }
        Command::Unfence { pod } => {
            annotate(&pods, &pod, FENCED_ANNOTATION, None).await?;
            say(
                cli.output,
                json!({ "pod": pod, "fenced": false }),
                &format!("{pod} unfenced"),
            );
            Ok(())
        }
    }
}

async fn get(
    clusters: &Api<ReplicatedCluster>,
    name: &str,
    namespace: &str,
) -> anyhow::Result<ReplicatedCluster> {
    clusters
        .get_opt(name)
        .await
        .with_context(|| format!("reading ReplicatedCluster {namespace}/{name}"))?
        .with_context(|| {
            format!("ReplicatedCluster {name} not found in namespace {namespace} (kubectl get rcl -A lists them)")
        })
}

/// Sets (or with `None` removes) one annotation with a merge patch.
async fn annotate<K>(api: &Api<K>, name: &str, key: &str, value: Option<&str>) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({ "metadata": { "annotations": { key: value } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating {name}"))?;
    Ok(())
}

fn say(output: Output, value: serde_json::Value, text: &str) {
    match output {
        Output::Json => println!("{value:#}"),
        Output::Text => println!("{text}"),
    }
}

async fn switchover(
    clusters: &Api<ReplicatedCluster>,
    pods: &Api<Pod>,
    namespace: &str,
    cluster: &str,
    pod: &str,
    wait: u64,
    output: Output,
) -> anyhow::Result<()> {
    let object = get(clusters, cluster, namespace).await?;
    if object.spec.mode == Mode::Leaderless {
        bail!("{cluster} is a Leaderless cluster: every node takes writes, there is no leader to move; nothing changed");
    }
    let status = object.status.clone().unwrap_or_default();
    if pod != "any" {
        if !status.members.iter().any(|m| m.name == pod) && pods.get_opt(pod).await?.is_none() {
            bail!(
                "{pod} is not a member of {cluster} (members: {}); nothing changed",
                status
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if status.leader.as_deref() == Some(pod) {
            say(
                output,
                json!({ "cluster": cluster, "leader": pod, "changed": false }),
                &format!(
                    "{pod} already leads {cluster} (epoch {}); nothing to do",
                    status.epoch.unwrap_or(0)
                ),
            );
            return Ok(());
        }
    }
    let before = switchover_condition(&status);
    annotate(clusters, cluster, SWITCHOVER_ANNOTATION, Some(pod)).await?;
    if wait == 0 {
        say(
            output,
            json!({ "cluster": cluster, "requested": pod }),
            &format!("switchover of {cluster} to {pod} requested"),
        );
        return Ok(());
    }
    wait_for_switchover(clusters, namespace, cluster, wait, before, output).await
}

/// Polls the cluster until the operator took the request and set a new `Switchover` condition
/// (other than `before`), and reports it: done, or refused (an error).
async fn wait_for_switchover(
    clusters: &Api<ReplicatedCluster>,
    namespace: &str,
    cluster: &str,
    wait: u64,
    before: Option<Condition>,
    output: Output,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(wait) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = get(clusters, cluster, namespace).await?;
        if now.annotations().contains_key(SWITCHOVER_ANNOTATION) {
            continue;
        }
        let status = now.status.unwrap_or_default();
        let Some(outcome) = switchover_condition(&status).filter(|c| Some(c) != before.as_ref())
        else {
            continue;
        };
        let done = outcome.status == "True";
        say(
            output,
            json!({ "cluster": cluster, "done": done, "leader": status.leader, "epoch": status.epoch,
                    "message": outcome.message, "lastFailover": status.last_failover }),
            &format!(
                "{}: {}",
                if done {
                    "switchover done"
                } else {
                    "switchover refused"
                },
                outcome.message
            ),
        );
        return if done {
            Ok(())
        } else {
            bail!("{}", outcome.message)
        };
    }
    bail!("no outcome within {wait} s: the request stays on {cluster} ({SWITCHOVER_ANNOTATION}); see `kubectl describe rcl {cluster}`")
}

fn switchover_condition(status: &ReplicatedClusterStatus) -> Option<Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SWITCHOVER)
        .cloned()
}

fn print_status(cluster: &ReplicatedCluster, output: Output) -> anyhow::Result<()> {
    let status = cluster.status.clone().unwrap_or_default();
    if output == Output::Json {
        println!(
            "{:#}",
            json!({ "name": cluster.name_any(), "namespace": cluster.namespace(),
                    "mode": cluster.spec.mode, "spec": { "replicas": cluster.spec.replicas, "image": cluster.spec.image, "paused": cluster.spec.paused },
                    "status": status })
        );
        return Ok(());
    }
    print_summary(cluster, &status);
    println!();
    print_members(&status.members);
    println!();
    for c in &status.conditions {
        println!(
            "{:<12} {:<5} {:<20} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    Ok(())
}

/// The cluster, its phase, leader, voters, ring, last failover and load, one line each.
fn print_summary(cluster: &ReplicatedCluster, status: &ReplicatedClusterStatus) {
    let mode = match cluster.spec.mode {
        Mode::SingleLeader => "SingleLeader",
        Mode::Leaderless => "Leaderless",
    };
    println!(
        "Cluster   {}/{} ({mode}, {} replicas, image {})",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any(),
        cluster.spec.replicas,
        cluster.spec.image
    );
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "unknown".into());
    println!(
        "Phase     {phase}, {} of {} ready, {} updated",
        status.ready_replicas, status.replicas, status.updated_replicas
    );
    if let Some(leader) = &status.leader {
        println!("Leader    {leader} (epoch {})", status.epoch.unwrap_or(0));
    }
    if let Some(voters) = &status.voters {
        println!("Voters    {}", voters.join(", "));
    }
    if let Some(ring) = &status.ring {
        println!(
            "Ring      version {}, {} members",
            ring.version,
            ring.members.len()
        );
    }
    if let Some(f) = &status.last_failover {
        println!(
            "Failover  {} -> {} at epoch {}, {} ({} ms unavailable)",
            f.from.as_deref().unwrap_or("-"),
            f.to,
            f.epoch,
            f.reason.as_deref().unwrap_or("election"),
            f.unavailable_ms.unwrap_or(f.duration_ms)
        );
    }
    if let Some(load) = &status.load {
        println!(
            "Load      mean response {:.3} ms, max {:.3} ms, balance {:.2} over {} nodes",
            load.mean_response_ms, load.max_response_ms, load.balance_coefficient, load.nodes
        );
    }
}

/// One row per member: role, readiness, reachability, epoch, lag in entries and load ratio.
fn print_members(members: &[MemberStatus]) {
    println!(
        "{:<24} {:<9} {:<6} {:<10} {:>6} {:>9} {:>8}",
        "MEMBER", "ROLE", "READY", "REACHABLE", "EPOCH", "LAG", "LOAD"
    );
    for m in members {
        println!(
            "{:<24} {:<9} {:<6} {:<10} {:>6} {:>9} {:>8}",
            m.name,
            or_dash(m.role.map(|r| format!("{r:?}"))),
            m.ready,
            m.reachable,
            or_dash(m.epoch.map(|e| e.to_string())),
            or_dash(m.lag_entries.map(|l| l.to_string())),
            or_dash(m.load_ratio.map(|l| format!("{l:.2}")))
        );
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}
