//! Leaderless mode (docs/design.md §6): a consistent-hash ring with virtual nodes, quorum reads and
//! writes coordinated by any node, read repair, hinted handoff, digest-based anti-entropy, and
//! operator-driven membership (`PUT /admin/ring`, `POST /admin/decommission`).
//!
//! Pure: `ring` (layout, owners, pending owners), `dvv` (per-key causal state and merges), `hlc`
//! (timestamps), `quorum` (the coordinator's decisions), `failure_detector`. I/O: `node` (the
//! store and its coordinator), `http`; background work started by `tasks`: `gossip`, `hints`,
//! `anti_entropy`, `streaming`, `purge` (tombstones), `cleanup` (ranges no longer owned).

pub mod anti_entropy;
pub mod cleanup;
pub mod dvv;
pub mod failure_detector;
pub mod gossip;
pub mod hints;
pub mod hlc;
pub mod http;
pub mod node;
pub mod peer;
pub mod purge;
pub mod quorum;
pub mod ring;
pub mod streaming;
pub mod tasks;
