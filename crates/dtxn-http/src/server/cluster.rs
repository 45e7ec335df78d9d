//! Cluster mode: the [`Cluster`] trait, forwarding to a transaction's
//! owner, and the cluster-wide admin list. The guide is the `Cluster`
//! section of the [server docs](super#cluster).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dtxn::TransactionId;
use reqwest::Url;

use super::error::{ApiError, ServerError};
use super::model::{LoggedDecisionBody, LoggedDecisionList};
use super::AppState;
use crate::{HttpParticipant, HttpParticipantError};

/// The future of a [`Cluster`] query. It borrows nothing, so the server
/// can hold it beside other work.
pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'static>>;

/// The header a forwarded request carries, naming the node that forwarded
/// it. A request carrying it is answered locally, never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-dtxn-forwarded-by";

/// How long [`Cluster::owner`] and [`Cluster::nodes`] may take before the
/// request is answered `503 cluster_unavailable`.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer taken from another node, 16 MiB (a forwarded
/// request's answer, a node's decision list); a bigger one counts as no
/// answer (`503 owner_unavailable`, or the node listed as unreachable).
pub const MAX_NODE_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// `Retry-After` of the cluster's `503` answers, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// Where a transaction's requests go, in a cluster of coordinators sharing
/// one store (see the `Cluster` section of the [server docs](super#cluster)).
///
/// ```
/// use std::sync::Arc;
/// use dtxn::TransactionId;
/// use dtxn_http::server::{
///     Cluster, ClusterFuture, ClusterNode, ClusterStatus, ServerConfig,
/// };
///
/// /// A one-node "cluster": owns everything, always holds its lease.
/// struct Alone;
///
/// impl Cluster for Alone {
///     fn node_id(&self) -> &str {
///         "node-1"
///     }
///     fn owner(&self, _txn: TransactionId) -> ClusterFuture<Option<ClusterNode>> {
///         Box::pin(async { Ok(None) })
///     }
///     fn nodes(&self) -> ClusterFuture<Vec<ClusterNode>> {
///         Box::pin(async { Ok(Vec::new()) })
///     }
///     fn status(&self) -> ClusterStatus {
///         ClusterStatus { lease_held: true, ..ClusterStatus::default() }
///     }
/// }
///
/// let config = ServerConfig::default().cluster(Arc::new(Alone));
/// config.validate(None)?;
/// # Ok::<(), dtxn_http::server::ServerError>(())
/// ```
///
/// Every method may be called from any thread, concurrently; the futures
/// must not borrow `self`.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id (as in `dtxn serve --node-id`). It must be non-empty
    /// visible ASCII: it is sent in [`FORWARDED_BY_HEADER`].
    fn node_id(&self) -> &str;

    /// The owner of `txn`: `Ok(None)` when this node owns it or no node is
    /// known to (the request is answered locally); `Ok(Some(node))` for
    /// another node (a node with this node's id is answered locally too).
    /// May ask the store; cache inside the implementation, since it is
    /// asked on every request about a transaction.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when the owner cannot be found out: the request is
    /// answered `503 cluster_unavailable`.
    fn owner(&self, txn: TransactionId) -> ClusterFuture<Option<ClusterNode>>;

    /// Every node the store knows (this one may be among them), for the
    /// cluster-wide `GET /admin/decisions`.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when the store cannot be read: the list is
    /// answered `503 cluster_unavailable`.
    fn nodes(&self) -> ClusterFuture<Vec<ClusterNode>>;

    /// A snapshot for `/ready` and `/metrics`. Called on every probe and
    /// scrape: keep it cheap (no I/O).
    fn status(&self) -> ClusterStatus;

    /// Forgets any cached owner of `txn`: forwarding to it just failed.
    /// Default: nothing.
    fn forget_owner(&self, _txn: TransactionId) {}
}

/// A node of the cluster, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterNode {
    /// Its id (`dtxn serve --node-id`).
    pub node_id: String,
    /// Its base URL as the other nodes reach it, e.g.
    /// `http://10.0.0.7:7000`. Requests go to this URL plus the route's
    /// path.
    pub address: String,
    /// Whether it holds a live lease. The admin list asks live nodes only;
    /// a request is forwarded to its owner whatever this says.
    pub live: bool,
}

/// What this node's cluster membership looks like now, for `/ready` and
/// `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClusterStatus {
    /// Whether this node holds its lease. Without it `/ready` answers
    /// `503 lease_lost`.
    pub lease_held: bool,
    /// Whether the store has fenced this node off (another node took over
    /// its transactions). Then `/ready` answers `503 lease_lost`.
    pub fenced: bool,
    /// Takeovers of other nodes' transactions this node made, since it
    /// started.
    pub takeovers: u64,
    /// Logged Commit decisions this node adopted in takeovers, since it
    /// started.
    pub adopted_decisions: u64,
    /// Incarnations (transaction id prefixes) this node owns now: its own
    /// and those it took over.
    pub owned_incarnations: u64,
}

