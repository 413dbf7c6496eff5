//! Client API: `GET|PUT|DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=&limit=`, `POST /v1/batch`.
//!
//! Writes and linearizable reads are served by the leader; a follower redirects (307) or proxies
//! them. Stale reads are served locally; the leader may hand them to a less-loaded follower.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use rc_api::{
    BatchOp, BatchRequest, ErrorCode, KeyValue, Peer, PutRequest, ScanResult, WriteResult,
};

use super::AppState;
use crate::config::Offload;
use crate::http::error::ApiError;
use crate::http::input::{check_key, check_value, json_body, key_from_path, query};
use crate::single_leader::node::OpFailure;
use crate::single_leader::replica::WriteRefusal;
use crate::storage::{Command, Op};
use rc_api::Forwarding;

pub fn routes(state: AppState) -> Router<AppState> {
    let security = state.node.cfg.security.clone();
    Router::new()
        .route("/v1/kv", get(scan))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/batch", post(batch))
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn({
            let limit = state.cfg.max_body_bytes;
            move |req, next| crate::http::input::refuse_oversized(limit, req, next)
        }))
        .route_layer(middleware::from_fn_with_state(state, track))
        // Outermost: a refused client costs no body read.
        .route_layer(middleware::from_fn_with_state(
            security,
            crate::http::auth::require_client,
        ))
}

/// Count and time every client request (for /admin/status and /metrics).
async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    crate::http::timed(&s.node.stats, &s.metrics, next.run(req)).await
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Consistency {
    #[default]
    Linearizable,
    Stale,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanParams {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn get_key(
    State(state): State<AppState>,
    uri: OriginalUri,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&state.cfg, p)?;
    let params = query(q)?;
    if let Some(resp) = prepare_read(&state, params.consistency, &uri, None).await? {
        return Ok(resp);
    }
    match state.node.read(|kv| kv.get(&key)) {
        Some(kv) => Ok(Json::<KeyValue>(kv).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::KeyNotFound,
            format!("no key {key:?}"),
        )),
    }
}

async fn scan(
    State(state): State<AppState>,
    uri: OriginalUri,
    q: Result<Query<ScanParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(q)?;
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > state.cfg.max_scan_limit {
        return Err(ApiError::bad_request(
            ErrorCode::BadLimit,
            format!("limit must be between 1 and {}", state.cfg.max_scan_limit),
        ));
    }
    if let Some(resp) = prepare_read(&state, params.consistency, &uri, None).await? {
        return Ok(resp);
    }
    let (items, more) = state.node.read(|kv| kv.scan(&params.prefix, limit));
    Ok(Json(ScanResult { items, more }).into_response())
}

/// Make a local read safe for `consistency`, or answer with a forward. `None` = read locally.
async fn prepare_read(
    state: &AppState,
    consistency: Consistency,
    uri: &OriginalUri,
    body: Option<Bytes>,
) -> Result<Option<Response>, ApiError> {
    match consistency {
        Consistency::Stale => {
            if state.cfg.stale_read_offload == Offload::Off {
                return Ok(None);
            }
            let Some(target) = state.node.offload_target(state.cfg.stale_read_max_lag) else {
                return Ok(None);
            };
            let how = if state.cfg.stale_read_offload == Offload::Proxy {
                Forwarding::Proxy
            } else {
                Forwarding::Redirect
            };
            forward(state, how, &target, Method::GET, uri, body)
                .await
                .map(Some)
        }
        Consistency::Linearizable if state.cfg.unsafe_skip_read_barrier => Ok(None),
        Consistency::Linearizable => match state.node.read_barrier().await {
            Ok(()) => Ok(None),
            Err(OpFailure::Refused(WriteRefusal::NotLeader { leader: Some(l) })) => {
                forward(state, state.cfg.forwarding, &l, Method::GET, uri, body)
                    .await
                    .map(Some)
            }
            Err(e) => Err(failure(e)),
        },
    }
}

async fn put_key(
    State(state): State<AppState>,
    uri: OriginalUri,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<NoParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&state.cfg, p)?;
    query(q)?;
    let raw = body.map_err(|e| ApiError::new(e.status(), ErrorCode::BadBody, e.body_text()))?;
    let req: PutRequest = json_body(Ok(raw.clone()))?;
    if req.context.is_some() {
        return Err(ApiError::bad_request(
            ErrorCode::BadJson,
            "context is only used by leaderless clusters",
        ));
    }
    check_value(&state.cfg, &req.value)?;
    write(
        &state,
        Command::Put {
            key,
            value: req.value,
        },
        Method::PUT,
        &uri,
        Some(raw),
    )
    .await
}

