//! The coordinator as an HTTP/JSON service (feature `server`).
//!
//! [`router`] puts a [`TransactionCoordinator`] behind an axum [`Router`];
//! [`serve`] runs it on a listener until a shutdown signal and then drains
//! gracefully. Participants are services speaking the participant [wire
//! contract](crate::wire), called through [`HttpParticipant`](crate::HttpParticipant)s that share
//! one connection pool.
//!
//! # Routes
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /transactions` | `201` [`TransactionStatus`](model::TransactionStatus), `Location` header |
//! | `GET /transactions?state=prepared&in_doubt=true` | `200` [`TransactionList`](model::TransactionList) of unfinished transactions |
//! | `GET /transactions/{id}` | `200` [`TransactionStatus`](model::TransactionStatus) |
//! | `GET /transactions/{id}/report` | `200` [`ReportResponse`](model::ReportResponse) |
//! | `GET /transactions/{id}/outcome` | `200` [`OutcomeQueryResponse`](model::OutcomeQueryResponse): `committed`, `aborted`, `pending` or `unknown` (never `404`) |
//! | `POST /transactions/{id}/participants` | `201` (or `200` if already registered) [`RegisterResponse`](model::RegisterResponse); body [`RegisterRequest`](model::RegisterRequest) |
//! | `POST /transactions/{id}/prepare` | `200` [`PrepareResponse`](model::PrepareResponse): `prepared`, or `aborted` with the reason |
//! | `POST /transactions/{id}/commit` | `200` [`OutcomeResponse`](model::OutcomeResponse) |
//! | `POST /transactions/{id}/rollback` | `200` [`OutcomeResponse`](model::OutcomeResponse) |
//! | `POST /transactions/{id}/retry` | `200` [`TransactionStatus`](model::TransactionStatus): phase-2 retries waiting out their backoff are made now |
//! | `POST /transactions/{id}/resolve` | `204`: a logged decision committed with participants given up on leaves the log (`404 no_logged_hazard` otherwise) |
//! | `GET /admin/decisions?scope=node` | `200` [`LoggedDecisionList`](model::LoggedDecisionList): Commit decisions in the decision log not yet ended (in a cluster, every live node's unless `scope=node`) |
//! | `GET /health` | liveness: always `200` [`HealthResponse`](model::HealthResponse) (`ok`, or `draining` while shutting down) |
//! | `GET /ready` | readiness: `200` [`ReadyResponse`](model::ReadyResponse) `ready`; `503` `shutting_down`, `lease_lost` (cluster) or `saturated` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /openapi.json` | the OpenAPI 3 document of all of the above |
//!
//! Ids are [`TransactionId`](dtxn::TransactionId)s in display form (32 hex
//! digits, hyphens optional). Every enumerated value, in answers and in
//! queries, is `snake_case`.
//!
//! # Errors
//!
//! Every error answered by the router is a JSON
//! [`ErrorBody`](crate::wire::ErrorBody) `{"code", "error"}` with a `4xx`
//! status, or `503` when overloaded or shutting down; the server answers
//! `500` only if a handler panics (a bug; it is logged and the server
//! carries on). A request too malformed to reach the router (a bad request
//! line, headers over hyper's limits) is answered by the HTTP layer itself,
//! `400` or `431` with an empty body.
//!
//! | status | `code` |
//! | --- | --- |
//! | `400` | `invalid_id`, `malformed_json`, `invalid_query`, `bad_request` |
//! | `401` | `unauthorized` (with `WWW-Authenticate: Bearer`) |
//! | `403` | `ad_hoc_participants_disabled`, `participant_host_not_allowed` |
//! | `404` | `not_found` (unknown or forgotten transaction, or no such route) |
//! | `405` | `method_not_allowed` |
//! | `408` | `body_timeout` (the connection is closed) |
//! | `409` | `invalid_state` (say, commit before prepare) |
//! | `413` | `body_too_large` |
//! | `415` | `unsupported_media_type` (the body must be `application/json`) |
//! | `422` | `invalid_body`, `unknown_participant`, `invalid_participant_url`, `invalid_participant_name`, `too_many_participants` |
//! | `429` | `capacity_exceeded` (with `Retry-After`) |
//! | `503` | `overloaded`, `shutting_down`; in a cluster `lease_lost` (this node was fenced out: its transactions are another node's), `owner_unavailable` (the node owning the transaction did not answer), `cluster_unavailable` (the cluster store cannot tell the owner or the nodes); all with `Retry-After` |
//!
//! # Guarantees
//!
//! * **Load shedding.** At most
//!   [`max_concurrent_requests`](ServerConfig::max_concurrent_requests) API
//!   requests are handled at once; more are answered `503` at once, never
//!   queued. `/health`, `/ready` and `/metrics` are never shed.
//! * **Slow clients.** A request's body is read, within
//!   [`body_read_timeout`](ServerConfig::body_read_timeout), before it takes
//!   a concurrency slot; [`serve`] also bounds header reading and idle
//!   connections and caps open connections (see [`ServerConfig`]).
//! * **Participants.** Only known participants, or URLs on allowed hosts,
//!   are ever called, never this server itself, and never through the
//!   environment's proxy; participants' answers reach clients only as a
//!   status and a capped `error` (see [`ServerConfig`]).
//! * **Cancel safety.** The coordinator's prepare, commit and rollback are
//!   cancel safe: when a client disconnects mid-request, the participant
//!   calls in flight are handed to a task of the coordinator's own. The
//!   transaction carries on (or its deadline resolves it), and asking again
//!   answers its outcome.
//! * **Graceful shutdown.** See [`serve`].
//!
//! Requests are traced with [`tracing`](https://docs.rs/tracing): a
//! `request` span (method, path) and a debug event per answer.
//!
//! # Cluster
//!
//! Several coordinators (`dtxn serve` processes) can share one store.
//! Every transaction is owned by the node that began it (its id names the
//! owner). A request about a transaction reaching another node is
//! **forwarded** to the owner.
//!
//! The server knows the cluster only through the [`Cluster`] trait: who
//! this node is, who owns a transaction, which nodes exist, and a status
//! snapshot. The implementation (leases, takeover, the store's tables)
//! lives elsewhere; give it to the server with
//! [`ServerConfig::cluster`](ServerConfig::cluster).
//!
//! ## What is forwarded
//!
//! Every route under `/transactions/{id}` (state, report, outcome,
//! participants, prepare, commit, rollback, retry, resolve). The server asks
//! [`Cluster::owner`]; when another node owns the transaction, the request
//! goes to that node's [`address`](ClusterNode::address) with the same
//! method, path, query and body, and the headers `content-type`,
//! `authorization` (a cluster shares one bearer token) and `accept`, plus
//! [`FORWARDED_BY_HEADER`] naming this node. The owner's status, body and
//! `content-type` (and `retry-after`, `www-authenticate`) come back
//! unchanged. `POST /transactions` (begin: the new transaction is this
//! node's), `GET /transactions` (this node's list) and the operational
//! routes are never forwarded.
//!
//! A request that already carries [`FORWARDED_BY_HEADER`] is answered
//! locally, never forwarded again: when two nodes disagree for a moment
//! about an owner, a request goes one hop and is answered honestly
//! (`404 not_found`, or `unknown` for an outcome) instead of looping.
//!
//! ## Why forward rather than redirect
//!
//! Clients, and participant services asking for an outcome through
//! `outcome_url`, reach the coordinators through one address behind a
//! plain load balancer. A `307` redirect would need every one of them to
//! reach each node's own address (often a private one), and to send a
//! `POST` body again, which many HTTP clients do not do on a redirect.
//! Forwarding costs one extra hop inside the cluster and keeps a single
//! address for everyone.
//!
//! ## Where forwards go
//!
//! Only to addresses the [`Cluster`] gives (the store), never to anything
//! taken from the request: the path is rebuilt from the route and the
//! parsed transaction id, and the host always comes from
//! [`ClusterNode::address`]. Forwards ignore the proxy environment
//! variables and never follow redirects. Requests are authenticated here
//! first, so an unauthenticated request is never forwarded.
//!
//! ## Failures
//!
//! * The owner cannot be reached, or gives no complete answer within
//!   [`forward_timeout`](ServerConfig::forward_timeout) (or one over
//!   [`MAX_NODE_ANSWER_BYTES`]): `503
//!   owner_unavailable` with `Retry-After`, naming the owner's node id, and
//!   the owner is forgotten ([`Cluster::forget_owner`]) so that the next
//!   request asks the store again (it may have been taken over). Prepare,
//!   commit and rollback are idempotent: asking again answers the outcome.
//! * [`Cluster::owner`] fails, or does not answer within
//!   [`LOOKUP_TIMEOUT`]: `503 cluster_unavailable` with `Retry-After`.
//!
//! Both are counted in `/metrics` (`dtxn_forward_failures_total`, by
//! `reason`), beside `dtxn_forwarded_requests_total`.
//!
//! ## The cluster-wide admin list
//!
//! `GET /admin/decisions` gathers this node's logged decisions and those
//! of every other [`live`](ClusterNode::live) node (asked with
//! `?scope=node`), each entry naming its node; nodes that could not be
//! asked are listed in `unreachable` instead of failing the answer.
//! `?scope=node`, or a request carrying [`FORWARDED_BY_HEADER`], answers
//! this node's list only.
//!
//! ## Cancel safety of forwards
//!
//! A client that hangs up drops the forward in flight; the owner then sees
//! its client hang up, and its prepare, commit and rollback are cancel safe
//! (the transaction carries on; asking again answers its outcome).

