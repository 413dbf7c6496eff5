//! Leaderless mode (docs/design.md §6): a consistent-hash ring with virtual nodes, quorum reads and
//! writes coordinated by any node, read repair, hinted handoff, digest-based anti-entropy, and
//! operator-driven membership (`PUT /admin/ring`, `POST /admin/decommission`).
//!
//! `ring`, `state` and `fd` (failure detector) are pure; `node` does the I/O; `http` serves it; `tasks`, `purge` and
//! `cleanup` are the background work.

pub mod cleanup;
pub mod fd;
pub mod http;
pub mod node;
pub mod purge;
pub mod ring;
pub mod state;
pub mod tasks;
