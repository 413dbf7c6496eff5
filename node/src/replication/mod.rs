//! Single-leader replication: Raft's log discipline with the election taken out and given to
//! the operator (docs/design.md §5). `replica` is the pure state machine, `peer` the wire protocol and
//! the leader's per-follower senders.

pub mod log;
pub mod peer;
pub mod quorum;
pub mod replica;
