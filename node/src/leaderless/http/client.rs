//! The leaderless client API: reads and writes with per-request `r`/`w`, coordinated by
//! whichever node receives them, and prefix scans.

use super::*;

pub(super) fn quorum(
    node: &LeaderlessNode,
    q: Result<Query<QuorumParams>, QueryRejection>,
) -> Result<(usize, usize), ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request(ErrorCode::BadQuery, e.body_text()))?;
    let n = node.cfg.n;
    let check = |name: &str, v: Option<usize>, default: usize| match v {
        None => Ok(default),
        Some(v) if (1..=n).contains(&v) => Ok(v),
        Some(v) => Err(ApiError::bad_request(
            ErrorCode::BadQuorum,
            format!("{name}={v} must be between 1 and N={n}"),
        )),
    };
    Ok((check("r", p.r, node.cfg.r)?, check("w", p.w, node.cfg.w)?))
}

pub(super) fn view(key: String, state: &KeyState) -> Option<LeaderlessValue> {
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

pub(super) async fn get_key(
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
            ErrorCode::KeyNotFound,
            format!("no key {key:?}"),
        )),
    }
}

pub(super) fn parse_put(
    s: &LeaderlessState,
    key: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Clock), ApiError> {
    let req: PutRequest = json_body(body)?;
    check_value(&s.cfg, &req.value)?;
    let context = decode_context(key, req.context.as_deref().unwrap_or("")).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::BadContext,
            "context is not a token this cluster issued for this key",
        )
    })?;
    Ok((req.value, context))
}

pub(super) async fn put_key(
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
pub(super) struct DeleteParams {
    w: Option<usize>,
    context: Option<String>,
}

pub(super) async fn delete_key(
    State(s): State<LeaderlessState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_from_path(&s.cfg, p)?;
    let Query(params) = q.map_err(|e| ApiError::bad_request(ErrorCode::BadQuery, e.body_text()))?;
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
                ErrorCode::BadContext,
                "context is not a token this cluster issued for this key",
            )
        })?;
    let out = s.node.put(&key, None, context, w).await.map_err(failure)?;
    Ok(Json(json!({ "acks": out.acks, "w": out.w })).into_response())
}

pub(super) async fn batch() -> ApiError {
    ApiError::bad_request(
        ErrorCode::Unsupported,
        "atomic batches need a single leader; leaderless clusters take one key per write",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanParams {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// Best-effort scan: every live member's local keys with the prefix, merged per key.
pub(super) async fn scan(
    State(s): State<LeaderlessState>,
    q: Result<Query<ScanParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = q.map_err(|e| ApiError::bad_request(ErrorCode::BadQuery, e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > s.cfg.max_scan_limit {
        return Err(ApiError::bad_request(
            ErrorCode::BadLimit,
            format!("limit must be between 1 and {}", s.cfg.max_scan_limit),
        ));
    }
    let mut merged: std::collections::BTreeMap<String, KeyState> = Default::default();
    let mut add = |items: Vec<(String, Arc<KeyState>)>| {
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
            .internal_post(&m.address, "/internal/v1/scan", &(&p.prefix, limit + 1))
            .send()
            .await;
        if let Ok(resp) = r {
            if let Ok(items) = resp.json::<Vec<(String, Arc<KeyState>)>>().await {
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
