//! A leaderless node's background work, started together and stopped together: gossip and
//! failure detection, hint replay, anti-entropy rounds, and the watch that streams ranges in.

use std::sync::Arc;

use super::node::LeaderlessNode;
use super::{anti_entropy, gossip, hints, streaming};

pub fn spawn_all(node: &Arc<LeaderlessNode>) {
    tokio::spawn(gossip::gossip_loop(node.clone()));
    tokio::spawn(hints::hint_loop(node.clone()));
    tokio::spawn(anti_entropy::anti_entropy_loop(node.clone()));
    tokio::spawn(streaming::join_watch(node.clone()));
}
