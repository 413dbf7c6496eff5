//! Parsing and validating client input, shared by both modes' handlers: every rejection is a
//! JSON error with the right status code.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use rc_api::ErrorCode;

use super::error::ApiError;
use crate::config::HttpConfig;

pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadQuery, e.body_text()))
}

pub fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), ErrorCode::BadBody, e.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(ErrorCode::BadJson, e.to_string()))
}

/// The `{*key}` path segment, checked against the key limits.
pub fn key_from_path(
    cfg: &HttpConfig,
    p: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let Path(key) = p.map_err(|e| ApiError::bad_request(ErrorCode::BadKey, e.body_text()))?;
    check_key(cfg, &key)?;
    Ok(key)
}

pub fn check_key(cfg: &HttpConfig, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::EmptyKey,
            "keys must not be empty",
        ));
    }
    too_large("key", key.len(), cfg.max_key_bytes)
}

pub fn check_value(cfg: &HttpConfig, value: &str) -> Result<(), ApiError> {
    too_large("value", value.len(), cfg.max_value_bytes)
}

fn too_large(what: &'static str, len: usize, limit: usize) -> Result<(), ApiError> {
    if len <= limit {
        return Ok(());
    }
    let code = if what == "key" {
        ErrorCode::KeyTooLarge
    } else {
        ErrorCode::ValueTooLarge
    };
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code,
        format!("{what} is {len} bytes; the limit is {limit}"),
    ))
}

/// Refuses a request whose declared `Content-Length` exceeds `limit` before reading any of its
/// body: the client learns at once, and the node never buffers bytes it will throw away.
/// (Bodies without a length are still cut off by `DefaultBodyLimit` as they stream in.)
pub async fn refuse_oversized(
    limit: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BadBody,
            format!("request body of {len} bytes exceeds the limit of {limit} bytes"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}
