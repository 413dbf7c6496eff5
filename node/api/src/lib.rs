//! rc-api: the one contract between the node and the operator (and the `ReplicatedCluster`
//! resource). Pure data: serde types, path and setting names, no I/O.
//!
//! - `paths`: the HTTP paths; `env`: the `RC_*` settings;
//! - `modes`: the enums every side shares (mode, replication, forwarding, conflict
//!   resolution, role), usable as CLI values (`clap` feature) and CRD schema (`schemars`);
//! - `status`: `GET /admin/status`; `single_leader` and `leaderless`: each mode's admin and
//!   status types; `client`: the key-value API's bodies; `error`: error answers and codes.

pub mod client;
pub mod env;
pub mod error;
pub mod leaderless;
pub mod modes;
pub mod paths;
pub mod single_leader;
pub mod status;

pub use client::*;
pub use error::*;
pub use leaderless::*;
pub use modes::*;
pub use single_leader::*;
pub use status::*;
