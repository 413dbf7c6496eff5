//! Prometheus metrics (`GET /metrics`, text format via prometheus-client). Request counters and
//! latency are recorded as requests finish; replication gauges are read from the node at scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use rc_api::{NodeStatus, Role};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabel {
    pub follower: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Counter,
    pub latency: Histogram,
    epoch: Gauge,
    last_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    is_leader: Gauge,
    self_fenced: Gauge,
    follower_lag: Family<FollowerLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rc");
        let m = Metrics {
            requests: Counter::default(),
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            epoch: Gauge::default(),
            last_index: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            is_leader: Gauge::default(),
            self_fenced: Gauge::default(),
            follower_lag: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "client_requests",
            "Client API requests served",
            m.requests.clone(),
        );
        registry.register(
            "client_request_duration_seconds",
            "Client API response time",
            m.latency.clone(),
        );
        registry.register(
            "epoch",
            "Fencing epoch this node has adopted",
            m.epoch.clone(),
        );
        registry.register(
            "last_log_index",
            "Index of the last log entry",
            m.last_index.clone(),
        );
        registry.register(
            "commit_index",
            "Highest index known committed",
            m.commit_index.clone(),
        );
        registry.register(
            "applied_index",
            "Highest index applied to the state machine",
            m.applied_index.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this node leads its epoch",
            m.is_leader.clone(),
        );
        registry.register(
            "self_fenced",
            "1 while a leader refuses writes for lack of a majority",
            m.self_fenced.clone(),
        );
        registry.register(
            "follower_lag_entries",
            "Leader's view of each follower's lag",
            m.follower_lag.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format; the replication gauges are single-leader's
    /// (a leaderless node reports request counts and latency only).
    pub fn render(&self, status: &NodeStatus) -> String {
        self.follower_lag.clear();
        if let Some(s) = status.single_leader() {
            self.epoch.set(s.epoch as i64);
            self.last_index.set(s.last_log.index as i64);
            self.commit_index.set(s.commit_index as i64);
            self.applied_index.set(s.applied_index as i64);
            self.is_leader.set(i64::from(s.role == Role::Leader));
            self.self_fenced.set(i64::from(s.self_fenced));
            for f in &s.followers {
                self.follower_lag
                    .get_or_create(&FollowerLabel {
                        follower: f.id.clone(),
                    })
                    .set(f.lag_entries as i64);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
