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

use rc_api::{
    paths, ErrorCode, LeaderlessValue, MemberState, PutRequest, Ring, ScanResult, StreamState,
};

use super::anti_entropy::{self, DigestAnswer, DigestRequest};
use super::dvv::{decode_context, encode_context, Clock, KeyState};
use super::gossip::{self, Gossip, ProbeRequest};
use super::node::{ForwardedPut, LeaderlessError, LeaderlessNode};
use super::streaming::{self, StreamPage, StreamRequest};
use super::tasks;
use crate::config::HttpConfig;
use crate::http::auth::check_bearer;
use crate::http::error::ApiError;
use crate::http::input::{check_value, json_body, key_from_path};
use crate::http::Surfaces;
use crate::metrics::Metrics;

mod admin;
mod client;
mod internal;

use admin::*;
use client::*;
use internal::*;

#[derive(Clone)]
pub struct LeaderlessState {
    pub node: Arc<LeaderlessNode>,
    pub cfg: Arc<HttpConfig>,
    pub metrics: Arc<Metrics>,
}

/// The leaderless node's HTTP surfaces: clients (any node coordinates), the operator's ring
/// and repairs, and the other members' internal API.
pub fn surfaces(state: LeaderlessState) -> Surfaces {
    // Internal streams carry pages of up to 4 MiB of keys; client bodies stay at the configured cap.
    let client_limit = state.cfg.max_body_bytes;
    let peer_limit = client_limit.max(64 << 20);
    let limited = move |router: Router<LeaderlessState>, limit: usize| {
        router
            .layer(DefaultBodyLimit::max(limit))
            .layer(middleware::from_fn(move |req, next| {
                crate::http::input::refuse_oversized(limit, req, next)
            }))
    };
    let client = Router::new()
        .route("/v1/kv", get(scan))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/batch", post(batch))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        // Outermost: a refused client costs no body read.
        .route_layer(middleware::from_fn_with_state(
            state.node.cfg.security.clone(),
            crate::http::auth::require_client,
        ));
    let client = limited(client, peer_limit)
        .route(paths::HEALTHZ, get(|| async { "ok" }))
        .route(paths::READYZ, get(|| async { "ok" }))
        .route(paths::METRICS, get(metrics));
    let admin = Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::RING, put(install_ring))
        .route(paths::DECOMMISSION, post(decommission))
        .route(paths::REPAIR, post(repair))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let peer = Router::new()
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
    let peer = limited(peer, peer_limit);
    Surfaces {
        client: client.with_state(state.clone()),
        admin: limited(admin, client_limit).with_state(state.clone()),
        peer: peer.with_state(state),
    }
}

async fn track(State(s): State<LeaderlessState>, req: Request, next: Next) -> Response {
    crate::http::timed(&s.node.stats, &s.metrics, next.run(req)).await
}

async fn require_token(
    State(s): State<LeaderlessState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_bearer(req.headers(), &s.node.cfg.security)?;
    Ok(next.run(req).await)
}

fn failure(e: LeaderlessError) -> ApiError {
    match e {
        LeaderlessError::NoRing => ApiError::unavailable(ErrorCode::NoRing, e.to_string()),
        LeaderlessError::WriteQuorum { .. } => {
            ApiError::unavailable(ErrorCode::WriteQuorumFailed, e.to_string())
        }
        LeaderlessError::ReadQuorum { .. } => {
            ApiError::unavailable(ErrorCode::ReadQuorumFailed, e.to_string())
        }
        LeaderlessError::NoOwner | LeaderlessError::Forward(..) => {
            ApiError::unavailable(ErrorCode::OwnerUnreachable, e.to_string())
        }
        LeaderlessError::Ring(ref r) => {
            let status = match r {
                super::ring::RingError::Stale { .. } | super::ring::RingError::Conflict(_) => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, ErrorCode::BadRing, e.to_string())
        }
        LeaderlessError::Invalid(_) => ApiError::bad_request(ErrorCode::Invalid, e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuorumParams {
    r: Option<usize>,
    w: Option<usize>,
}
