//! Admin API (bearer token): status, epoch fencing, promote, follow, voter-set changes. Probes
//! and metrics are open. Every call is idempotent: repeating it leaves the node as the first
//! call did.

use axum::body::Bytes;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use rc_api::{
    paths, EpochRequest, EpochResponse, ErrorCode, FollowRequest, HandoverRequest, LogPosition,
    PromoteRequest, StatusQuery, VotersRequest,
};

use super::require_token;
use super::AppState;
use crate::http::error::ApiError;
use crate::http::input::{json_body, query};
use crate::single_leader::node::{OpFailure, VotersFailure};
use crate::single_leader::replica::AdminRefusal;

/// The operator's calls, behind the admin token.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::EPOCH, post(epoch))
        .route(paths::PROMOTE, post(promote))
        .route(paths::FOLLOW, post(follow))
        .route(paths::HANDOVER, post(handover))
        .route(paths::VOTERS, post(voters))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// Probes and metrics (on the client surface: the kubelet and Prometheus reach it).
pub fn probes() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
}

fn refusal(e: AdminRefusal) -> ApiError {
    let code = match e {
        AdminRefusal::StaleEpoch { .. } => ErrorCode::StaleEpoch,
        AdminRefusal::LeaderTaken { .. } => ErrorCode::LeaderTaken,
        AdminRefusal::RestartedLeader { .. } => ErrorCode::RestartedLeader,
        AdminRefusal::NotLeader { .. } => ErrorCode::NotLeader,
        AdminRefusal::Busy(_) => ErrorCode::Busy,
        AdminRefusal::Invalid(_) => {
            return ApiError::bad_request(ErrorCode::Invalid, e.to_string())
        }
    };
    ApiError::new(StatusCode::CONFLICT, code, e.to_string())
}

/// Longest a health-feed request waits before answering unchanged.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting feed request looks at the node: the most it adds to detection.
const WAIT_STEP: Duration = Duration::from_millis(20);
/// `leaderLossMs` when the operator does not say.
const DEFAULT_LEADER_LOSS_MS: u64 = 1000;

/// `GET /admin/status`, or with `waitForChange` the health feed (see [`rc_api::StatusQuery`]):
/// answers once the node's health token differs from the one given, or after `timeoutMs`.
async fn status(
    State(s): State<AppState>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<rc_api::NodeStatus>, ApiError> {
    let q = query(q)?;
    if let Some(seen) = q.wait_for_change {
        let loss = q.leader_loss_ms.unwrap_or(DEFAULT_LEADER_LOSS_MS);
        let wait = Duration::from_millis(q.timeout_ms.unwrap_or(10_000)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        while s.node.health(loss).token() == seen && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(WAIT_STEP).await;
        }
    }
    Ok(Json(s.node.status()))
}

async fn epoch(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<EpochResponse>, ApiError> {
    let req: EpochRequest = json_body(b)?;
    representable(req.epoch)?;
    Ok(Json(s.node.fence(req.epoch).await))
}

async fn promote(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PromoteRequest = json_body(b)?;
    representable(req.epoch)?;
    if req
        .followers
        .iter()
        .any(|p| p.id.is_empty() || p.address.is_empty())
    {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            "every follower needs an id and an address",
        ));
    }
    if req
        .voters
        .iter()
        .any(|v| v.id.is_empty() || v.incarnation == 0)
    {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            "every voter needs an id and a non-zero incarnation",
        ));
    }
    s.node
        .promote(req.epoch, req.followers, req.voters)
        .await
        .map_err(refusal)?;
    Ok(Json(s.node.status()).into_response())
}

/// Change the voter set by one member; answers the committed configuration.
async fn voters(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<rc_api::VoterConfig>, ApiError> {
    let req: VotersRequest = json_body(b)?;
    if req.voters.is_empty() || req.voters.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            "voters must name at least one member, each by a non-empty id",
        ));
    }
    match s.node.change_voters(req.epoch, &req.voters).await {
        Ok(config) => Ok(Json(config)),
        Err(VotersFailure::Refused(e)) => Err(refusal(e)),
        Err(VotersFailure::Op(OpFailure::Timeout)) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::OutcomeUnknown,
            "the new voter set was not committed in time; read /admin/status and retry",
        )),
        Err(VotersFailure::Op(_)) => Err(ApiError::unavailable(
            ErrorCode::OutcomeUnknown,
            "leadership changed before the new voter set committed; read /admin/status and retry",
        )),
    }
}

async fn follow(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: FollowRequest = json_body(b)?;
    representable(req.epoch)?;
    if req.leader.id.is_empty() || req.leader.address.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            "the leader needs an id and an address",
        ));
    }
    s.node
        .follow(req.epoch, req.leader)
        .await
        .map_err(refusal)?;
    Ok(Json(s.node.status()).into_response())
}

/// Longest a hand-over may wait for its target.
const MAX_HANDOVER_WAIT: Duration = Duration::from_secs(10);

async fn handover(
    State(s): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<LogPosition>, ApiError> {
    let req: HandoverRequest = json_body(b)?;
    representable(req.epoch)?;
    if req.target.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            "target must name a follower",
        ));
    }
    let wait = Duration::from_millis(req.wait_ms).min(MAX_HANDOVER_WAIT);
    let last = s
        .node
        .hand_over(req.epoch, &req.target, wait)
        .await
        .map_err(refusal)?;
    Ok(Json(last))
}

/// Epochs only go up and can never come down: one the operator's status (a Kubernetes int64)
/// cannot represent would end every later failover. Refused before anything changes.
fn representable(epoch: u64) -> Result<(), ApiError> {
    if i64::try_from(epoch).is_err() {
        return Err(ApiError::bad_request(
            ErrorCode::Invalid,
            format!(
                "epoch {epoch} is beyond {} (int64), which the operator's status cannot hold",
                i64::MAX
            ),
        ));
    }
    Ok(())
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready unless this node leads but cannot reach a majority (then clients should not be sent
/// here, and the operator treats the leader as failing).
async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    if s.node.self_fenced() {
        return Err(ApiError::unavailable(
            ErrorCode::LeaderFenced,
            "leader without a majority",
        ));
    }
    Ok("ok")
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let text = s.metrics.render(&s.node.status());
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
