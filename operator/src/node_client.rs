//! (client) The operator's side of the nodes' admin API (`rc_api` wire types). Behind a trait so
//! that controller tests can substitute it. Single-leader calls (`epoch`, `promote`, `follow`)
//! serve `crate::failover`; leaderless ones (`ring`, `decommission`, `repair`) serve
//! `crate::membership`.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use rc_api::{
    paths, EpochRequest, EpochResponse, FollowRequest, HandoverRequest, LogPosition, NodeStatus,
    PromoteRequest, Ring, StatusQuery, VoterConfig, VotersRequest,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How the operator reaches one cluster's nodes: the bearer token it sends, with TLS the
/// cluster CA it verifies them with, and the admin port when it is not the client port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAccess {
    pub token: String,
    pub tls: Option<ClusterTls>,
    /// Nodes are known by their client address; admin calls go to this port of the host.
    pub admin_port: Option<u16>,
}

impl NodeAccess {
    /// A token, plain HTTP, everything on the client port.
    pub fn plain(token: &str) -> Self {
        NodeAccess {
            token: token.to_owned(),
            tls: None,
            admin_port: None,
        }
    }

    /// Where the admin API of the node known as `address` (`host:port`) listens.
    pub fn admin_address(&self, address: &str) -> String {
        match (self.admin_port, address.rsplit_once(':')) {
            (Some(port), Some((host, _))) => format!("{host}:{port}"),
            _ => address.to_owned(),
        }
    }
}

/// A cluster's CA and the name its node certificates carry (checked when a node is dialled by
/// pod IP, see `rc_tls::client`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterTls {
    pub ca_pem: String,
    pub server_name: String,
}

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot set up TLS to {address}: {message}")]
    Tls { address: String, message: String },
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

/// The admin calls the operator makes. `address` is `host:port`; `auth` the cluster's token and
/// CA.
pub trait NodeAdmin: Send + Sync {
    /// `GET /admin/status`.
    fn status<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>>;
    /// `GET /admin/status?waitForChange=...`: the health feed (see `crate::feed`). Waits up
    /// to `query.timeout_ms` plus a margin; a node that does not answer by then is unreachable.
    fn watch_status<'a>(
        &'a self,
        address: &'a str,
        _auth: &'a NodeAccess,
        _query: &'a StatusQuery,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move { Err(NodeError::unsupported(address, "health feed")) })
    }
    /// `POST /admin/epoch`: fence the node at `epoch`.
    fn epoch<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        request: EpochRequest,
    ) -> BoxFuture<'a, Result<EpochResponse, NodeError>>;
    /// `POST /admin/handover` to the leader: stop writes until the target holds the whole log;
    /// waits up to `request.wait_ms` plus a margin. A client without it fails the call (the
    /// switchover then fences without it, as a hand-over on pod deletion does).
    fn handover<'a>(
        &'a self,
        address: &'a str,
        _auth: &'a NodeAccess,
        _request: HandoverRequest,
    ) -> BoxFuture<'a, Result<LogPosition, NodeError>> {
        Box::pin(async move { Err(NodeError::unsupported(address, "hand-over")) })
    }
    /// `POST /admin/promote`.
    fn promote<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        request: PromoteRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/follow`.
    fn follow<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        request: FollowRequest,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/voters` to the leader: change the voter set by one member; answers the
    /// committed configuration.
    fn voters<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        request: VotersRequest,
    ) -> BoxFuture<'a, Result<VoterConfig, NodeError>>;
    /// `PUT /admin/ring`: install `ring` unless the node has it or a newer one already.
    fn ring<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        ring: &'a Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/decommission`: a leaving node starts handing its data to the next owners.
    fn decommission<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
    /// `POST /admin/repair`: one anti-entropy round with every other owner, now.
    fn repair<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<(), NodeError>>;
}

/// The real client: HTTPS verified with each cluster's CA (plain HTTP for a cluster without
/// TLS), short timeouts so that one dead node does not stall a reconcile.
#[derive(Clone, Debug)]
pub struct HttpNodeAdmin {
    http: reqwest::Client,
    /// One client per cluster CA (connections are pooled per client).
    tls_clients: std::sync::Arc<std::sync::Mutex<HashMap<ClusterTls, reqwest::Client>>>,
    timeout: Duration,
    status_timeout: Duration,
}

