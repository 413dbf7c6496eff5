//! Bearer-token check for the admin API and peer connections (constant-time comparison; the
//! tokens themselves live in [`crate::security`]).

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::security::Security;

/// Constant-time equality; an empty expected token never matches.
pub fn token_matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// `Authorization: Bearer <a token the node accepts>` or 401.
pub fn check_bearer(headers: &HeaderMap, security: &Security) -> Result<(), ApiError> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if security.accepts(given) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
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
