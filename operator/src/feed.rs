//! (client) The health feed: one long-poll per single-leader node (`GET /admin/status` with
//! `waitForChange`, see [`rc_api::StatusQuery`]) that wakes the cluster's reconcile the moment a
//! node's [`Health`] changes: role, epoch, leader, self-fence, or "no contact with the leader
//! for `leaderLossTimeoutMs`". It replaces waiting for readiness probes and the periodic
//! refresh as the way the operator learns that a leader is lost.
//!
//! The feed only *triggers*: the reconcile it wakes reads every node afresh and decides from
//! that, so a feed that is late, lost or lying can delay a failover but never cause a wrong
//! one. A node that does not answer, hangs past the wait, or answers something unreadable is
//! unreachable: one trigger when it goes (the reconcile then sees it unreachable too), one
//! when it comes back, retries with backoff in between.
//!
//! Each reconcile of a single-leader cluster calls [`Feed::watch`] with the members it sees;
//! tasks follow that list. A cluster whose reconciles stop (deleted, or the operator lost its
//! Lease) has its tasks end by themselves after [`STALE`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use rc_api::{Health, StatusQuery};
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::crd::ReplicatedCluster;
use crate::metrics::Metrics;
use crate::node_client::{NodeAccess, NodeAdmin};

/// The object the controller reconciles.
pub type ClusterRef = ObjectRef<DeserializeGuard<ReplicatedCluster>>;

/// The reference the controller and the feed both use for a cluster.
pub fn cluster_ref(name: &str, namespace: &str) -> ClusterRef {
    ObjectRef::new(name).within(namespace)
}

/// How long one feed request waits for a change before the node answers unchanged.
pub const WAIT: Duration = Duration::from_secs(10);
/// Retries after a failed request: from this...
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// ...doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A cluster not reconciled for this long has its feed stopped (a healthy one is reconciled
/// every 30 s).
pub const STALE: Duration = Duration::from_secs(120);

/// One member to follow: its name, where to dial it, and the health the reconcile last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub address: String,
    /// `None` when the reconcile could not read it.
    pub seen: Option<String>,
}

/// The feeds of every single-leader cluster this operator reconciles.
pub struct Feed {
    nodes: Arc<dyn NodeAdmin>,
    metrics: Arc<Metrics>,
    triggers: broadcast::Sender<ClusterRef>,
    clusters: Mutex<HashMap<ClusterRef, Watched>>,
}

