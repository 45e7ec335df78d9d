//! The route handlers, their extractors and their OpenAPI descriptions.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dtxn::{Registration, TransactionId};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::error::ApiError;
use super::metrics::{self, Phase};
use super::model::{
    DecisionScope, DecisionsQuery, HealthResponse, HealthStatus, ListQuery, LoggedDecisionBody,
    LoggedDecisionList, OutcomeQueryResponse, OutcomeResponse, PrepareResponse, ReadyResponse,
    ReadyStatus, RegisterRequest, RegisterResponse, ReportResponse, TransactionList,
    TransactionStatus, TxnState, UnfinishedTransaction,
};
use super::AppState;
use crate::wire::ErrorBody;

type AppResult<T> = Result<T, ApiError>;
type St = State<Arc<AppState>>;

/// The transaction id in the path; a malformed one is a `400 invalid_id`.
pub(super) struct TxnId(pub TransactionId);

impl<S: Send + Sync> FromRequestParts<S> for TxnId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let invalid = |detail: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", detail);
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| invalid(e.body_text()))?;
        raw.parse().map(TxnId).map_err(|e| invalid(format!("{e}")))
    }
}

/// A JSON body whose rejections are [`ApiError`]s (`400`, `413`, `415`,
/// `422`).
pub(super) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// Begins a transaction.
#[utoipa::path(
    post,
    path = "/transactions",
    tag = "transactions",
    responses(
        (status = 201, description = "Begun, in state `active`", body = TransactionStatus,
            headers(("Location" = String, description = "The transaction's URL"))),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 429, description = "`capacity_exceeded`: too many unfinished transactions; retry later", body = ErrorBody),
        (status = 503, description = "`shutting_down`, or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn begin(State(state): St) -> AppResult<Response> {
    if state.draining.load(Ordering::Acquire) {
        return Err(ApiError::shutting_down());
    }
    let id = state.coordinator.begin_transaction()?;
    tracing::debug!(txn = %id, "begun");
    let body = TransactionStatus {
        id,
        state: TxnState::Active,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    // Always valid: hex digits and hyphens.
    if let Ok(location) = HeaderValue::try_from(format!("/transactions/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Lists unfinished transactions, oldest first.
#[utoipa::path(
    get,
    path = "/transactions",
    tag = "transactions",
    params(ListQuery),
    responses(
        (status = 200, description = "Unfinished transactions", body = TransactionList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): St,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> AppResult<Json<TransactionList>> {
    let Query(query) = query?;
    let transactions = state
        .coordinator
        .unfinished_transactions()
        .iter()
        .map(UnfinishedTransaction::from)
        .filter(|t| query.state.is_none_or(|s| s == t.state))
        .filter(|t| query.in_doubt.is_none_or(|d| d == t.in_doubt))
        .collect();
    Ok(Json(TransactionList { transactions }))
}

/// A transaction's state.
#[utoipa::path(
    get,
    path = "/transactions/{id}",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "Its state", body = TransactionStatus),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown, or finished and forgotten", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn get_state(
    State(state): St,
    TxnId(id): TxnId,
) -> AppResult<Json<TransactionStatus>> {
    let current = state.coordinator.get_transaction_state(id)?;
    Ok(Json(TransactionStatus {
        id,
        state: current.into(),
    }))
}

/// The Commit decisions held in the decision log whose phase 2 has not
/// ended with every participant acknowledged: still being delivered, or
/// committed with participants given up on (until resolved). Empty
/// without `--log`. In a cluster, every live node's (each entry naming its
/// `node`; nodes that could not be asked are listed in `unreachable`),
/// unless `?scope=node`.
#[utoipa::path(
    get,
    path = "/admin/decisions",
    tag = "admin",
    params(DecisionsQuery),
    responses(
        (status = 200, description = "The logged decisions", body = LoggedDecisionList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "`cluster_unavailable`: the cluster's nodes cannot be listed (with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn logged_decisions(
    State(state): St,
    headers: HeaderMap,
    query: Result<Query<DecisionsQuery>, QueryRejection>,
) -> AppResult<Json<LoggedDecisionList>> {
    let Query(query) = query?;
    let node = state.cluster.as_ref().map(|c| c.node_id().to_owned());
    let decisions: Vec<_> = state
        .coordinator
        .logged_decisions()
        .into_iter()
        .map(|d| LoggedDecisionBody {
            id: d.txn,
            state: d.state.into(),
            hazards: d.hazards,
            node: node.clone(),
        })
        .collect();
    let local_only = query.scope == Some(DecisionScope::Node)
        || headers.contains_key(super::FORWARDED_BY_HEADER);
    match &state.cluster {
        Some(cluster) if !local_only => Ok(Json(
            cluster
                .gather_decisions(decisions, headers.get(header::AUTHORIZATION))
                .await?,
        )),
        _ => Ok(Json(LoggedDecisionList {
            decisions,
            unreachable: Vec::new(),
        })),
    }
}

/// Makes now the phase-2 retries of a transaction that wait out their
/// backoff (once a participant is back, say). Answers its state.
#[utoipa::path(
    post,
    path = "/transactions/{id}/retry",
    tag = "admin",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "Its state", body = TransactionStatus),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn retry(
    State(state): St,
    TxnId(id): TxnId,
) -> AppResult<Json<TransactionStatus>> {
    let current = state.coordinator.retry_now(id)?;
    Ok(Json(TransactionStatus {
        id,
        state: current.into(),
    }))
}

/// Marks resolved a logged decision committed with participants given up
/// on, once an operator made them commit by hand: the decision leaves the
/// log.
#[utoipa::path(
    post,
    path = "/transactions/{id}/resolve",
    tag = "admin",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 204, description = "Resolved"),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`no_logged_hazard`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn resolve(State(state): St, TxnId(id): TxnId) -> AppResult<StatusCode> {
    state.coordinator.resolve_hazard(id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What was decided for a transaction: `committed`, `aborted`, `pending`
/// (not decided yet) or `unknown` (not held here: never begun, forgotten
/// after its retention, or begun before a restart). For participants that
/// prepared and lost contact with their client. `unknown` is an answer, not
/// an error, and never means aborted.
#[utoipa::path(
    get,
    path = "/transactions/{id}/outcome",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "What was decided", body = OutcomeQueryResponse),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn outcome(State(state): St, TxnId(id): TxnId) -> Json<OutcomeQueryResponse> {
    Json(OutcomeQueryResponse {
        id,
        outcome: state.coordinator.outcome(id).into(),
    })
}

/// A transaction's detailed report: participants, votes, phase 2, timings.
#[utoipa::path(
    get,
    path = "/transactions/{id}/report",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "The report", body = ReportResponse),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn report(State(state): St, TxnId(id): TxnId) -> AppResult<Json<ReportResponse>> {
    let report = state.coordinator.transaction_report(id)?;
    Ok(Json(ReportResponse::from(&report)))
}

/// Registers a participant service: a known one by name, or one by name and
/// URL on a host the server allows. Registering the same service again is
/// `already_registered` and changes nothing.
#[utoipa::path(
    post,
    path = "/transactions/{id}/participants",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 200, description = "`already_registered`: nothing changed", body = RegisterResponse),
        (status = 400, description = "`invalid_id`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "`ad_hoc_participants_disabled` (no allowed hosts), `participant_host_not_allowed`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive in time", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the transaction is no longer `active`", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `payload_too_large` (over `max_payload_bytes`)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not application/json", body = ErrorBody),
        (status = 422, description = "`unknown_participant`, `invalid_participant_url` (including this coordinator's own address), `invalid_participant_name`, `invalid_header`, `too_many_participants`, `invalid_body`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn register(
    State(state): St,
    TxnId(id): TxnId,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> AppResult<Response> {
    let participant = state.participants.resolve(
        &request.name,
        request.url.as_deref(),
        request.headers.as_ref(),
    )?;
    let registration = match request.payload {
        None => state.coordinator.register_participant(id, participant)?,
        Some(payload) => {
            let size = payload.get().len();
            if size > state.max_payload_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the payload is {size} bytes of JSON; this server accepts at most {}",
                        state.max_payload_bytes
                    ),
                ));
            }
            // The JSON text as it came, moved rather than copied into a string.
            let text = String::from(Box::<str>::from(payload));
            state
                .coordinator
                .register_participant_with_payload(id, participant, text)?
        }
    };
    tracing::debug!(txn = %id, participant = request.name, ?registration, "registered");
    let status = match registration {
        Registration::Registered => StatusCode::CREATED,
        Registration::AlreadyRegistered => StatusCode::OK,
    };
    Ok((status, Json(RegisterResponse::from(registration))).into_response())
}

