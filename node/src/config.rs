//! Command-line flags and environment variables (every flag has an `RC_*` variable, named in
//! `rc_api::env`, so a StatefulSet can configure the node through a ConfigMap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use rc_api::{env, ConflictResolution, Forwarding, Mode, Replication};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// fdatasync before acknowledging, shared by concurrent writes (group commit).
    Always,
    /// Acknowledge after write(2); fdatasync every --fsync-interval-ms.
    Interval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Offload {
    Off,
    Redirect,
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// rc-node: a durable replicated key-value node.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// Replication architecture.
    #[arg(long, env = env::MODE, value_enum, default_value = "single-leader")]
    pub mode: Mode,
    /// Stable id of this node (the pod name on Kubernetes).
    #[arg(long, env = env::NODE_ID)]
    pub node_id: String,
    /// Address to listen on for clients (and for peer and admin traffic without their own).
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:7400")]
    pub listen: String,
    /// Address to listen on for peer traffic. Its port is the cluster's peer port: every member
    /// dials the others' hosts on it, so all members must use the same one.
    #[arg(long, env = env::PEER_LISTEN)]
    pub peer_listen: Option<String>,
    /// Address to listen on for the admin API (the operator).
    #[arg(long, env = env::ADMIN_LISTEN)]
    pub admin_listen: Option<String>,
    /// Address other nodes and clients use to reach this node (host:port; DNS names are fine).
    #[arg(long, env = env::ADVERTISE)]
    pub advertise: Option<String>,
    /// Where the log and snapshots live.
    #[arg(long, env = env::DATA_DIR, default_value = "/var/lib/rc-node")]
    pub data_dir: PathBuf,
    /// File holding the admin API bearer token (also used between peers). Re-read when it
    /// changes; `<file>.next` and `<file>.previous`, when present, are accepted too (a rotation).
    #[arg(long, env = env::ADMIN_TOKEN_FILE)]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (prefer --admin-token-file).
    #[arg(long, env = env::ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Client tokens, one per line: `<token>` (reads and writes) or `<token> read-only`. With
    /// it, the client API answers 401 without a listed bearer token and 403 to a read-only
    /// token's writes. Re-read when it changes.
    #[arg(long, env = env::CLIENT_TOKEN_FILE)]
    pub client_token_file: Option<PathBuf>,
    /// TLS certificate (PEM): with --tls-key-file, every surface serves TLS only. Re-read when
    /// it changes.
    #[arg(long, env = env::TLS_CERT_FILE, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long, env = env::TLS_KEY_FILE, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) that peers' certificates must chain to; required with TLS.
    #[arg(long, env = env::TLS_CA_FILE, requires = "tls_cert_file")]
    pub tls_ca_file: Option<PathBuf>,
    /// The name a peer's certificate must carry when it is dialled by IP (the cluster's Service
    /// name, `<cluster>.<namespace>.svc`).
    #[arg(long, env = env::TLS_SERVER_NAME, default_value = "localhost")]
    pub tls_server_name: String,
    /// When the leader acknowledges a write.
    #[arg(long, env = env::REPLICATION, value_enum, default_value = "quorum")]
    pub replication: Replication,
    /// A leader that has not heard from a majority for this long refuses writes.
    #[arg(long, env = env::FENCE_TIMEOUT_MS, default_value_t = 1500)]
    pub fence_timeout_ms: u64,
    /// On SIGTERM, how long a leader keeps serving while the operator hands leadership to a
    /// follower (0: stop at once). Keep it below the pod's termination grace period.
    #[arg(long, env = env::HANDOVER_TIMEOUT_MS, default_value_t = 10_000)]
    pub handover_timeout_ms: u64,
    /// Interval of leader heartbeats to followers.
    #[arg(long, env = env::HEARTBEAT_MS, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// How long a client write or linearizable read may wait before 504 (outcome unknown).
    #[arg(long, env = env::WRITE_TIMEOUT_MS, default_value_t = 5000)]
    pub write_timeout_ms: u64,
    #[arg(long, env = env::FSYNC, value_enum, default_value = "always")]
    pub fsync: FsyncArg,
    #[arg(long, env = env::FSYNC_INTERVAL_MS, default_value_t = 10)]
    pub fsync_interval_ms: u64,
    /// Take a snapshot and compact the log after this many writes (a batch counts its
    /// operations; give or take a quarter). Unset: after as many writes as the state holds keys,
    /// and at least 100,000, so that snapshots cost each write at most one key rewritten.
    #[arg(long, env = env::SNAPSHOT_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: Option<u64>,
    /// What a follower does with writes and linearizable reads.
    #[arg(long, env = env::FORWARDING, value_enum, default_value = "redirect")]
    pub forwarding: Forwarding,
    /// Whether the leader hands stale reads to a less-loaded, caught-up follower.
    #[arg(
        long,
        env = env::STALE_READ_OFFLOAD,
        value_enum,
        default_value = "redirect"
    )]
    pub stale_read_offload: Offload,
    /// A follower may serve offloaded stale reads while at most this many entries behind.
    #[arg(long, env = env::STALE_READ_MAX_LAG, default_value_t = 100)]
    pub stale_read_max_lag: u64,
    #[arg(long, env = env::MAX_KEY_BYTES, default_value_t = 1024)]
    pub max_key_bytes: usize,
    #[arg(long, env = env::MAX_VALUE_BYTES, default_value_t = 1 << 20)]
    pub max_value_bytes: usize,
    #[arg(long, env = env::MAX_BATCH_OPS, default_value_t = 1000)]
    pub max_batch_ops: usize,
    /// Leaderless: replicas per key (N).
    #[arg(long, env = env::REPLICATION_FACTOR, default_value_t = 3)]
    pub replication_factor: usize,
    /// Leaderless: acknowledgements a write needs (W), 1..=N.
    #[arg(long, env = env::WRITE_QUORUM, default_value_t = 2)]
    pub write_quorum: usize,
    /// Leaderless: answers a read needs (R), 1..=N.
    #[arg(long, env = env::READ_QUORUM, default_value_t = 2)]
    pub read_quorum: usize,
    /// Leaderless: how concurrent writes to one key are resolved.
    #[arg(
        long,
        env = env::CONFLICT_RESOLUTION,
        value_enum,
        default_value = "last-write-wins"
    )]
    pub conflict_resolution: ConflictResolution,
    /// Leaderless: most hinted writes kept for down members (beyond it, anti-entropy repairs).
    #[arg(long, env = env::HINT_LIMIT, default_value_t = 100_000)]
    pub hint_limit: usize,
    /// Leaderless: seconds between anti-entropy rounds (0 = only on POST /admin/repair).
    #[arg(long, env = env::ANTI_ENTROPY_INTERVAL_SECONDS, default_value_t = 60)]
    pub anti_entropy_interval_seconds: u64,
    /// Leaderless: how long delete tombstones are kept before purging.
    #[arg(long, env = env::TOMBSTONE_GRACE_SECONDS, default_value_t = 86_400)]
    pub tombstone_grace_seconds: u64,
    /// Peers as `id=host:port,...`, asked for the ring when this node has none.
    #[arg(long, env = env::PEERS, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// TESTS ONLY: serve linearizable reads from local state without the read-index round.
    /// Breaks linearizability on purpose, to prove the test suite's checker catches it. Only in
    /// builds with the `unsafe-test-flags` feature (this package's tests).
    #[cfg(feature = "unsafe-test-flags")]
    #[arg(long, hide = true)]
    pub unsafe_skip_read_barrier: bool,
    /// TESTS ONLY: answer no peer streams, as a leaderless node of the version before them, to
    /// test how newer members reach such a node during a rolling upgrade.
    #[cfg(feature = "unsafe-test-flags")]
    #[arg(long, hide = true)]
    pub unsafe_no_peer_stream: bool,
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// tracing filter, e.g. `info` or `rc_node=debug`.
    #[arg(long, env = env::LOG_LEVEL, default_value = "info")]
    pub log_level: String,
}