/// A [`Cluster`] query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The store refused or could not be reached (lost connection,
    /// timeout).
    #[error("cluster store: {message}")]
    Store {
        /// The store's error.
        message: String,
    },
    /// The cluster membership stopped (its background task ended).
    #[error("the cluster membership has stopped")]
    Closed,
}

/// The server's side of the cluster: the [`Cluster`], and the HTTP client
/// forwards and node queries go through.
pub(super) struct ClusterLink {
    cluster: Arc<dyn Cluster>,
    client: reqwest::Client,
    /// This node's id, as the value of [`FORWARDED_BY_HEADER`].
    node: HeaderValue,
}

/// Why another node gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum NodeFailure {
    #[error("its address {0:?} is not an http or https URL")]
    BadAddress(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("its answer is larger than {MAX_NODE_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("it answered {0}")]
    Status(StatusCode),
    #[error("its answer is not a decision list: {0}")]
    Body(serde_json::Error),
}

impl ClusterLink {
    /// The link for `cluster`, forwarding with `timeout` per request.
    pub fn new(cluster: Arc<dyn Cluster>, timeout: Duration) -> Result<Self, ServerError> {
        // `ServerConfig::check_settings` refused any other id already.
        let node =
            HeaderValue::from_str(cluster.node_id()).map_err(|_| ServerError::InvalidSetting {
                setting: "cluster",
                reason: "the node id must be non-empty visible ASCII",
            })?;
        // No redirects, no proxy from the environment, a short connect
        // timeout: the participant client's settings.
        let client = HttpParticipant::client_builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ServerError::Client(HttpParticipantError::Client(e.to_string())))?;
        Ok(Self {
            cluster,
            client,
            node,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// The status snapshot.
    pub fn status(&self) -> ClusterStatus {
        self.cluster.status()
    }

    /// `address` joined with `path` (which starts with `/`) and `query`.
    fn url(address: &str, path: &str, query: Option<&str>) -> Result<Url, NodeFailure> {
        let bad = || NodeFailure::BadAddress(address.to_owned());
        let mut url = Url::parse(address).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad());
        }
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(query);
        url.set_fragment(None);
        Ok(url)
    }

    /// Sends `request`, marked as forwarded by this node, and
    /// reads the answer whole.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), NodeFailure> {
        let mut response = request
            .header(FORWARDED_BY_HEADER, self.node.clone())
            .send()
            .await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_NODE_ANSWER_BYTES {
                return Err(NodeFailure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }

    /// This node's logged decisions (`local`, tagged already) and those of
    /// every other live node, with the nodes that could not be asked.
    pub async fn gather_decisions(
        &self,
        mut local: Vec<LoggedDecisionBody>,
        authorization: Option<&HeaderValue>,
    ) -> Result<LoggedDecisionList, ApiError> {
        let nodes = lookup(self.cluster.nodes()).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot list the cluster's nodes");
            cluster_unavailable("the cluster's nodes cannot be listed now; retry shortly")
        })?;
        let others: Vec<ClusterNode> = nodes
            .into_iter()
            .filter(|n| n.live && n.node_id != self.node_id())
            .collect();
        let asked = others.iter().map(|node| async move {
            let url = Self::url(&node.address, "/admin/decisions", Some("scope=node"))?;
            let mut request = self
                .client
                .get(url)
                .header(header::ACCEPT, "application/json");
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization.clone());
            }
            let (status, _, body) = self.send(request).await?;
            if status != StatusCode::OK {
                return Err(NodeFailure::Status(status));
            }
            serde_json::from_slice::<LoggedDecisionList>(&body).map_err(NodeFailure::Body)
        });
        let answers = futures_util::future::join_all(asked).await;
        let mut unreachable = Vec::new();
        for (node, answer) in others.into_iter().zip(answers) {
            match answer {
                Ok(list) => local.extend(list.decisions.into_iter().map(|mut d| {
                    d.node = Some(node.node_id.clone());
                    d
                })),
                Err(e) => {
                    tracing::warn!(node = node.node_id, error = %e, "cannot list a node's logged decisions");
                    unreachable.push(node.node_id);
                }
            }
        }
        local.sort_by(|a, b| (a.id, &a.node).cmp(&(b.id, &b.node)));
        Ok(LoggedDecisionList {
            decisions: local,
            unreachable,
        })
    }
}

/// Bounds a cluster query by [`LOOKUP_TIMEOUT`].
async fn lookup<T>(query: ClusterFuture<T>) -> Result<T, ClusterError> {
    tokio::time::timeout(LOOKUP_TIMEOUT, query)
        .await
        .unwrap_or_else(|_| {
            Err(ClusterError::Store {
                message: format!("no answer within {LOOKUP_TIMEOUT:?}"),
            })
        })
}

fn cluster_unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        message,
    )
    .retry_after(RETRY_AFTER_SECS)
}

/// The routes under `/transactions/{id}/`, all forwarded (as is
/// `/transactions/{id}` itself). A unit test checks that this is every
/// route under it.
const ROUTE_ACTIONS: [&str; 8] = [
    "report",
    "outcome",
    "participants",
    "prepare",
    "commit",
    "rollback",
    "retry",
    "resolve",
];