mod api;
mod cluster;
mod config;
mod error;
mod listener;
mod metrics;
mod middleware;
pub mod model;
mod openapi;
mod participants;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use dtxn::{TransactionCoordinator, TransactionState};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;

pub use cluster::{
    Cluster, ClusterError, ClusterFuture, ClusterNode, ClusterStatus, FORWARDED_BY_HEADER,
    LOOKUP_TIMEOUT, MAX_NODE_ANSWER_BYTES,
};
pub use config::ServerConfig;
pub use error::ServerError;

/// The participant side of the [wire contract](crate::wire) as an OpenAPI 3
/// document in JSON: what a participant service must serve (`POST
/// /prepare`, `/commit`, `/rollback` under its base URL). The server also
/// serves it at `GET /openapi/participant.json`; the repository keeps a
/// copy in `docs/participant-openapi.json`.
pub fn participant_openapi() -> String {
    // Serializing a document built from static parts cannot fail.
    String::from_utf8(openapi::participant_json().unwrap_or_default()).unwrap_or_default()
}

use cluster::ClusterLink;
use metrics::Metrics;
use participants::Participants;

/// How often [`serve`] looks whether every transaction finished while
/// draining.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// State shared by the handlers.
pub(crate) struct AppState {
    coordinator: TransactionCoordinator,
    participants: Participants,
    metrics: Metrics,
    /// Set once shutdown began: no new transactions.
    draining: AtomicBool,
    bearer_token: Option<String>,
    /// The OpenAPI document, serialized once.
    openapi: Bytes,
    /// The participant side's OpenAPI document, serialized once.
    participant_openapi: Bytes,
    /// The slots of the concurrency limit, to tell `/ready` when none is
    /// free.
    api_slots: Arc<Semaphore>,
    max_body_bytes: usize,
    max_payload_bytes: usize,
    body_read_timeout: Duration,
    /// The cluster this node belongs to, if any.
    cluster: Option<ClusterLink>,
}

