//! The node's settings as environment variables: the node reads them (each is also a flag) and
//! the operator writes them into the cluster's ConfigMap and pod spec. One name, defined once.

/// Replication architecture: `single-leader` or `leaderless`.
pub const MODE: &str = "RC_MODE";
/// Stable id of the node (the pod name on Kubernetes).
pub const NODE_ID: &str = "RC_NODE_ID";
/// Address to listen on for HTTP and peer traffic.
pub const LISTEN: &str = "RC_LISTEN";
/// Address to listen on for peer traffic (replication, the leaderless internal API); unset: the
/// client port carries it.
pub const PEER_LISTEN: &str = "RC_PEER_LISTEN";
/// Address to listen on for the admin API; unset: the client port carries it.
pub const ADMIN_LISTEN: &str = "RC_ADMIN_LISTEN";
/// Address other nodes and clients use to reach the node.
pub const ADVERTISE: &str = "RC_ADVERTISE";
/// Where the log and snapshots live.
pub const DATA_DIR: &str = "RC_DATA_DIR";
/// File holding the admin API bearer token.
pub const ADMIN_TOKEN_FILE: &str = "RC_ADMIN_TOKEN_FILE";
/// The admin token itself.
pub const ADMIN_TOKEN: &str = "RC_ADMIN_TOKEN";
/// Client tokens, one per line (`<token>` or `<token> read-only`): with it, the client API
/// needs `Authorization: Bearer <token>`.
pub const CLIENT_TOKEN_FILE: &str = "RC_CLIENT_TOKEN_FILE";
/// The node's TLS certificate (PEM, leaf first); with the key, every surface serves TLS.
pub const TLS_CERT_FILE: &str = "RC_TLS_CERT_FILE";
/// The private key of the node's TLS certificate (PEM).
pub const TLS_KEY_FILE: &str = "RC_TLS_KEY_FILE";
/// The cluster CA (PEM) the node trusts when it dials its peers.
pub const TLS_CA_FILE: &str = "RC_TLS_CA_FILE";
/// The name a peer's certificate must carry when the peer is dialled by IP.
pub const TLS_SERVER_NAME: &str = "RC_TLS_SERVER_NAME";
/// Single-leader: when the leader acknowledges a write.
pub const REPLICATION: &str = "RC_REPLICATION";
/// Single-leader: a leader cut off from a majority this long refuses writes.
pub const FENCE_TIMEOUT_MS: &str = "RC_FENCE_TIMEOUT_MS";
/// Single-leader: how long a terminating leader waits for a hand-over.
pub const HANDOVER_TIMEOUT_MS: &str = "RC_HANDOVER_TIMEOUT_MS";
/// Single-leader: interval of leader heartbeats.
pub const HEARTBEAT_MS: &str = "RC_HEARTBEAT_MS";
/// How long a write or linearizable read may wait before 504.
pub const WRITE_TIMEOUT_MS: &str = "RC_WRITE_TIMEOUT_MS";
/// `always` or `interval`.
pub const FSYNC: &str = "RC_FSYNC";
/// With `interval`: how often to fdatasync.
pub const FSYNC_INTERVAL_MS: &str = "RC_FSYNC_INTERVAL_MS";
/// Snapshot and compact after this many applied entries.
pub const SNAPSHOT_EVERY: &str = "RC_SNAPSHOT_EVERY";
/// Single-leader: what a follower does with writes (`redirect` or `proxy`).
pub const FORWARDING: &str = "RC_FORWARDING";
/// Single-leader: whether stale reads go to caught-up followers.
pub const STALE_READ_OFFLOAD: &str = "RC_STALE_READ_OFFLOAD";
/// Single-leader: most entries behind a follower may be to serve them.
pub const STALE_READ_MAX_LAG: &str = "RC_STALE_READ_MAX_LAG";
/// Largest key accepted.
pub const MAX_KEY_BYTES: &str = "RC_MAX_KEY_BYTES";
/// Largest value accepted.
pub const MAX_VALUE_BYTES: &str = "RC_MAX_VALUE_BYTES";
/// Most operations in one batch.
pub const MAX_BATCH_OPS: &str = "RC_MAX_BATCH_OPS";
/// Leaderless: replicas per key (N).
pub const REPLICATION_FACTOR: &str = "RC_REPLICATION_FACTOR";
/// Leaderless: acknowledgements a write needs (W).
pub const WRITE_QUORUM: &str = "RC_WRITE_QUORUM";
/// Leaderless: answers a read needs (R).
pub const READ_QUORUM: &str = "RC_READ_QUORUM";
/// Leaderless: `last-write-wins` or `siblings`.
pub const CONFLICT_RESOLUTION: &str = "RC_CONFLICT_RESOLUTION";
/// Leaderless: most hinted writes kept for down members.
pub const HINT_LIMIT: &str = "RC_HINT_LIMIT";
/// Leaderless: seconds between anti-entropy rounds.
pub const ANTI_ENTROPY_INTERVAL_SECONDS: &str = "RC_ANTI_ENTROPY_INTERVAL_SECONDS";
/// Leaderless: how long tombstones are kept.
pub const TOMBSTONE_GRACE_SECONDS: &str = "RC_TOMBSTONE_GRACE_SECONDS";
/// Peers as `id=host:port,...`.
pub const PEERS: &str = "RC_PEERS";
/// `text` or `json`.
pub const LOG_FORMAT: &str = "RC_LOG_FORMAT";
/// tracing filter, e.g. `info`.
pub const LOG_LEVEL: &str = "RC_LOG_LEVEL";