async fn delete_key(
    State(state): State<AppState>,
    uri: OriginalUri,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<NoParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&state.cfg, p)?;
    query(q)?;
    write(&state, Command::Delete { key }, Method::DELETE, &uri, None).await
}

async fn batch(
    State(state): State<AppState>,
    uri: OriginalUri,
    q: Result<Query<NoParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    query(q)?;
    let raw = body.map_err(|e| ApiError::new(e.status(), ErrorCode::BadBody, e.body_text()))?;
    let req: BatchRequest = json_body(Ok(raw.clone()))?;
    if req.ops.is_empty() || req.ops.len() > state.cfg.max_batch_ops {
        return Err(ApiError::bad_request(
            ErrorCode::BadBatch,
            format!("a batch holds 1 to {} operations", state.cfg.max_batch_ops),
        ));
    }
    for op in &req.ops {
        match op {
            BatchOp::Put { key, value } => {
                check_key(&state.cfg, key)?;
                check_value(&state.cfg, value)?;
            }
            BatchOp::Delete { key } => check_key(&state.cfg, key)?,
        }
    }
    write(
        &state,
        Command::Batch(req.ops.into_iter().map(Op::from).collect()),
        Method::POST,
        &uri,
        Some(raw),
    )
    .await
}

async fn write(
    state: &AppState,
    command: Command,
    method: Method,
    uri: &OriginalUri,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    match state.node.write(command).await {
        Ok((pos, applied)) => Ok(Json(WriteResult {
            index: pos.index,
            epoch: pos.epoch,
            deleted: applied.deleted,
        })
        .into_response()),
        Err(OpFailure::Refused(WriteRefusal::NotLeader { leader: Some(l) })) => {
            forward(state, state.cfg.forwarding, &l, method, uri, body).await
        }
        Err(e) => Err(failure(e)),
    }
}

fn failure(e: OpFailure) -> ApiError {
    match e {
        OpFailure::Refused(WriteRefusal::NotLeader { .. }) => {
            ApiError::unavailable(ErrorCode::NoLeader, "this node is not the leader and knows no leader yet")
        }
        OpFailure::Refused(WriteRefusal::HandingOver) => ApiError::unavailable(
            ErrorCode::LeaderHandingOver,
            "this leader is handing over to another node (a switchover); the write was not taken, retry in a moment",
        ),
        OpFailure::Refused(WriteRefusal::SelfFenced) => ApiError::unavailable(
            ErrorCode::LeaderFenced,
            "this leader cannot reach a majority (or has not committed its first entry yet); retry shortly",
        ),
        OpFailure::OutcomeUnknown => ApiError::unavailable(
            ErrorCode::OutcomeUnknown,
            "leadership changed before the operation completed; a write may or may not have been applied",
        ),
        OpFailure::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::OutcomeUnknown,
            "the operation did not complete in time; a write may or may not have been applied",
        ),
    }
}

/// Send the client to `target` (307) or relay the request there.
async fn forward(
    state: &AppState,
    how: Forwarding,
    target: &Peer,
    method: Method,
    uri: &OriginalUri,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let path = uri.0.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = state.node.cfg.security.client_url(&target.address, path);
    match how {
        Forwarding::Redirect => Err(ApiError {
            status: StatusCode::TEMPORARY_REDIRECT,
            code: ErrorCode::NotLeader,
            message: format!("send this request to {}", target.id),
            leader: Some(target.address.clone()),
            location: Some(url),
        }),
        Forwarding::Proxy => {
            let mut req = state
                .http
                .request(method, &url)
                .header("x-rc-forwarded", "1");
            // This node checked the client already; the leader takes a member's word for it.
            if state.node.cfg.security.client_auth() {
                req = req.bearer_auth(state.node.cfg.security.token());
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req.send().await.map_err(|e| {
                ApiError::unavailable(
                    ErrorCode::ForwardFailed,
                    format!("forwarding to {} failed: {e}", target.id),
                )
            })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| {
                ApiError::unavailable(
                    ErrorCode::ForwardFailed,
                    format!("reading the answer of {} failed: {e}", target.id),
                )
            })?;
            Ok((status, [("content-type", "application/json")], bytes).into_response())
        }
    }
}
