//! The leaderless admin API (bearer token): status, ring installation, decommission, repair;
//! and the metrics endpoint.

use super::*;

pub(super) async fn status(State(s): State<LeaderlessState>) -> Json<rc_api::NodeStatus> {
    Json(s.node.status())
}

pub(super) async fn install_ring(
    State(s): State<LeaderlessState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), ErrorCode::BadBody, e.body_text()))?;
    let ring: Ring = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadJson, e.to_string()))?;
    let installed = s.node.install_ring(ring).await.map_err(failure)?;
    Ok(Json(json!({ "installed": installed, "status": s.node.status() })).into_response())
}

pub(super) async fn decommission(State(s): State<LeaderlessState>) -> Result<Response, ApiError> {
    if s.node.my_state() != Some(MemberState::Leaving) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotLeaving,
            "decommission needs a ring in which this node is leaving",
        ));
    }
    // Under way or done (its data dropped, so it is restoring until the ring drops it): again.
    let stream = s.node.lock().stream;
    if matches!(stream, StreamState::Streaming | StreamState::Decommissioned) {
        return Ok((StatusCode::ACCEPTED, Json(s.node.status())).into_response());
    }
    if s.node.is_restoring() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Restoring,
            "this node is streaming its ranges back in; decommission once it is done",
        ));
    }
    tasks::spawn(&s.node, streaming::decommission(s.node.clone()));
    Ok((StatusCode::ACCEPTED, Json(s.node.status())).into_response())
}

pub(super) async fn repair(State(s): State<LeaderlessState>) -> Response {
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

pub(super) async fn metrics(State(s): State<LeaderlessState>) -> impl IntoResponse {
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