/// Limits and forwarding rules of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_body_bytes: usize,
    pub max_batch_ops: usize,
    pub max_scan_limit: usize,
    pub forwarding: Forwarding,
    pub stale_read_offload: Offload,
    pub stale_read_max_lag: u64,
    pub unsafe_skip_read_barrier: bool,
}

impl Args {
    /// Whether this node answers peer streams (always, outside tests).
    pub fn serves_peer_streams(&self) -> bool {
        #[cfg(feature = "unsafe-test-flags")]
        return !self.unsafe_no_peer_stream;
        #[cfg(not(feature = "unsafe-test-flags"))]
        true
    }

    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            // A batch may carry many values; JSON escaping can double a value's size.
            max_body_bytes: (self.max_value_bytes * 2 + 4096).max(4 << 20),
            max_batch_ops: self.max_batch_ops,
            max_scan_limit: 10_000,
            forwarding: self.forwarding,
            stale_read_offload: self.stale_read_offload,
            stale_read_max_lag: self.stale_read_max_lag,
            #[cfg(feature = "unsafe-test-flags")]
            unsafe_skip_read_barrier: self.unsafe_skip_read_barrier,
            #[cfg(not(feature = "unsafe-test-flags"))]
            unsafe_skip_read_barrier: false,
        }
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(1))
    }
}
