//! Paths of the node's HTTP APIs. The admin API is bearer-token protected, except the probes
//! and metrics.

pub const STATUS: &str = "/admin/status";
pub const EPOCH: &str = "/admin/epoch";
pub const PROMOTE: &str = "/admin/promote";
pub const FOLLOW: &str = "/admin/follow";
/// Single-leader, on the leader: stop taking writes until a follower holds the whole log
/// (a switchover's first step).
pub const HANDOVER: &str = "/admin/handover";
/// Single-leader: change the voter set by one member (the leader only).
pub const VOTERS: &str = "/admin/voters";
pub const RING: &str = "/admin/ring";
pub const DECOMMISSION: &str = "/admin/decommission";
/// Leaderless: start an anti-entropy round now.
pub const REPAIR: &str = "/admin/repair";
pub const HEALTHZ: &str = "/healthz";
pub const READYZ: &str = "/readyz";
pub const METRICS: &str = "/metrics";
/// Client key-value API: `GET|PUT|DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=&limit=`.
pub const KV: &str = "/v1/kv";
/// Client batch write: `POST /v1/batch`.
pub const BATCH: &str = "/v1/batch";
