//! The enums both sides of the wire, and the `ReplicatedCluster` resource, share. With the
//! `clap` feature they are command-line values (kebab-case: `single-leader`); with `schemars`
//! they describe themselves in the CRD's schema. Their serde form is the Kubernetes one
//! (`SingleLeader`).

use serde::{Deserialize, Serialize};

/// Replication architecture of a cluster: one node binary runs either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Mode {
    /// One leader accepts writes and replicates its log to followers.
    SingleLeader,
    /// Every node coordinates reads and writes with read and write quorums.
    Leaderless,
}

/// Single-leader: when the leader acknowledges a write to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Replication {
    /// After the leader's own durable append. Writes not yet on a follower can be lost on failover.
    Async,
    /// After a majority of the cluster (leader included) holds the write durably.
    #[default]
    Quorum,
    /// After every follower the leader was told about holds the write durably.
    All,
}

/// Single-leader: what a follower does with a request only the leader serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Forwarding {
    /// 307 Temporary Redirect with the leader's address in `Location`.
    #[default]
    Redirect,
    /// Forward the request to the leader and relay its answer.
    Proxy,
}

/// Leaderless: how concurrent writes to one key are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum ConflictResolution {
    /// Highest hybrid-logical-clock timestamp wins; concurrent writes lose all but one.
    #[default]
    LastWriteWins,
    /// Concurrent values are all kept and returned with a causal context (Riak-style).
    Siblings,
}

/// A node's role: `Leader`, `Follower` or `Peer` (Leaderless mode), as reported by the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Role {
    /// Single-leader: accepts writes for its epoch and replicates them.
    Leader,
    /// Single-leader: replicates from the leader of its epoch (which may not be known yet).
    Follower,
    /// Leaderless: every node coordinates.
    Peer,
}

/// The value of an enum as a command-line flag or `RC_*` variable takes it (`single-leader`).
#[cfg(feature = "clap")]
pub fn arg_value<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}