/// The coordinator's HTTP API as an axum [`Router`], ready to serve or to
/// nest in a larger application.
///
/// Serve it with [`serve`] to get graceful shutdown and the connection
/// limits (header-read and idle timeouts, connection cap); served
/// otherwise, the router has only the body-read timeout and never drains
/// (begin is refused only once [`TransactionCoordinator::shutdown`] is
/// called).
///
/// # Errors
///
/// Those of [`ServerConfig::validate`], and [`ServerError::Client`] if the
/// HTTP client cannot be built.
pub fn router(
    coordinator: TransactionCoordinator,
    config: ServerConfig,
) -> Result<Router, ServerError> {
    Ok(build(coordinator, &config, None)?.0)
}

/// Finds the participants of logged Commit decisions again after a
/// restart, for [`TransactionCoordinator::recover`]: by the base URL an
/// [`HttpParticipant`](crate::HttpParticipant) logs as its recovery key,
/// among `config`'s known participants (with their credentials) or, if
/// the allow-list admits it, as an ad hoc participant.
///
/// # Errors
///
/// As [`router`]: a configuration that cannot make its participants.
pub fn recovery_resolver(config: &ServerConfig) -> Result<RecoveryResolver, ServerError> {
    config.check_settings()?;
    Ok(RecoveryResolver(Participants::new(config, None)?))
}

/// Resolves recovery keys (base URLs) to HTTP participants; see
/// [`recovery_resolver`].
pub struct RecoveryResolver(Participants);

impl std::fmt::Debug for RecoveryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryResolver").finish_non_exhaustive()
    }
}

impl dtxn::log::ParticipantResolver for RecoveryResolver {
    fn resolve(&self, key: &str) -> Option<Arc<dyn dtxn::Participant>> {
        self.0.by_url(key).map(|p| p as Arc<dyn dtxn::Participant>)
    }
}

