//! Prometheus metrics of the operator (prometheus-client), served on `/metrics`. In-memory only.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::crd::ReplicatedClusterStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 25 ms to ~100 s: a failover, or one of its phases.
fn failover_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.025, 2.0, 13))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// Every metric the operator exports, registered in `registry`.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub invalid_specs: Counter,
    pub is_leader: Gauge,
    pub ready_replicas: Family<ClusterLabels, Gauge>,
    pub balance_coefficient: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    pub mean_response_ms: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    /// Client-visible unavailability of each failover, by reason.
    pub failover_duration: Histograms<ReasonLabels>,
    /// Each failover's detect, fence and promote phases.
    pub failover_phase: Histograms<PhaseLabels>,
    /// Health-feed answers that woke a reconcile.
    pub feed_triggers: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("rc_operator"),
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            invalid_specs: Counter::default(),
            is_leader: Gauge::default(),
            ready_replicas: Family::default(),
            balance_coefficient: Family::default(),
            mean_response_ms: Family::default(),
            failover_duration: Family::new_with_constructor(failover_buckets),
            failover_phase: Family::new_with_constructor(failover_buckets),
            feed_triggers: Counter::default(),
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    /// Registers every metric (handles share their values with the registry's copies).
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "failover_duration_seconds",
            "Write unavailability of a failover: from the old leader's last known contact to the new leader's promotion, by reason",
            self.failover_duration.clone(),
        );
        registry.register(
            "failover_phase_seconds",
            "Phases of a failover: detect, fence, promote",
            self.failover_phase.clone(),
        );
        registry.register(
            "feed_triggers",
            "Node health-feed changes that started a reconcile",
            self.feed_triggers.clone(),
        );
        registry.register("reconciles", "Reconciliations run", self.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by step",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconciliation",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "invalid_specs",
            "Reconciliations that found an invalid spec",
            self.invalid_specs.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.is_leader.clone(),
        );
        registry.register(
            "cluster_ready_replicas",
            "Ready nodes per cluster",
            self.ready_replicas.clone(),
        );
        registry.register(
            "cluster_balance_coefficient",
            "Load-balance coefficient B = T_avg / max(T_i) per cluster",
            self.balance_coefficient.clone(),
        );
        registry.register(
            "cluster_mean_response_ms",
            "Mean over nodes of their mean response time (T_avg) per cluster",
            self.mean_response_ms.clone(),
        );
    }

    /// Publishes a cluster's status figures.
    pub fn observe_cluster(
        &self,
        namespace: &str,
        cluster: &str,
        status: &ReplicatedClusterStatus,
    ) {
        let labels = ClusterLabels {
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
        };
        self.ready_replicas
            .get_or_create(&labels)
            .set(i64::from(status.ready_replicas));
        if let Some(load) = &status.load {
            self.balance_coefficient
                .get_or_create(&labels)
                .set(load.balance_coefficient);
            self.mean_response_ms
                .get_or_create(&labels)
                .set(load.mean_response_ms);
        }
    }

    /// Records a completed failover's figures (`status.lastFailover`).
    pub fn observe_failover(&self, record: &crate::crd::FailoverRecord) {
        let secs = |ms: i64| ms as f64 / 1000.0;
        if let Some(ms) = record.unavailable_ms {
            let reason = record
                .reason
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            self.failover_duration
                .get_or_create(&ReasonLabels { reason })
                .observe(secs(ms));
        }
        for (phase, ms) in [
            ("detect", record.detect_ms),
            ("fence", record.fence_ms),
            ("promote", record.promote_ms),
        ] {
            if let Some(ms) = ms {
                self.failover_phase
                    .get_or_create(&PhaseLabels { phase })
                    .observe(secs(ms));
            }
        }
    }

    /// Forgets a deleted cluster's series.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        let labels = ClusterLabels {
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
        };
        self.ready_replicas.remove(&labels);
        self.balance_coefficient.remove(&labels);
        self.mean_response_ms.remove(&labels);
    }

    /// The text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
