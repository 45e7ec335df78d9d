//! [`ServerError`] (the server cannot start or stopped) and `ApiError` (an
//! error answer to one request).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dtxn::CoordinatorError;

use crate::wire::ErrorBody;
use crate::HttpParticipantError;

/// Why the server could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A known participant's URL is not usable
    /// ([`ServerConfig::participant`](super::ServerConfig::participant)).
    #[error("known participant {name:?}: {source}")]
    InvalidParticipant {
        /// The participant's name.
        name: String,
        /// What is wrong with its URL.
        #[source]
        source: HttpParticipantError,
    },
    /// Two known participants share a name.
    #[error("known participant {name:?} is configured twice")]
    DuplicateParticipant {
        /// The name.
        name: String,
    },
    /// A participant token or header
    /// ([`ServerConfig::participant_token`](super::ServerConfig::participant_token),
    /// [`ServerConfig::participant_header`](super::ServerConfig::participant_header))
    /// names no known participant, or a second token names the same one.
    #[error("credentials for participant {name:?}: {reason}")]
    InvalidCredentials {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A known participant's URL points at this server's own API.
    #[error("known participant {name:?} at {url} is this coordinator itself")]
    ParticipantIsThisServer {
        /// The participant's name.
        name: String,
        /// Its URL.
        url: String,
    },
    /// A setting is out of range.
    #[error("invalid server setting {setting}: {reason}")]
    InvalidSetting {
        /// The [`ServerConfig`](super::ServerConfig) setter.
        setting: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The HTTP client shared by all participants could not be built.
    #[error(transparent)]
    Client(HttpParticipantError),
    /// The OpenAPI document could not be serialized.
    #[error("cannot serialize the OpenAPI document: {0}")]
    OpenApi(#[source] serde_json::Error),
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

/// An error answer: a status, a stable code and a message, sent as a JSON
/// [`ErrorBody`].
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the coordinator is shutting down: no new transactions",
        )
        .retry_after(1)
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        let message = e.to_string();
        match e {
            CoordinatorError::NotFound { .. } => Self::not_found(message),
            CoordinatorError::InvalidState { .. } => {
                Self::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            CoordinatorError::TooManyParticipants { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_participants",
                message,
            ),
            CoordinatorError::CapacityExceeded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "capacity_exceeded", message)
                    .retry_after(1)
            }
            CoordinatorError::ShuttingDown => Self::shutting_down(),
            CoordinatorError::NoLoggedHazard { .. } => {
                Self::new(StatusCode::NOT_FOUND, "no_logged_hazard", message)
            }
            CoordinatorError::NotRecoverable { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not_recoverable", message)
            }
            // This node was fenced out of its cluster: another node owns
            // its transactions; a retry through the balancer reaches it.
            CoordinatorError::Fenced => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "lease_lost", message).retry_after(1)
            }
            // A kind of error newer than this server: an internal error,
            // with the library's message.
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "coordinator_error",
                message,
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::JsonDataError(_) => "invalid_body",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "bad_request",
        };
        Self::new(rejection.status(), code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtxn::{Operation, TransactionId, TransactionState};

    #[test]
    fn coordinator_errors_map_to_client_errors_or_503() {
        let txn = TransactionId::from_u128(1);
        let cases = [
            (CoordinatorError::NotFound { txn }, 404, "not_found"),
            (
                CoordinatorError::InvalidState {
                    txn,
                    current: TransactionState::Active,
                    operation: Operation::Commit,
                },
                409,
                "invalid_state",
            ),
            (
                CoordinatorError::TooManyParticipants { txn, limit: 1 },
                422,
                "too_many_participants",
            ),
            (
                CoordinatorError::CapacityExceeded { limit: 1 },
                429,
                "capacity_exceeded",
            ),
            (CoordinatorError::ShuttingDown, 503, "shutting_down"),
            (CoordinatorError::Fenced, 503, "lease_lost"),
            (
                CoordinatorError::NoLoggedHazard { txn },
                404,
                "no_logged_hazard",
            ),
            (
                CoordinatorError::NotRecoverable {
                    txn,
                    participant: "p".into(),
                },
                422,
                "not_recoverable",
            ),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }
}
