//! Bearer-token check for the admin API and peer connections (constant-time comparison; the
//! tokens themselves live in [`crate::security`]).

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, StatusCode};
use rc_api::ErrorCode;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::security::{ClientAccess, Security};

/// Constant-time equality; an empty expected token never matches.
pub fn token_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// `Authorization: Bearer <a token the node accepts>` or 401.
pub fn check_bearer(headers: &HeaderMap, security: &Security) -> Result<(), ApiError> {
    let given = bearer(headers).unwrap_or("");
    if security.accepts(given) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Client authentication (when the node has client tokens): 401 without a known token, 403
/// when a read-only token asks to write (anything but GET and HEAD).
pub fn check_client(
    headers: &HeaderMap,
    method: &Method,
    security: &Security,
) -> Result<(), ApiError> {
    let given = bearer(headers);
    match security.client_access(given) {
        Some(ClientAccess::ReadWrite) => Ok(()),
        Some(ClientAccess::ReadOnly) if method == Method::GET || method == Method::HEAD => Ok(()),
        Some(ClientAccess::ReadOnly) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this client token may only read",
        )),
        None if given.is_none() => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this cluster requires client authentication: send Authorization: Bearer <client token>",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "unknown client token",
        )),
    }
}

/// Middleware of the client API: [`check_client`] against the node's `security`.
pub async fn require_client(
    axum::extract::State(security): axum::extract::State<std::sync::Arc<Security>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    check_client(req.headers(), req.method(), &security)?;
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_must_match_exactly_and_be_non_empty() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret!"));
        assert!(!token_matches("", ""));
    }
}