/// More CAs than this in the client cache (clusters come and go) start it afresh.
const MAX_TLS_CLIENTS: usize = 1024;

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
            tls_clients: Default::default(),
            timeout,
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

    /// The client for a cluster with `tls`, made on first use.
    fn tls_client(&self, tls: &ClusterTls, address: &str) -> Result<reqwest::Client, NodeError> {
        let mut clients = self.tls_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(tls) {
            return Ok(client.clone());
        }
        let failed = |message: String| NodeError::Tls {
            address: address.to_owned(),
            message,
        };
        let config = rc_tls::client::client_config(tls.ca_pem.as_bytes(), &tls.server_name)
            .map_err(|e| failed(format!("{e:#}")))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        if clients.len() >= MAX_TLS_CLIENTS {
            clients.clear();
        }
        clients.insert(tls.clone(), client.clone());
        Ok(client)
    }

    /// An authenticated admin request to `path` on the node at `address`.
    fn request(
        &self,
        method: Method,
        address: &str,
        path: &str,
        auth: &NodeAccess,
    ) -> Result<reqwest::RequestBuilder, NodeError> {
        let (client, scheme) = match &auth.tls {
            Some(tls) => (self.tls_client(tls, address)?, "https"),
            None => (self.http.clone(), "http"),
        };
        let address = auth.admin_address(address);
        Ok(client
            .request(method, format!("{scheme}://{address}{path}"))
            .bearer_auth(&auth.token))
    }

    /// One JSON call: its parsed answer, or `None` for an empty one.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        address: &str,
        path: &str,
        auth: &NodeAccess,
        body: &B,
    ) -> Result<Option<T>, NodeError> {
        let request = self.request(method, address, path, auth)?.json(body);
        self.send(request, address).await
    }
}

/// A call whose success is the whole answer: a JSON body, if any, is read and dropped.
async fn succeeded(
    answer: impl std::future::Future<Output = Result<Option<serde_json::Value>, NodeError>>,
) -> Result<(), NodeError> {
    answer.await.map(drop)
}

fn required<T>(value: Option<T>, address: &str) -> Result<T, NodeError> {
    value.ok_or_else(|| NodeError::Status {
        address: address.to_owned(),
        status: 200,
        body: "empty answer".to_owned(),
    })
}

/// A `NodeAdmin` method that POSTs its request as JSON to `$path` and answers with the parsed
/// body, or just success for `()`; with no request type, an empty POST that answers success.
macro_rules! post_json {
    ($name:ident, $path:expr) => {
        fn $name<'a>(
            &'a self,
            address: &'a str,
            auth: &'a NodeAccess,
        ) -> BoxFuture<'a, Result<(), NodeError>> {
            Box::pin(succeeded(self.call(
                Method::POST,
                address,
                $path,
                auth,
                &(),
            )))
        }
    };
    ($name:ident, $request:ty => (), $path:expr) => {
        fn $name<'a>(
            &'a self,
            address: &'a str,
            auth: &'a NodeAccess,
            request: $request,
        ) -> BoxFuture<'a, Result<(), NodeError>> {
            Box::pin(async move {
                succeeded(self.call(Method::POST, address, $path, auth, &request)).await
            })
        }
    };
    ($name:ident, $request:ty => $answer:ty, $path:expr) => {
        fn $name<'a>(
            &'a self,
            address: &'a str,
            auth: &'a NodeAccess,
            request: $request,
        ) -> BoxFuture<'a, Result<$answer, NodeError>> {
            Box::pin(async move {
                let answer = self
                    .call(Method::POST, address, $path, auth, &request)
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
        auth: &'a NodeAccess,
        request: HandoverRequest,
    ) -> BoxFuture<'a, Result<LogPosition, NodeError>> {
        Box::pin(async move {
            let wait = Duration::from_millis(request.wait_ms);
            let request = self
                .request(Method::POST, address, paths::HANDOVER, auth)?
                .json(&request)
                .timeout(wait + FEED_MARGIN);
            required(self.send(request, address).await?, address)
        })
    }

    fn status<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            let request = self
                .request(Method::GET, address, paths::STATUS, auth)?
                .timeout(self.status_timeout);
            required(self.send(request, address).await?, address)
        })
    }

    fn watch_status<'a>(
        &'a self,
        address: &'a str,
        auth: &'a NodeAccess,
        query: &'a StatusQuery,
    ) -> BoxFuture<'a, Result<NodeStatus, NodeError>> {
        Box::pin(async move {
            let wait = Duration::from_millis(query.timeout_ms.unwrap_or(0));
            let request = self
                .request(Method::GET, address, paths::STATUS, auth)?
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
        auth: &'a NodeAccess,
        ring: &'a Ring,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(succeeded(self.call(
            Method::PUT,
            address,
            paths::RING,
            auth,
            ring,
        )))
    }

    post_json!(decommission, paths::DECOMMISSION);
    post_json!(repair, paths::REPAIR);
}
