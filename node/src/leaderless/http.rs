//! HTTP for leaderless mode: the client API (same paths as single-leader, with per-request
//! `r`/`w`), the admin API (ring, decommission, repair, status) and the internal peer API
//! (replicate, read, forwarded put, gossip, digest, stream, scan), all but the client API and
//! probes behind the bearer token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use rc_api::{paths, LeaderlessValue, MemberState, PutRequest, Ring, ScanResult, StreamState};

use super::anti_entropy::{self, DigestAnswer, DigestRequest};
use super::dvv::{decode_context, encode_context, Clock, KeyState};
use super::gossip::{self, Gossip, ProbeRequest};
use super::node::{ForwardedPut, LeaderlessError, LeaderlessNode};
use super::streaming::{self, StreamPage, StreamRequest};
use crate::config::HttpConfig;
use crate::http::auth::check_bearer;
use crate::http::error::{self, ApiError};
use crate::http::input::{check_value, json_body, key_from_path};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct LeaderlessState {
    pub node: Arc<LeaderlessNode>,
    pub cfg: Arc<HttpConfig>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: LeaderlessState) -> Router {
    // Internal streams carry pages of up to 4 MiB of keys; client bodies stay at the configured cap.
    let body_limit = state.cfg.max_body_bytes.max(64 << 20);
    let client = Router::new()
        .route("/v1/kv", get(scan))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/batch", post(batch))
        .route_layer(middleware::from_fn_with_state(state.clone(), track));
    let protected = Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::RING, put(install_ring))
        .route(paths::DECOMMISSION, post(decommission))
        .route(paths::REPAIR, post(repair))
        .route("/internal/v1/replicate", post(replicate))
        .route("/internal/v1/read", post(read_local))
        .route("/internal/v1/put", post(forwarded_put))
        .route("/internal/v1/gossip", post(gossip))
        .route("/internal/v1/digest", post(digest))
        .route("/internal/v1/stream", post(stream_out))
        .route("/internal/v1/scan", post(scan_local))
        .route("/internal/v1/purge", post(purge))
        .route("/internal/v1/probe", post(probe))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(client)
        .merge(protected)
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(|| async { "ok" }))
        .route(paths::METRICS, get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(move |req, next| {
            crate::http::input::refuse_oversized(body_limit, req, next)
        }))
        .fallback(error::not_found)
        .with_state(state)
}

async fn track(State(s): State<LeaderlessState>, req: Request, next: Next) -> Response {
    crate::http::timed(&s.node.stats, &s.metrics, next.run(req)).await
}

async fn require_token(
    State(s): State<LeaderlessState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_bearer(req.headers(), &s.node.cfg.token)?;
    Ok(next.run(req).await)
}

fn failure(e: LeaderlessError) -> ApiError {
    match e {
        LeaderlessError::NoRing => ApiError::unavailable("no_ring", e.to_string()),
        LeaderlessError::WriteQuorum { .. } => {
            ApiError::unavailable("write_quorum_failed", e.to_string())
        }
        LeaderlessError::ReadQuorum { .. } => {
            ApiError::unavailable("read_quorum_failed", e.to_string())
        }
        LeaderlessError::NoOwner | LeaderlessError::Forward(..) => {
            ApiError::unavailable("owner_unreachable", e.to_string())
        }
        LeaderlessError::Ring(ref r) => {
            let status = match r {
                super::ring::RingError::Stale { .. } | super::ring::RingError::Conflict(_) => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, "bad_ring", e.to_string())
        }
        LeaderlessError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuorumParams {
    r: Option<usize>,
    w: Option<usize>,
}

fn quorum(
    node: &LeaderlessNode,
    q: Result<Query<QuorumParams>, QueryRejection>,
) -> Result<(usize, usize), ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let n = node.cfg.n;
    let check = |name: &str, v: Option<usize>, default: usize| match v {
        None => Ok(default),
        Some(v) if (1..=n).contains(&v) => Ok(v),
        Some(v) => Err(ApiError::bad_request(
            "bad_quorum",
            format!("{name}={v} must be between 1 and N={n}"),
        )),
    };
    Ok((check("r", p.r, node.cfg.r)?, check("w", p.w, node.cfg.w)?))
}

fn view(key: String, state: &KeyState) -> Option<LeaderlessValue> {
    let siblings = state.values();
    if siblings.is_empty() {
        return None;
    }
    let value = (siblings.len() == 1).then(|| siblings[0].clone());
    Some(LeaderlessValue {
        value,
        siblings,
        context: encode_context(&key, &state.clock),
        key,
    })
}

async fn get_key(
    State(s): State<LeaderlessState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<QuorumParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&s.cfg, p)?;
    let (r, _) = quorum(&s.node, q)?;
    let state = s.node.get(&key, r).await.map_err(failure)?;
    match view(key.clone(), &state) {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key {key:?}"),
        )),
    }
}

