//! A leaderless node's background work, started together and stopped together: gossip and
//! failure detection, hint replay, anti-entropy rounds, and the watch that streams ranges in.

use std::future::Future;
use std::sync::Arc;

use super::node::LeaderlessNode;
use super::{anti_entropy, gossip, hints, streaming};
use crate::shutdown;

/// Start every loop; each runs until the node's stop token is cancelled.
pub fn spawn_all(node: &Arc<LeaderlessNode>) {
    spawn(node, gossip::gossip_loop(node.clone()));
    spawn(node, hints::hint_loop(node.clone()));
    spawn(node, anti_entropy::anti_entropy_loop(node.clone()));
    spawn(node, streaming::join_watch(node.clone()));
}

/// Run `task` in the background until it ends or the node shuts down.
pub fn spawn(node: &LeaderlessNode, task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(shutdown::until(node.stop.clone(), task));
}
