//! rc-node: a durable, replicated key-value node, in one of two architectures.
//!
//! Layout: `single_leader` (the replicated log: pure replica core, quorum maths, peer protocol,
//! state machine, runtime and its HTTP APIs) and `leaderless` (ring, causal state, coordinator,
//! background repair and streaming, and its HTTP API) side by side; what both use: `storage`
//! (WAL + snapshots), `http` (the shared port, errors, auth, input limits), `config`, `clock`,
//! `stats`, `metrics`, `random`, `shutdown`. docs/design.md has the map of every concept to its file.

pub mod clock;
pub mod config;
pub mod http;
pub mod idle;
pub mod leaderless;
pub mod metrics;
pub mod peer_stream;
pub mod random;
pub mod security;
pub mod shutdown;
pub mod single_leader;
pub mod stats;
pub mod storage;
