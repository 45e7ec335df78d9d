//! [`participant_router`]: serve any [`Participant`] over HTTP.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dtxn::{CallContext, Participant, ParticipantError, Payload, Phase, PreparedResult};

use crate::wire::{ErrorBody, PhaseRequest, VoteResponse, WIRE_VERSION};

/// An axum [`Router`] serving `participant` under the [wire
/// contract](crate::wire): `POST /prepare`, `POST /commit` and
/// `POST /rollback`. Nest it wherever the service wants it and register
/// that URL with the coordinator.
///
/// The participant receives each call through
/// [`Participant::prepare_with`], [`commit_with`](Participant::commit_with)
/// and [`rollback_with`](Participant::rollback_with), whose
/// [`CallContext`] holds the request's attempt number, payload (the JSON
/// text, unchanged) and outcome URL; participants that implement only the
/// plain methods get those, as in process. A request of another wire
/// [`version`](crate::wire::WIRE_VERSION) is refused with `400
/// unsupported_version` before the participant sees it.
///
/// To make the service idempotent (duplicates, empty rollbacks,
/// suspended prepares) in one line, serve the `dtxn-participant` crate's
/// barrier-guarded participant: `participant_router(Arc::new(Guarded::new(pool, branch)))`.
///
/// Each call runs in a task of its own, so a coordinator that hangs up (its
/// timeout passed) does not cancel the participant half-way through an
/// operation; a panic becomes a `500` (retried for commit and rollback, a
/// failed call for prepare). A transient [`ParticipantError`] becomes a
/// `503`, a permanent one a `422`. Malformed requests get a `4xx` with an
/// [`ErrorBody`].
///
/// ```no_run
/// use std::sync::Arc;
/// use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
///
/// struct Inventory;
///
/// #[async_trait]
/// impl Participant for Inventory {
///     fn name(&self) -> &str { "inventory" }
///     async fn prepare(&self, _: TransactionId) -> PreparedResult { PreparedResult::Ready }
///     async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
///     async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// }
///
/// # async fn serve() -> std::io::Result<()> {
/// let app = axum::Router::new()
///     .nest("/2pc", dtxn_http::participant_router(Arc::new(Inventory)));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7002").await?;
/// axum::serve(listener, app).await // register http://127.0.0.1:7002/2pc/
/// # }
/// ```
pub fn participant_router(participant: Arc<dyn Participant>) -> Router {
    participant_router_with(participant, RouterConfig::default())
}

/// [`participant_router`] with settings: with
/// [`RouterConfig::bearer_token`], every request (any path) must carry
/// `Authorization: Bearer <token>`; one without it, or with another
/// token, is answered `401 unauthorized` with an [`ErrorBody`] and a
/// `WWW-Authenticate: Bearer` header, and never reaches the participant.
/// The token is compared in constant time.
///
/// The coordinator presents the token with
/// [`HttpParticipantBuilder::bearer_token`](crate::HttpParticipantBuilder::bearer_token)
/// (or `dtxn serve --participant-token NAME=TOKEN`). A `401` to
/// `prepare` is a failed call: the transaction aborts.
///
/// ```
/// # use std::sync::Arc;
/// # use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
/// # struct Inventory;
/// # #[async_trait]
/// # impl Participant for Inventory {
/// #     fn name(&self) -> &str { "inventory" }
/// #     async fn prepare(&self, _: TransactionId) -> PreparedResult { PreparedResult::Ready }
/// #     async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// #     async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// # }
/// use dtxn_http::{participant_router_with, RouterConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In production, read it from the environment (`INVENTORY_TOKEN`).
/// let token = "s3cret-token";
/// let app = axum::Router::new().nest(
///     "/2pc",
///     participant_router_with(Arc::new(Inventory), RouterConfig::default().bearer_token(token)?),
/// );
/// # let _ = app; Ok(()) }
/// ```
pub fn participant_router_with(participant: Arc<dyn Participant>, config: RouterConfig) -> Router {
    let router = Router::new()
        .route("/prepare", post(prepare))
        .route("/commit", post(commit))
        .route("/rollback", post(rollback))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(participant);
    match config.bearer_token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        )),
        None => router,
    }
}

/// Settings of [`participant_router_with`]. The default requires no
/// authentication (as [`participant_router`]) and accepts request bodies
/// up to [`DEFAULT_MAX_BODY_BYTES`](Self::DEFAULT_MAX_BODY_BYTES).
#[derive(Clone)]
#[must_use = "a RouterConfig does nothing until given to participant_router_with"]
pub struct RouterConfig {
    bearer_token: Option<String>,
    max_body_bytes: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Why a [`RouterConfig`] setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterConfigError {
    /// The bearer token is empty or not visible ASCII (it is not quoted:
    /// it is a secret).
    #[error("the bearer token must be non-empty visible ASCII")]
    InvalidBearerToken,
    /// The body limit is below [`RouterConfig::MIN_BODY_BYTES`].
    #[error("max_body_bytes must be at least {min} bytes", min = RouterConfig::MIN_BODY_BYTES)]
    BodyLimitTooSmall,
}

impl RouterConfig {
    /// Default of [`max_body_bytes`](Self::max_body_bytes): 1 MiB, well
    /// above the coordinator server's default payload limit.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// The smallest [`max_body_bytes`](Self::max_body_bytes) accepted: room
    /// for a request without a payload.
    pub const MIN_BODY_BYTES: usize = 1024;