fn build(
    coordinator: TransactionCoordinator,
    config: &ServerConfig,
    own: Option<SocketAddr>,
) -> Result<(Router, Arc<AppState>), ServerError> {
    config.check_settings()?;
    let api_slots = Arc::new(Semaphore::new(config.max_concurrent_requests));
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| ClusterLink::new(Arc::clone(c), config.forward_timeout))
        .transpose()?;
    let state = Arc::new(AppState {
        participants: Participants::new(config, own)?,
        metrics: Metrics::new(coordinator.clone(), config.cluster.clone()),
        coordinator,
        draining: AtomicBool::new(false),
        bearer_token: config.bearer_token.clone(),
        openapi: Bytes::from(openapi::document().map_err(ServerError::OpenApi)?),
        participant_openapi: Bytes::from(
            openapi::participant_json().map_err(ServerError::OpenApi)?,
        ),
        api_slots: Arc::clone(&api_slots),
        max_body_bytes: config.max_body_bytes,
        max_payload_bytes: config.max_payload_bytes,
        body_read_timeout: config.body_read_timeout,
        cluster,
    });
    let load_shedding = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(middleware::overloaded))
        .layer(LoadShedLayer::new())
        // Global: `Router::layer` wraps each route, and they must share
        // one limit.
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(api_slots));
    // The API sheds load; operations (health, readiness, metrics, the
    // document) never do, so probes see a saturated server as alive.
    // Requests about one transaction go to its owner in a cluster.
    let transaction = Router::new()
        .route("/transactions/{id}", get(api::get_state))
        .route("/transactions/{id}/report", get(api::report))
        .route("/transactions/{id}/outcome", get(api::outcome))
        .route("/transactions/{id}/participants", post(api::register))
        .route("/transactions/{id}/prepare", post(api::prepare))
        .route("/transactions/{id}/commit", post(api::commit))
        .route("/transactions/{id}/rollback", post(api::rollback))
        .route("/transactions/{id}/retry", post(api::retry))
        .route("/transactions/{id}/resolve", post(api::resolve))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            cluster::forward,
        ));
    let api = Router::new()
        .route("/transactions", post(api::begin).get(api::list))
        .merge(transaction)
        .route("/admin/decisions", get(api::logged_decisions))
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(load_shedding);
    let operations = Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(api::openapi))
        .route("/openapi/participant.json", get(api::participant_openapi))
        .method_not_allowed_fallback(api::method_not_allowed);
    // Layers run outermost (last added) first.
    let app = api
        .merge(operations)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::authenticate,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::observe,
        ))
        .layer(axum::middleware::from_fn(middleware::catch_panic))
        .with_state(Arc::clone(&state));
    Ok((app, state))
}

/// What [`serve`] did when shutting down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Transactions not yet committed or aborted when the shutdown signal
    /// came.
    pub unfinished_at_signal: usize,
    /// Transactions that finished (committed or aborted) during the grace
    /// period.
    pub finished_in_grace: usize,
    /// Transactions still undecided (Active, Preparing or Prepared) when
    /// the grace period ended, which the coordinator then rolled back.
    pub rolled_back: usize,
    /// Transactions still unfinished when `serve` returned: phase 2 still
    /// being retried past the final bound. Normally zero; their outcome is
    /// in the coordinator, which the caller still holds.
    pub unfinished_at_exit: usize,
    /// Whether the grace period ran out with transactions unfinished.
    pub grace_expired: bool,
    /// Milliseconds from the shutdown signal to the return.
    pub elapsed_ms: u64,
}

