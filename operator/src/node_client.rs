//! (client) The operator's side of the nodes' admin API (`rc_api` wire types). Behind a trait so
//! that controller tests can substitute it. Single-leader calls (`epoch`, `promote`, `follow`)
//! serve `crate::failover`; leaderless ones (`ring`, `decommission`, `repair`) serve
//! `crate::membership`.

use std::time::Duration;

use futures::future::BoxFuture;
use rc_api::{paths, EpochRequest, EpochResponse, FollowRequest, NodeStatus, PromoteRequest, Ring};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("request to {address} failed: {source}")]
    Transport {
        address: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{address} answered {status}: {body}")]
    Status {
        address: String,
        status: u16,
        body: String,
    },
}

/// The admin calls the operator makes. `address` is `host:port`; `token` the bearer token.
pub trait NodeAdmin: Send + Sync {
    /// `GET /admin/status`.
    fn status<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>>;
    /// `POST /admin/epoch`: fence the node at `epoch`.
    fn epoch<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: EpochRequest,
    ) -> BoxFuture<'a, Result<EpochResponse, NodeError>>;
    /// `POST /admin/promote`.
    fn promote<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: PromoteRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/follow`.
    fn follow<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: FollowRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `PUT /admin/ring`: install `ring` unless the node has it or a newer one already.
    fn ring<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        ring: &'a Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/decommission`: a leaving node starts handing its data to the next owners.
    fn decommission<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/repair`: one anti-entropy round with every other owner, now.
    fn repair<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
}

/// The real client: plain HTTP inside the cluster network, short timeouts so that one dead node
/// does not stall a reconcile.
#[derive(Clone, Debug)]
pub struct HttpNodeAdmin {
    http: reqwest::Client,
}

impl HttpNodeAdmin {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self { http })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        address: &str,
    ) -> Result<Option<T>, NodeError> {
        let transport = |source| NodeError::Transport {
            address: address.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(NodeError::Status {
                address: address.to_owned(),
                status: status.as_u16(),
                body: body.chars().take(512).collect(),
            });
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response.bytes().await.map_err(transport)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Some(value)),
            Err(e) => Err(NodeError::Status {
                address: address.to_owned(),
                status: status.as_u16(),
                body: format!("unreadable answer: {e}"),
            }),
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        token: &str,
        body: &B,
    ) -> Result<Option<T>, NodeError> {
        let request = self
            .http
            .post(format!("http://{address}{path}"))
            .bearer_auth(token)
            .json(body);
        self.send(request, address).await
    }
}

fn required<T>(value: Option<T>, address: &str) -> Result<T, NodeError> {
    value.ok_or_else(|| NodeError::Status {
        address: address.to_owned(),
        status: 200,
        body: "empty answer".to_owned(),
    })
}

impl NodeAdmin for HttpNodeAdmin {
    fn status<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            let request = self
                .http
                .get(format!("http://{address}{}", paths::STATUS))
                .bearer_auth(token);
            required(self.send(request, address).await?, address)
        })
    }

    fn epoch<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: EpochRequest,
    ) -> BoxFuture<'a, Result<EpochResponse, NodeError>> {
        Box::pin(async move {
            required(
                self.post(address, paths::EPOCH, token, &request).await?,
                address,
            )
        })
    }

    fn promote<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: PromoteRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.post::<_, serde_json::Value>(address, paths::PROMOTE, token, &request)
                .await
                .map(|_| ())
        })
    }

    fn follow<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: FollowRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.post::<_, serde_json::Value>(address, paths::FOLLOW, token, &request)
                .await
                .map(|_| ())
        })
    }

    fn ring<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        ring: &'a Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            let request = self
                .http
                .put(format!("http://{address}{}", paths::RING))
                .bearer_auth(token)
                .json(ring);
            self.send::<serde_json::Value>(request, address)
                .await
                .map(|_| ())
        })
    }

    fn decommission<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.post::<_, serde_json::Value>(address, paths::DECOMMISSION, token, &())
                .await
                .map(|_| ())
        })
    }

    fn repair<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.post::<_, serde_json::Value>(address, paths::REPAIR, token, &())
                .await
                .map(|_| ())
        })
    }
}
