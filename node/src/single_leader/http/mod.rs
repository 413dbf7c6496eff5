//! The single-leader node's HTTP APIs: `client` (key-value reads and writes, forwarding to the
//! leader) and `admin` (the operator's fencing, promotion, voter changes and health feed).

pub mod admin;
pub mod client;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;

use crate::config::HttpConfig;
use crate::http::auth::check_bearer;
use crate::http::error::{self, ApiError};
use crate::single_leader::node::Node;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub cfg: Arc<HttpConfig>,
    pub http: reqwest::Client,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn router(state: AppState) -> Router {
    client::routes(state.clone())
        .merge(admin::routes(state.clone()))
        .fallback(error::not_found)
        .with_state(state)
}

/// The admin token, from the `Authorization: Bearer` header, or 401.
pub async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_bearer(req.headers(), &state.node.cfg.security)?;
    Ok(next.run(req).await)
}