/// Serves the coordinator's HTTP API on `listener` until `shutdown`
/// completes, then shuts down gracefully:
///
/// 1. **Drain.** New transactions are refused (`POST /transactions` answers
///    `503 shutting_down`, `/ready` answers `503`), while every
///    other route keeps working so clients can finish what they started —
///    until no transaction is unfinished or
///    [`shutdown_grace`](ServerConfig::shutdown_grace) passes.
/// 2. **Stop.** The listener is closed; requests in flight finish. At the
///    same time [`TransactionCoordinator::shutdown`] rolls back every
///    transaction still undecided and lets phase 2 under way finish. Both
///    are bounded by `shutdown_grace` again; requests still running then
///    are dropped (which is cancel safe).
///
/// Returns what happened in a [`ShutdownReport`]. The coordinator refuses
/// new transactions afterwards.
///
/// ```no_run
/// use dtxn::TransactionCoordinator;
/// use dtxn_http::server::{serve, ServerConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// let config = ServerConfig::default().participant("users", "http://127.0.0.1:7001/2pc/");
/// let shutdown = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// let report = serve(listener, TransactionCoordinator::new(), config, shutdown).await?;
/// println!("rolled back {} undecided transactions", report.rolled_back);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The errors of [`router`], and [`ServerError::Io`] if the server stops
/// before the shutdown signal.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future stops serving at once, without
/// draining, and leaves the coordinator to the caller (transactions go on,
/// or their deadline or the coordinator's drop resolves them).
pub async fn serve(
    listener: tokio::net::TcpListener,
    coordinator: TransactionCoordinator,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, ServerError> {
    let grace = config.shutdown_grace;
    let address = listener.local_addr()?;
    let (app, state) = build(coordinator.clone(), &config, Some(address))?;
    let limits = listener::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(listener::run(listener, app, limits, async {
        // A dropped sender also stops the server.
        let _ = stopped.await;
    }));
    tracing::info!(%address, "coordinator HTTP server listening");

    tokio::select! {
        finished = &mut server => return Err(ServerError::Io(stopped_early(finished))),
        () = shutdown => {}
    }
    let signalled = Instant::now();
    state.draining.store(true, Ordering::Release);
    let before = coordinator.stats();
    tracing::info!(
        unfinished = before.unfinished,
        ?grace,
        "shutting down: refusing new transactions, letting clients finish"
    );
    let deadline = signalled + grace;
    while coordinator.stats().unfinished > 0 && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
    let after = coordinator.stats();
    let undecided: Vec<_> = coordinator
        .unfinished_transactions()
        .into_iter()
        .filter(|t| t.state.decision().is_none())
        .map(|t| t.txn)
        .collect();
    if after.unfinished > 0 {
        tracing::warn!(
            unfinished = after.unfinished,
            undecided = undecided.len(),
            "grace period over: rolling back undecided transactions"
        );
    }

    let _ = stop.send(());
    let final_stage = tokio::time::timeout(grace, async {
        tokio::join!(&mut server, coordinator.shutdown()).0
    })
    .await;
    match final_stage {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed while stopping"),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "shutdown still running after the final bound; dropping open requests"
            );
            server.abort();
        }
    }

    let rolled_back = undecided
        .iter()
        .filter(|&&txn| {
            matches!(
                coordinator.get_transaction_state(txn),
                Ok(TransactionState::Aborting | TransactionState::Aborted)
            )
        })
        .count();
    let report = ShutdownReport {
        unfinished_at_signal: before.unfinished,
        finished_in_grace: usize::try_from(
            (after.committed + after.aborted).saturating_sub(before.committed + before.aborted),
        )
        .unwrap_or(usize::MAX),
        rolled_back,
        unfinished_at_exit: coordinator.stats().unfinished,
        grace_expired: after.unfinished > 0,
        elapsed_ms: u64::try_from(signalled.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::info!(?report, "coordinator HTTP server stopped");
    Ok(report)
}

/// The error for a server that ended before it was told to.
fn stopped_early(finished: Result<(), tokio::task::JoinError>) -> std::io::Error {
    match finished {
        Ok(()) => std::io::Error::other("the HTTP server stopped before the shutdown signal"),
        Err(e) => std::io::Error::other(format!("the HTTP server task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<ServerConfig>();
        assert_send_sync::<ServerError>();
        assert_send_sync::<ShutdownReport>();
        assert_send_sync::<ClusterNode>();
        assert_send_sync::<ClusterStatus>();
        assert_send_sync::<ClusterError>();
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let cases = [
            (
                ServerConfig::default().max_concurrent_requests(0),
                "max_concurrent_requests",
            ),
            (ServerConfig::default().max_body_bytes(0), "max_body_bytes"),
            (
                ServerConfig::default().participant_timeout(Duration::ZERO),
                "participant_timeout",
            ),
            (ServerConfig::default().bearer_token(""), "bearer_token"),
            (
                ServerConfig::default().max_connections(0),
                "max_connections",
            ),
            (
                ServerConfig::default().max_connections(ServerConfig::MAX_CONNECTIONS_LIMIT + 1),
                "max_connections",
            ),
            (
                ServerConfig::default().header_read_timeout(Duration::ZERO),
                "header_read_timeout",
            ),
            (
                ServerConfig::default().body_read_timeout(Duration::ZERO),
                "body_read_timeout",
            ),
            (
                ServerConfig::default().idle_timeout(Duration::ZERO),
                "idle_timeout",
            ),
            (
                ServerConfig::default().bearer_token("two words"),
                "bearer_token",
            ),
        ];
        for (config, setting) in cases {
            assert!(
                matches!(config.validate(None), Err(ServerError::InvalidSetting { setting: s, .. }) if s == setting),
                "{setting}"
            );
        }
        assert!(ServerConfig::default().validate(None).is_ok());
    }

    #[test]
    fn the_openapi_document_serializes() {
        let doc: serde_json::Value = serde_json::from_slice(&openapi::document().unwrap()).unwrap();
        assert!(doc["paths"]["/transactions/{id}/commit"]["post"].is_object());
    }
}