/// One cluster's feed tasks and what they were started with.
struct Watched {
    auth: NodeAccess,
    leader_loss_ms: u64,
    /// When a reconcile last confirmed the list; the tasks end once it is older than STALE.
    refreshed: Arc<Mutex<Instant>>,
    /// Per member: the address its task dials, and the task (aborted when dropped).
    tasks: BTreeMap<String, (String, AbortOnDrop)>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Feed {
    pub fn new(nodes: Arc<dyn NodeAdmin>, metrics: Arc<Metrics>) -> Arc<Self> {
        let (triggers, _) = broadcast::channel(1024);
        Arc::new(Self {
            nodes,
            metrics,
            triggers,
            clusters: Mutex::default(),
        })
    }

    /// The clusters to reconcile now, for `Controller::reconcile_on`: those in `namespace`,
    /// or all. A receiver that falls behind skips what it missed (the periodic refresh covers
    /// it).
    pub fn triggers(&self, namespace: Option<String>) -> impl Stream<Item = ClusterRef> + Send {
        let rx = self.triggers.subscribe();
        futures::stream::unfold(rx, move |mut rx| {
            let namespace = namespace.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(cluster) if namespace.is_none() || cluster.namespace == namespace => {
                            return Some((cluster, rx))
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }

    /// Follows exactly `targets` of `cluster` from now on: starts tasks for new members (or
    /// new addresses, credentials or timeout), stops those of members no longer listed.
    pub fn watch(
        self: &Arc<Self>,
        cluster: &ClusterRef,
        auth: &NodeAccess,
        leader_loss_ms: u64,
        targets: &[Target],
    ) {
        let Ok(mut clusters) = self.clusters.lock() else {
            return;
        };
        clusters.retain(|_, w| w.refreshed.lock().is_ok_and(|t| t.elapsed() < STALE));
        let watched = clusters.entry(cluster.clone()).or_insert_with(|| Watched {
            auth: auth.clone(),
            leader_loss_ms,
            refreshed: Arc::new(Mutex::new(Instant::now())),
            tasks: BTreeMap::new(),
        });
        if watched.auth != *auth || watched.leader_loss_ms != leader_loss_ms {
            watched.tasks.clear();
            watched.auth = auth.clone();
            watched.leader_loss_ms = leader_loss_ms;
        }
        if let Ok(mut t) = watched.refreshed.lock() {
            *t = Instant::now();
        }
        watched.tasks.retain(|name, (address, _)| {
            targets
                .iter()
                .any(|t| t.name == *name && t.address == *address)
        });
        for target in targets {
            if watched.tasks.contains_key(&target.name) {
                continue;
            }
            debug!(cluster = %cluster, node = %target.name, address = %target.address, "health feed started");
            let task = tokio::spawn(follow(
                self.clone(),
                cluster.clone(),
                target.clone(),
                auth.clone(),
                leader_loss_ms,
                watched.refreshed.clone(),
            ));
            watched.tasks.insert(
                target.name.clone(),
                (target.address.clone(), AbortOnDrop(task)),
            );
        }
    }

    /// Stops every task of `cluster` (it was deleted or is no longer single-leader).
    pub fn forget(&self, cluster: &ClusterRef) {
        if let Ok(mut clusters) = self.clusters.lock() {
            clusters.remove(cluster);
        }
    }

    /// How many nodes are followed now.
    pub fn followed(&self) -> usize {
        self.clusters
            .lock()
            .map(|c| c.values().map(|w| w.tasks.len()).sum())
            .unwrap_or(0)
    }

    fn trigger(&self, cluster: &ClusterRef) {
        self.metrics.feed_triggers.inc();
        // No receiver means no controller runs (not leading): nothing to wake.
        let _ = self.triggers.send(cluster.clone());
    }
}

/// One member's feed, until aborted or its cluster is stale.
async fn follow(
    feed: Arc<Feed>,
    cluster: ClusterRef,
    target: Target,
    auth: NodeAccess,
    leader_loss_ms: u64,
    refreshed: Arc<Mutex<Instant>>,
) {
    let mut seen = target.seen.clone();
    let mut backoff = MIN_BACKOFF;
    loop {
        if refreshed.lock().map_or(true, |t| t.elapsed() >= STALE) {
            debug!(cluster = %cluster, node = %target.name, "health feed stopped: cluster no longer reconciled");
            return;
        }
        let query = StatusQuery {
            // A token no node has: answered at once.
            wait_for_change: Some(seen.clone().unwrap_or_else(|| "unknown".to_owned())),
            timeout_ms: Some(u64::try_from(WAIT.as_millis()).unwrap_or(10_000)),
            leader_loss_ms: Some(leader_loss_ms),
        };
        let asked = Instant::now();
        match feed
            .nodes
            .watch_status(&target.address, &auth, &query)
            .await
        {
            Ok(status) => {
                backoff = MIN_BACKOFF;
                let now = match status.single_leader() {
                    Some(s) => Health::of(s, leader_loss_ms).token(),
                    None => "leaderless".to_owned(),
                };
                if seen.as_deref() != Some(now.as_str()) {
                    info!(cluster = %cluster, node = %target.name, from = seen.as_deref().unwrap_or("unreachable"), to = %now, "node health changed");
                    seen = Some(now);
                    feed.trigger(&cluster);
                } else if asked.elapsed() < WAIT / 2 {
                    // Unchanged yet answered early: a node that does not wait (an older
                    // version) is polled, not spun on.
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
            }
            Err(e) => {
                if let Some(was) = seen.take() {
                    info!(cluster = %cluster, node = %target.name, from = %was, error = %e, "node health feed lost: unreachable");
                    feed.trigger(&cluster);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
