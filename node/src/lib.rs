//! rc-node: a durable, replicated key-value node (single-leader mode; leaderless comes next).
//!
//! Layout: `storage` (WAL + snapshots, I/O), `kv` (state machine, pure), `replication`
//! (the pure replica core, quorum maths, and the peer protocol), `node` (the runtime tying them
//! together), `http` (client and admin APIs), `config`, `stats`, `metrics`.

pub mod clock;
pub mod config;
pub mod http;
pub mod kv;
pub mod leaderless;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod stats;
pub mod storage;
