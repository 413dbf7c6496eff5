//! Bearer-token check for the admin API and peer connections (constant-time comparison).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Constant-time equality; an empty expected token never matches.
pub fn token_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// `Authorization: Bearer <expected>` or 401.
pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(expected, given) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_bearer(req.headers(), &state.node.cfg.token)?;
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
