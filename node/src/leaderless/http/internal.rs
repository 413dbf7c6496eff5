//! The internal peer API between leaderless nodes (bearer token): replicate and read key
//! states, forwarded writes, gossip and probes, anti-entropy digests, streaming, purge agreement.

use super::*;

pub(super) async fn replicate(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let items: Vec<(String, Arc<KeyState>)> = json_body(b)?;
    let changed = s.node.apply_local(items).await;
    Ok(Json(json!({ "changed": changed })).into_response())
}

pub(super) async fn read_local(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Option<KeyState>>, ApiError> {
    let key: String = json_body(b)?;
    if s.node.is_restoring() {
        // Empty or partial data must not count as an owner's answer.
        return Err(ApiError::unavailable(
            ErrorCode::Restoring,
            "this node is streaming its ranges back in and answers no reads yet",
        ));
    }
    Ok(Json(s.node.local_state(&key)))
}

pub(super) async fn forwarded_put(
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

pub(super) async fn gossip(
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

pub(super) async fn digest(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<DigestAnswer>, ApiError> {
    let req: DigestRequest = json_body(b)?;
    let me = s.node.cfg.id.clone();
    let compare = move |v: &_| anti_entropy::compare(v, &me, &req.from, &req.buckets);
    Ok(Json(s.node.walk(compare).await))
}

pub(super) async fn stream_out(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<StreamPage>, ApiError> {
    let req: StreamRequest = json_body(b)?;
    let mine = s.node.ring().map_or(0, |r| r.version);
    if mine < req.ring_version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RingBehind,
            format!(
                "this node is on ring v{mine}, the requester on v{}",
                req.ring_version
            ),
        ));
    }
    if let Some(wait) = s.node.ring_settles_in() {
        return Err(ApiError::unavailable(
            ErrorCode::RingSettling,
            format!(
                "writes coordinated under the previous ring may still be in flight for {} ms",
                wait.as_millis()
            ),
        ));
    }
    // Keys it owns now as well as later: a restoring member answers reads for the former.
    let for_node = req.for_node;
    let (items, next) = s
        .node
        .page_where(req.after, move |l, k| l.owns_now_or_later(k, &for_node))
        .await;
    Ok(Json(StreamPage { items, next }))
}

/// An indirect probe for a member's failure detector.
pub(super) async fn probe(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<bool>, ApiError> {
    let req: ProbeRequest = json_body(b)?;
    Ok(Json(gossip::reaches(&s.node, &req.address).await))
}

/// A purge round from a key's first owner: the keys this node agrees to (check) or dropped.
pub(super) async fn purge(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<String>>, ApiError> {
    let req: crate::leaderless::purge::PurgeRequest = json_body(b)?;
    Ok(Json(s.node.purge_agreed(&req.keys, req.commit).await))
}

pub(super) async fn scan_local(
    State(s): State<LeaderlessState>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<(String, Arc<KeyState>)>>, ApiError> {
    let (prefix, limit): (String, usize) = json_body(b)?;
    Ok(Json(s.node.scan_local(&prefix, limit.min(10_001))))
}