/// The request headers a forward carries.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 3] =
    [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];

/// The answer headers a forward brings back.
const FORWARDED_ANSWER_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
];

/// Forwards a request about a transaction owned by another node (see the
/// [server docs](super#cluster)); answers it here otherwise. Wraps the
/// `/transactions/{id}` routes only.
pub(super) async fn forward(
    State(state): State<Arc<AppState>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let Some(link) = &state.cluster else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_BY_HEADER) {
        return next.run(request).await;
    }
    // The path sent on is rebuilt from the route and the parsed id, never
    // copied from the request. A bad id is the handler's `400`.
    let txn = params.ok().and_then(|params| {
        params
            .iter()
            .find(|(key, _)| *key == "id")
            .and_then(|(_, raw)| raw.parse::<TransactionId>().ok())
    });
    let rest = request
        .uri()
        .path()
        .rsplit_once('/')
        // `/transactions/{id}` itself, when not a route below it.
        .map(|(_, last)| {
            if ROUTE_ACTIONS.contains(&last) {
                format!("/{last}")
            } else {
                String::new()
            }
        });
    let (Some(txn), Some(rest)) = (txn, rest) else {
        return next.run(request).await;
    };
    let owner = match lookup(link.cluster.owner(txn)).await {
        Ok(owner) => owner,
        Err(e) => {
            tracing::warn!(%txn, error = %e, "cannot find the owner of a transaction");
            state.metrics.count_forward_failure("cluster_unavailable");
            return cluster_unavailable(format!(
                "the owner of transaction {txn} cannot be found now; retry shortly"
            ))
            .into_response();
        }
    };
    let Some(owner) = owner.filter(|node| node.node_id != link.node_id()) else {
        return next.run(request).await;
    };
    state.metrics.count_forwarded();
    tracing::debug!(%txn, owner = owner.node_id, "forwarding to the owner");
    let path = format!("/transactions/{txn}{rest}");
    match forward_to(link, &owner, &path, request, state.max_body_bytes).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(%txn, owner = owner.node_id, error = %e, "cannot forward to the owner");
            state.metrics.count_forward_failure("owner_unavailable");
            link.cluster.forget_owner(txn);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unavailable",
                format!(
                    "transaction {txn} is owned by node {:?}, which did not answer; \
                     retry shortly (prepare, commit and rollback answer the outcome when repeated)",
                    owner.node_id
                ),
            )
            .retry_after(RETRY_AFTER_SECS)
            .into_response()
        }
    }
}

/// Sends `request` to `owner` at `path` (and the request's query) and
/// turns the owner's answer into this one.
async fn forward_to(
    link: &ClusterLink,
    owner: &ClusterNode,
    path: &str,
    request: Request,
    max_body_bytes: usize,
) -> Result<Response, NodeFailure> {
    let url = ClusterLink::url(&owner.address, path, request.uri().query())?;
    let (parts, body) = request.into_parts();
    // Read already (`middleware::read_body`), in memory and within the
    // limit: this only takes the bytes, and cannot fail.
    let body = axum::body::to_bytes(body, max_body_bytes)
        .await
        .unwrap_or_default();
    let mut forwarded = link.client.request(parts.method, url).body(body);
    for name in FORWARDED_REQUEST_HEADERS {
        for value in parts.headers.get_all(&name) {
            forwarded = forwarded.header(&name, value.clone());
        }
    }
    let (status, headers, body) = link.send(forwarded).await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for name in FORWARDED_ANSWER_HEADERS {
        for value in headers.get_all(&name) {
            response.headers_mut().append(&name, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_answer_cap_is_16_mib() {
        assert_eq!(MAX_NODE_ANSWER_BYTES, 16 << 20);
    }

    #[test]
    fn every_route_under_a_transaction_is_forwarded() {
        let doc: serde_json::Value =
            serde_json::from_slice(&super::super::openapi::document().unwrap()).unwrap();
        let mut actions: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|path| path.strip_prefix("/transactions/{id}/"))
            .collect();
        actions.sort_unstable();
        let mut forwarded = ROUTE_ACTIONS.to_vec();
        forwarded.sort_unstable();
        assert_eq!(actions, forwarded);
    }

    #[test]
    fn forward_urls_keep_the_address_and_take_the_route_path() {
        let url = ClusterLink::url(
            "http://10.0.0.7:7000/base/",
            "/transactions/1/commit",
            Some("a=b"),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://10.0.0.7:7000/base/transactions/1/commit?a=b"
        );
        let url = ClusterLink::url("http://n1:7000", "/admin/decisions", None).unwrap();
        assert_eq!(url.as_str(), "http://n1:7000/admin/decisions");
        for bad in ["ftp://n1/", "not a url", "unix:/tmp/sock"] {
            assert!(matches!(
                ClusterLink::url(bad, "/x", None),
                Err(NodeFailure::BadAddress(_))
            ));
        }
    }
}