fn parse_put(
    s: &LeaderlessState,
    key: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Clock), ApiError> {
    let req: PutRequest = json_body(body)?;
    check_value(&s.cfg, &req.value)?;
    let context = decode_context(key, req.context.as_deref().unwrap_or("")).ok_or_else(|| {
        ApiError::bad_request(
            "bad_context",
            "context is not a token this cluster issued for this key",
        )
    })?;
    Ok((req.value, context))
}

async fn put_key(
    State(s): State<LeaderlessState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<QuorumParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&s.cfg, p)?;
    let (_, w) = quorum(&s.node, q)?;
    let (value, context) = parse_put(&s, &key, body)?;
    let out = s
        .node
        .put(&key, Some(value), context, w)
        .await
        .map_err(failure)?;
    Ok(Json(json!({ "acks": out.acks, "w": out.w })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    w: Option<usize>,
    context: Option<String>,
}

async fn delete_key(
    State(s): State<LeaderlessState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&s.cfg, p)?;
    let Query(params) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let w = quorum(
        &s.node,
        Ok(Query(QuorumParams {
            r: None,
            w: params.w,
        })),
    )?
    .1;
    let context =
        decode_context(&key, params.context.as_deref().unwrap_or("")).ok_or_else(|| {
            ApiError::bad_request(
                "bad_context",
                "context is not a token this cluster issued for this key",
            )
        })?;
    let out = s.node.put(&key, None, context, w).await.map_err(failure)?;
    Ok(Json(json!({ "acks": out.acks, "w": out.w })).into_response())
}

async fn batch() -> ApiError {
    ApiError::bad_request(
        "unsupported",
        "atomic batches need a single leader; leaderless clusters take one key per write",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanParams {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// Best-effort scan: every live member's local keys with the prefix, merged per key.
async fn scan(
    State(s): State<LeaderlessState>,
    q: Result<Query<ScanParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > s.cfg.max_scan_limit {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {}", s.cfg.max_scan_limit),
        ));
    }
    let mut merged: std::collections::BTreeMap<String, KeyState> = Default::default();
    let mut add = |items: Vec<(String, KeyState)>| {
        for (k, st) in items {
            let cur = merged.remove(&k).unwrap_or_default();
            merged.insert(k, cur.merge(&st, s.node.cfg.conflict));
        }
    };
    add(s.node.scan_local(&p.prefix, limit + 1));
    for m in s.node.ring().map(|r| r.members).unwrap_or_default() {
        if m.id == s.node.cfg.id || !s.node.is_alive(&m.id) {
            continue;
        }
        let r = s
            .node
            .http
            .post(format!("http://{}/internal/v1/scan", m.address))
            .bearer_auth(&s.node.cfg.token)
            .json(&(p.prefix.clone(), limit + 1))
            .send()
            .await;
        if let Ok(resp) = r {
            if let Ok(items) = resp.json::<Vec<(String, KeyState)>>().await {
                add(items);
            }
        }
    }
    let mut items: Vec<rc_api::KeyValue> = merged
        .into_iter()
        .filter_map(|(k, st)| view(k, &st))
        .map(|v| rc_api::KeyValue {
            key: v.key,
            value: v.siblings.join("\n"),
            mod_index: 0,
        })
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Json(ScanResult { items, more }).into_response())
}

// ---- admin ---------------------------------------------------------------------------------

async fn status(State(s): State<LeaderlessState>) -> Json<rc_api::NodeStatus> {
    Json(s.node.status())
}

async fn install_ring(
    State(s): State<LeaderlessState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
    let ring: Ring = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?;
    let installed = s.node.install_ring(ring).await.map_err(failure)?;
    Ok(Json(json!({ "installed": installed, "status": s.node.status() })).into_response())
}

async fn decommission(State(s): State<LeaderlessState>) -> Result<Response, ApiError> {
    if s.node.my_state() != Some(MemberState::Leaving) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_leaving",
            "decommission needs a ring in which this node is leaving",
        ));
    }
    if s.node.is_restoring() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "restoring",
            "this node is streaming its ranges back in; decommission once it is done",
        ));
    }
    let stream = s.node.lock().stream;
    if !matches!(stream, StreamState::Streaming | StreamState::Decommissioned) {
        tokio::spawn(streaming::decommission(s.node.clone()));
    }
    Ok((StatusCode::ACCEPTED, Json(s.node.status())).into_response())
}

