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
use crate::http::error::ApiError;
use crate::http::Surfaces;
use crate::single_leader::node::Node;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub cfg: Arc<HttpConfig>,
    pub http: reqwest::Client,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The single-leader node's HTTP surfaces. Its peers use no HTTP: the replication stream has
/// its own protocol (`crate::single_leader::peer`), served on the peer listener.
pub fn surfaces(state: AppState) -> Surfaces {
    Surfaces {
        client: client::routes(state.clone())
            .merge(admin::probes())
            .with_state(state.clone()),
        admin: admin::routes(state.clone()).with_state(state),
        peer: Router::new(),
    }
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
