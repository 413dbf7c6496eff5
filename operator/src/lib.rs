//! The rc-operator: reconciles `ReplicatedCluster` resources into StatefulSets of rc-node and
//! reports their observed state. See `docs/operator.md` for the architecture.

pub mod controller;
pub mod crd;
pub mod credentials;
pub mod executor;
pub mod failover;
pub mod feed;
pub mod http;
pub mod labels;
pub mod membership;
pub mod metrics;
pub mod node_client;
pub mod rollout;