async fn repair(State(s): State<LeaderlessState>) -> Response {
    // Rounds until no bucket differs with any live member (each round moves a page per pair),
    // bounded so a member that keeps changing cannot hold the call for ever.
    let (mut repaired, mut rounds) = (0, 0);
    loop {
        let (n, differed) = anti_entropy::run_anti_entropy(&s.node).await;
        repaired += n;
        rounds += 1;
        if !differed || rounds >= 64 {
            break;
        }
    }
    Json(json!({ "keys_repaired": repaired, "rounds": rounds })).into_response()
}

async fn metrics(State(s): State<LeaderlessState>) -> impl IntoResponse {
    let text = s.metrics.render(&s.node.status());
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

// ---- internal (node to node) ---------------------------------------------------------------

async fn replicate(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let items: Vec<(String, KeyState)> = json_body(b)?;
    let changed = s.node.apply_local(items).await;
    Ok(Json(json!({ "changed": changed })).into_response())
}

async fn read_local(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Option<KeyState>>, ApiError> {
    let key: String = json_body(b)?;
    if s.node.is_restoring() {
        // Empty or partial data must not count as an owner's answer.
        return Err(ApiError::unavailable(
            "restoring",
            "this node is streaming its ranges back in and answers no reads yet",
        ));
    }
    Ok(Json(s.node.local_state(&key)))
}

async fn forwarded_put(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ForwardedPut = json_body(b)?;
    let out = s
        .node
        .put(&req.key, req.value, req.context, req.w)
        .await
        .map_err(failure)?;
    Ok(Json(out).into_response())
}

async fn gossip(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Gossip>, ApiError> {
    let g: Gossip = json_body(b)?;
    s.node.set_alive(&g.from, true);
    let mine = s.node.ring();
    if let Some(theirs) = g.ring.clone() {
        if mine.as_ref().is_none_or(|m| theirs.version > m.version) {
            if let Err(e) = s.node.install_ring(theirs).await {
                tracing::warn!(error = %e, from = %g.from, "refused a ring offered by a peer");
            }
        }
    }
    let newer = mine.filter(|m| g.ring.as_ref().is_none_or(|t| m.version > t.version));
    Ok(Json(Gossip {
        from: s.node.cfg.id.clone(),
        ring: newer,
    }))
}

async fn digest(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<DigestAnswer>, ApiError> {
    let req: DigestRequest = json_body(b)?;
    let mine = anti_entropy::digests(&s.node, &req.from);
    let mismatched: Vec<usize> = (0..anti_entropy::BUCKETS)
        .filter(|i| req.buckets.get(*i) != mine.get(*i))
        .collect();
    let me = s.node.cfg.id.clone();
    let states = if mismatched.is_empty() {
        Vec::new()
    } else {
        s.node
            .page_where(None, |l, k| {
                anti_entropy::shared(l, k, &me, &req.from)
                    && mismatched.contains(&anti_entropy::bucket(k))
            })
            .0
    };
    Ok(Json(DigestAnswer { mismatched, states }))
}

async fn stream_out(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<StreamPage>, ApiError> {
    let req: StreamRequest = json_body(b)?;
    let mine = s.node.ring().map_or(0, |r| r.version);
    if mine < req.ring_version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ring_behind",
            format!(
                "this node is on ring v{mine}, the requester on v{}",
                req.ring_version
            ),
        ));
    }
    if let Some(wait) = s.node.ring_settles_in() {
        return Err(ApiError::unavailable(
            "ring_settling",
            format!(
                "writes coordinated under the previous ring may still be in flight for {} ms",
                wait.as_millis()
            ),
        ));
    }
    let (items, next) = s.node.page_where(req.after.as_deref(), |l, k| {
        l.future_owners(k).iter().any(|m| m.id == req.for_node)
    });
    Ok(Json(StreamPage { items, next }))
}

/// An indirect probe for a member's failure detector.
async fn probe(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<bool>, ApiError> {
    let req: ProbeRequest = json_body(b)?;
    Ok(Json(gossip::reaches(&s.node, &req.address).await))
}

/// A purge round from a key's first owner: the keys this node agrees to (check) or dropped.
async fn purge(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<String>>, ApiError> {
    let req: super::purge::PurgeRequest = json_body(b)?;
    Ok(Json(s.node.purge_agreed(&req.keys, req.commit)))
}

async fn scan_local(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<(String, KeyState)>>, ApiError> {
    let (prefix, limit): (String, usize) = json_body(b)?;
    Ok(Json(s.node.scan_local(&prefix, limit.min(10_001))))
}
