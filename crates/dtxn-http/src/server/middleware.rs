//! Layers around the routes: panic safety net, request span and metrics,
//! bearer authentication, body reading under a timeout, load shedding.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tower::BoxError;
use tracing::Instrument;

use super::error::ApiError;
use super::AppState;

/// Turns a panic in a handler into a JSON `500` and logs it. The handlers
/// are written not to panic; this is the safety net.
pub(super) async fn catch_panic(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(%method, path, panic = message, "request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the server failed to handle the request",
            )
            .into_response()
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

/// A span per request, a debug event per answer, and the answer counted in
/// `dtxn_http_requests_total`.
pub(super) async fn observe(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
    );
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), elapsed = ?started.elapsed(), "answered");
        state.metrics.count_response(status);
        response
    }
    .instrument(span)
    .await
}

/// Reads the whole request body, within
/// [`body_read_timeout`](super::ServerConfig::body_read_timeout) and
/// [`max_body_bytes`](super::ServerConfig::max_body_bytes), before the
/// request takes a concurrency slot: a client that stalls mid-body is
/// answered `408 body_timeout` (and its connection closed) without ever
/// holding one.
pub(super) async fn read_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let limited = Limited::new(body, state.max_body_bytes);
    match tokio::time::timeout(state.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the request body is larger than {} bytes",
                state.max_body_bytes
            ),
        )
        .into_response(),
        Ok(Err(e)) => closing(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body could not be read: {e}"),
        )),
        Err(_) => closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {:?}",
                state.body_read_timeout
            ),
        )),
    }
}

/// An error answer after which the connection is closed: what is left of
/// the request on it cannot be trusted.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// With a bearer token configured, refuses requests to any path but
/// `/health` and `/ready` that lack `Authorization: Bearer <token>`.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.bearer_token else {
        return next.run(request).await;
    };
    if matches!(request.uri().path(), "/health" | "/ready") {
        return next.run(request).await;
    }
    match crate::auth::check_bearer(request.headers(), expected) {
        crate::auth::Check::Valid => next.run(request).await,
        refused => unauthorized(refused.message()),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The answer when the concurrency limit is reached (load shedding).
pub(super) async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in progress; retry shortly",
        )
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the request could not be handled: {error}"),
        )
    }
    .retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("planted");
                    }
                    StatusCode::OK
                }),
            )
            .layer(axum::middleware::from_fn(catch_panic));
        let request = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: crate::wire::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "internal_error");
    }
}