/// Runs phase 1 and answers its outcome. Repeats answer the same outcome.
///
/// Cancel safe: if the client hangs up, the coordinator hands the prepare
/// calls to a task of its own and phase 1 goes on; asking again answers
/// the outcome.
#[utoipa::path(
    post,
    path = "/transactions/{id}/prepare",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "`prepared`, or `aborted` with the reason", body = PrepareResponse),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn prepare(
    State(state): St,
    TxnId(id): TxnId,
) -> AppResult<Json<PrepareResponse>> {
    let started = Instant::now();
    let outcome = state.coordinator.prepare_transaction(id).await?;
    state
        .metrics
        .observe_phase(Phase::Prepare, started.elapsed());
    tracing::debug!(txn = %id, prepared = outcome.is_prepared(), "prepare answered");
    Ok(Json(PrepareResponse::from(&outcome)))
}

/// Commits a prepared transaction and answers once phase 2 is done.
///
/// Cancel safe: the decision is taken at once; if the client hangs up, the
/// coordinator hands phase 2 to a task of its own, which runs it to the end.
#[utoipa::path(
    post,
    path = "/transactions/{id}/commit",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "The outcome (decision `commit`; hazards listed)", body = OutcomeResponse),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_state`: not prepared yet, or the decision was `abort`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn commit(State(state): St, TxnId(id): TxnId) -> AppResult<Json<OutcomeResponse>> {
    let started = Instant::now();
    let outcome = state.coordinator.commit_transaction(id).await?;
    state
        .metrics
        .observe_phase(Phase::Commit, started.elapsed());
    tracing::debug!(txn = %id, hazards = outcome.hazards.len(), "committed");
    Ok(Json(OutcomeResponse::from(&outcome)))
}

/// Rolls back a transaction not yet decided `commit` and answers once
/// rollback is delivered. Repeats answer the same outcome.
///
/// Cancel safe, like commit.
#[utoipa::path(
    post,
    path = "/transactions/{id}/rollback",
    tag = "transactions",
    params(("id" = String, Path, description = "Transaction id, 32 hex digits")),
    responses(
        (status = 200, description = "The outcome (decision `abort`)", body = OutcomeResponse),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the decision was `commit`", body = ErrorBody),
        (status = 503, description = "`owner_unavailable`, `cluster_unavailable` (cluster mode: the owning node cannot be reached or found; with `Retry-After`), or `overloaded`", body = ErrorBody),
    )
)]
pub(super) async fn rollback(
    State(state): St,
    TxnId(id): TxnId,
) -> AppResult<Json<OutcomeResponse>> {
    let started = Instant::now();
    let outcome = state.coordinator.rollback_transaction(id).await?;
    state
        .metrics
        .observe_phase(Phase::Rollback, started.elapsed());
    tracing::debug!(txn = %id, "rolled back");
    Ok(Json(OutcomeResponse::from(&outcome)))
}

/// Liveness: the process is up and answering. Always `200` (`status` says
/// `draining` while shutting down); never shed under load. Needs no token.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Alive", body = HealthResponse),
    )
)]
pub(super) async fn health(State(state): St) -> Json<HealthResponse> {
    let unfinished = state.coordinator.stats().unfinished;
    let status = if state.draining.load(Ordering::Acquire) {
        HealthStatus::Draining
    } else {
        HealthStatus::Ok
    };
    Json(HealthResponse { status, unfinished })
}

/// Readiness: whether new work is welcome. `503` while shutting down,
/// while a cluster node lacks its lease or is fenced off, or while every
/// concurrency slot is taken; never shed itself. Needs no token.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "`ready`", body = ReadyResponse),
        (status = 503, description = "`shutting_down`, `lease_lost` (cluster mode) or `saturated`", body = ReadyResponse),
    )
)]
pub(super) async fn ready(State(state): St) -> Response {
    let unfinished = state.coordinator.stats().unfinished;
    let lease_lost = state.cluster.as_ref().is_some_and(|c| {
        let status = c.status();
        !status.lease_held || status.fenced
    });
    let status = if state.draining.load(Ordering::Acquire) {
        ReadyStatus::ShuttingDown
    } else if lease_lost {
        ReadyStatus::LeaseLost
    } else if state.api_slots.available_permits() == 0 {
        ReadyStatus::Saturated
    } else {
        ReadyStatus::Ready
    };
    let code = if status == ReadyStatus::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ReadyResponse { status, unfinished })).into_response()
}

/// Prometheus metrics (text format 0.0.4): `dtxn_transactions_total`,
/// `dtxn_hazards_total`, `dtxn_transactions_in_flight`,
/// `dtxn_phase_duration_seconds`, `dtxn_http_requests_total`; in a
/// cluster also `dtxn_cluster_lease_held`, `dtxn_cluster_fenced`,
/// `dtxn_cluster_owned_incarnations`, `dtxn_cluster_takeovers_total`,
/// `dtxn_cluster_adopted_decisions_total`, `dtxn_forwarded_requests_total`
/// and `dtxn_forward_failures_total`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn metrics(State(state): St) -> AppResult<Response> {
    let text = state.metrics.encode().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "the metrics could not be encoded",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn openapi(State(state): St) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// The participant side of the wire contract as an OpenAPI 3 document:
/// what a participant service serves, to generate one in any language.
#[utoipa::path(
    get,
    path = "/openapi/participant.json",
    tag = "operations",
    responses(
        (status = 200, description = "The participant service's OpenAPI document", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    )
)]
pub(super) async fn participant_openapi(State(state): St) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.participant_openapi.clone(),
    )
        .into_response()
}

/// Any path that is not a route.
pub(super) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// A route asked with the wrong method.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not answer {method}", uri.path()),
    )
}