    /// The largest request body accepted, in bytes; a bigger one is
    /// answered `413` with an [`ErrorBody`] (for `prepare`, a failed call:
    /// the transaction aborts). Size it to the largest payload the
    /// service expects plus 1 KiB.
    ///
    /// # Errors
    ///
    /// [`RouterConfigError::BodyLimitTooSmall`] below
    /// [`MIN_BODY_BYTES`](Self::MIN_BODY_BYTES).
    pub fn max_body_bytes(mut self, n: usize) -> Result<Self, RouterConfigError> {
        if n < Self::MIN_BODY_BYTES {
            return Err(RouterConfigError::BodyLimitTooSmall);
        }
        self.max_body_bytes = n;
        Ok(self)
    }

    /// Requires `Authorization: Bearer <token>` on every request. Default:
    /// none. Never shown in `Debug` output.
    ///
    /// # Errors
    ///
    /// [`RouterConfigError::InvalidBearerToken`] unless `token` is
    /// non-empty visible ASCII.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Result<Self, RouterConfigError> {
        let token = token.into();
        if !crate::auth::is_valid_token(&token) {
            return Err(RouterConfigError::InvalidBearerToken);
        }
        self.bearer_token = Some(token);
        Ok(self)
    }
}

impl std::fmt::Debug for RouterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterConfig")
            // Never print the secret.
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// Refuses requests without `Authorization: Bearer <token>` with a `401`.
async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    match crate::auth::check_bearer(request.headers(), &token) {
        crate::auth::Check::Valid => next.run(request).await,
        refused => {
            tracing::debug!(
                path = request.uri().path(),
                "refused: {}",
                refused.message()
            );
            let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", refused.message());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

type Body = Result<Json<PhaseRequest>, JsonRejection>;

/// The call context of a request, or the answer refusing it.
fn context(body: Body, phase: Phase) -> Result<CallContext, Box<Response>> {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return Err(Box::new(rejected(rejection))),
    };
    if request.version != WIRE_VERSION {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "unsupported_version",
            format!(
                "wire contract version {} is not supported; this service speaks version {WIRE_VERSION}",
                request.version
            ),
        )));
    }
    // The JSON text as it came, without a copy of the string.
    let payload = request
        .payload
        .map(|raw| Payload::from(String::from(Box::<str>::from(raw))));
    Ok(CallContext::new(request.transaction_id, phase)
        .with_attempt(request.attempt)
        .with_payload(payload)
        .with_outcome_url(request.outcome_url.map(Arc::from)))
}

async fn prepare(State(p): State<Arc<dyn Participant>>, body: Body) -> Response {
    let cx = match context(body, Phase::Prepare) {
        Ok(cx) => cx,
        Err(response) => return *response,
    };
    let txn = cx.transaction_id();
    match run(&p, cx, |p, cx| async move { p.prepare_with(&cx).await }).await {
        Ok(Ok(vote)) => {
            if let PreparedResult::Aborted(reason) = &vote {
                tracing::debug!(%txn, participant = p.name(), reason, "voted to abort");
            }
            Json(VoteResponse::from(vote)).into_response()
        }
        Ok(Err(e)) => participant_error(e),
        Err(response) => response,
    }
}

async fn commit(State(p): State<Arc<dyn Participant>>, body: Body) -> Response {
    phase2(p, body, Phase::Commit).await
}

async fn rollback(State(p): State<Arc<dyn Participant>>, body: Body) -> Response {
    phase2(p, body, Phase::Rollback).await
}

async fn phase2(p: Arc<dyn Participant>, body: Body, phase: Phase) -> Response {
    let cx = match context(body, phase) {
        Ok(cx) => cx,
        Err(response) => return *response,
    };
    let result = run(&p, cx, move |p, cx| async move {
        if phase == Phase::Commit {
            p.commit_with(&cx).await
        } else {
            p.rollback_with(&cx).await
        }
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => participant_error(e),
        Err(response) => response,
    }
}

/// Runs one participant call in its own task; a panic becomes a `500`.
async fn run<T, F, Fut>(p: &Arc<dyn Participant>, cx: CallContext, call: F) -> Result<T, Response>
where
    F: FnOnce(Arc<dyn Participant>, CallContext) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let txn = cx.transaction_id();
    match tokio::spawn(call(Arc::clone(p), cx)).await {
        Ok(value) => Ok(value),
        Err(e) => {
            let message = if e.is_panic() {
                "the participant panicked"
            } else {
                "the participant call was cancelled"
            };
            tracing::error!(%txn, participant = p.name(), "{message}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "panicked",
                message,
            ))
        }
    }
}

fn rejected(rejection: JsonRejection) -> Response {
    error(rejection.status(), "bad_request", rejection.body_text())
}

fn participant_error(e: ParticipantError) -> Response {
    if e.is_permanent() {
        error(StatusCode::UNPROCESSABLE_ENTITY, "permanent", e.message())
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "transient", e.message())
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: participant services answer POST prepare, commit and rollback",
    )
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}
