//! Single-leader mode: Raft's log discipline with the election taken out and given to the
//! operator (docs/design.md §5). `replica` is the pure state machine, `quorum` its maths, `log`
//! the in-memory log, `kv` the key-value state machine, `peer` the wire protocol and the leader's
//! per-follower senders, `node` the runtime that ties them to storage, and `http` its APIs.

pub mod http;
pub mod kv;
pub mod log;
pub mod node;
pub mod peer;
pub mod quorum;
pub mod replica;
