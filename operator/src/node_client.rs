//! (client) The operator's side of the nodes' admin API (`rc_api` wire types). Behind a trait so
//! that controller tests can substitute it. Single-leader calls (`epoch`, `promote`, `follow`)
//! serve `crate::failover`; leaderless ones (`ring`, `decommission`, `repair`) serve
//! `crate::membership`.

use std::time::Duration;

use futures::future::BoxFuture;
use rc_api::{
    paths, EpochRequest, EpochResponse, FollowRequest, HandoverRequest, LogPosition, NodeStatus,
    PromoteRequest, Ring, StatusQuery, VoterConfig, VotersRequest,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("request to {address} failed: {source}{}", if refused(source) { REFUSED } else { "" })]
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

impl NodeError {
    /// What a client without an optional call answers (a 501, as a node without it would).
    fn unsupported(address: &str, what: &str) -> NodeError {
        NodeError::Status {
            address: address.to_owned(),
            status: 501,
            body: format!("this client has no {what}"),
        }
    }
}

/// Appended to a transport error whose cause is a refused connection: nothing listens at the
/// node's address, so its process is not running (a partition or a hung process times out
/// instead). The failover decision reads it as certain evidence (`crate::failover`).
pub const REFUSED: &str = " (connection refused)";

fn refused(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// The admin calls the operator makes. `address` is `host:port`; `token` the bearer token.
pub trait NodeAdmin: Send + Sync {
    /// `GET /admin/status`.
    fn status<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>>;
    /// `GET /admin/status?waitForChange=...`: the health feed (see `crate::feed`). Waits up
    /// to `query.timeout_ms` plus a margin; a node that does not answer by then is unreachable.
    fn watch_status<'a>(
        &'a self,
        address: &'a str,
        _token: &'a str,
        _query: &'a StatusQuery,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move { Err(NodeError::unsupported(address, "health feed")) })
    }
    /// `POST /admin/epoch`: fence the node at `epoch`.
    fn epoch<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: EpochRequest,
    ) -> BoxFuture<'a, Result<EpochResponse, NodeError>>;
    /// `POST /admin/handover` to the leader: stop writes until the target holds the whole log;
    /// waits up to `request.wait_ms` plus a margin. A client without it fails the call (the
    /// switchover then fences without it, as a hand-over on pod deletion does).
    fn handover<'a>(
        &'a self,
        address: &'a str,
        _token: &'a str,
        _request: HandoverRequest,
    ) -> BoxFuture<'a, Result<LogPosition, NodeError>> {
        Box::pin(async move { Err(NodeError::unsupported(address, "hand-over")) })
    }
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
    /// `POST /admin/voters` to the leader: change the voter set by one member; answers the
    /// committed configuration.
    fn voters<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: VotersRequest,
    ) -> BoxFuture<'a, Result<VoterConfig, NodeError>>;
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
    status_timeout: Duration,
}

/// How long past its wait a health-feed request may take before the node counts as hung.
const FEED_MARGIN: Duration = Duration::from_secs(2);

impl HttpNodeAdmin {
    /// `timeout` bounds every call; `status_timeout` (usually shorter) bounds status reads,
    /// which a failover decision waits for: a hung node must not hold it up for long, and a
    /// healthy one answers in milliseconds.
    pub fn new(timeout: Duration, status_timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            status_timeout: status_timeout.min(timeout),
        })
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

    /// An authenticated admin request to `path` on the node at `address`.
    fn request(
        &self,
        method: Method,
        address: &str,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{address}{path}"))
            .bearer_auth(token)
    }

    /// One JSON call: its parsed answer, or `None` for an empty one.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        address: &str,
        path: &str,
        token: &str,
        body: &B,
    ) -> Result<Option<T>, NodeError> {
        let request = self.request(method, address, path, token).json(body);
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

/// A `NodeAdmin` method that POSTs its request as JSON to `$path` and answers with the parsed
/// body, or just success for `()`.
macro_rules! post_json {
    ($name:ident, $request:ty => (), $path:expr) => {
        fn $name<'a>(
            &'a self,
            address: &'a str,
            token: &'a str,
            request: $request,
        ) -> BoxFuture<'a, Result<(), NodeError>> {
            // A JSON body, if any, is read and dropped: success is the answer.
            Box::pin(async move {
                self.call::<_, serde_json::Value>(Method::POST, address, $path, token, &request)
                    .await
                    .map(drop)
            })
        }
    };
    ($name:ident, $request:ty => $answer:ty, $path:expr) => {
        fn $name<'a>(
            &'a self,
            address: &'a str,
            token: &'a str,
            request: $request,
        ) -> BoxFuture<'a, Result<$answer, NodeError>> {
            Box::pin(async move {
                let answer = self
                    .call(Method::POST, address, $path, token, &request)
                    .await?;
                required(answer, address)
            })
        }
    };
}

impl NodeAdmin for HttpNodeAdmin {
    fn handover<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        request: HandoverRequest,
    ) -> BoxFuture<'a, Result<LogPosition, NodeError>> {
        Box::pin(async move {
            let wait = Duration::from_millis(request.wait_ms);
            let request = self
                .request(Method::POST, address, paths::HANDOVER, token)
                .json(&request)
                .timeout(wait + FEED_MARGIN);
            required(self.send(request, address).await?, address)
        })
    }

    fn status<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            let request = self
                .request(Method::GET, address, paths::STATUS, token)
                .timeout(self.status_timeout);
            required(self.send(request, address).await?, address)
        })
    }

    fn watch_status<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        query: &'a StatusQuery,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            let wait = Duration::from_millis(query.timeout_ms.unwrap_or(0));
            let request = self
                .request(Method::GET, address, paths::STATUS, token)
                .query(query)
                .timeout(wait + FEED_MARGIN);
            required(self.send(request, address).await?, address)
        })
    }

    post_json!(epoch, EpochRequest => EpochResponse, paths::EPOCH);
    post_json!(promote, PromoteRequest => (), paths::PROMOTE);
    post_json!(follow, FollowRequest => (), paths::FOLLOW);
    post_json!(voters, VotersRequest => VoterConfig, paths::VOTERS);

    fn ring<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
        ring: &'a Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.call::<_, serde_json::Value>(Method::PUT, address, paths::RING, token, ring)
                .await
                .map(drop)
        })
    }

    fn decommission<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.call::<_, serde_json::Value>(
                Method::POST,
                address,
                paths::DECOMMISSION,
                token,
                &(),
            )
            .await
            .map(drop)
        })
    }

    fn repair<'a>(
        &'a self,
        address: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            self.call::<_, serde_json::Value>(Method::POST, address, paths::REPAIR, token, &())
                .await
                .map(drop)
        })
    }
}
