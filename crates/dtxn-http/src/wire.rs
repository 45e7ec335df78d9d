//! The participant wire contract: what the coordinator sends to a
//! participant service and what it accepts back.
//!
//! A participant service exposes three endpoints under its base URL. Each
//! takes `POST` with a JSON body naming the transaction:
//!
//! ```text
//! POST {base}/prepare    {"transaction_id": "<id>"}
//! POST {base}/commit     {"transaction_id": "<id>"}
//! POST {base}/rollback   {"transaction_id": "<id>"}
//! ```
//!
//! `<id>` is a [`TransactionId`] in its display form: 32 hex digits,
//! hyphenated like a UUID (`7f3a9c0e-5b1d-2f4a-0000-000000000001`).
//!
//! # `prepare`
//!
//! | answer | meaning for the coordinator |
//! | --- | --- |
//! | `200` `{"vote": "ready"}` | [`PreparedResult::Ready`] |
//! | `200` `{"vote": "read_only"}` | [`PreparedResult::ReadOnly`] (no phase 2 follows) |
//! | `200` `{"vote": "aborted", "reason": "out of stock"}` | [`PreparedResult::Aborted`] with the reason |
//! | `409 Conflict` with an [`ErrorBody`] | a refusal: [`PreparedResult::Aborted`] with the body's `error` |
//! | any other status, a body that is not a vote, a connection error or a timeout | a *failed call*: the transaction aborts and this participant is sent `rollback` (it may have prepared) |
//!
//! An `aborted` vote or a `409` promises that the service has already
//! undone its work: it gets no `rollback`.
//!
//! # `commit` and `rollback`
//!
//! | answer | meaning |
//! | --- | --- |
//! | any `2xx` (body ignored) | acknowledged |
//! | `5xx`, `408`, `429`, a connection error or a timeout | transient failure: retried under the coordinator's retry policy |
//! | any other `4xx` (say `404`, `422`) | permanent failure: not retried; reported as a heuristic hazard |
//!
//! Both must be idempotent (the coordinator may repeat them), and
//! `rollback` must answer `2xx` for a transaction the service never
//! prepared. Error bodies, when present, are an [`ErrorBody`].
//!
//! Of a participant's answer, the coordinator keeps the status and at most
//! the `reason` of a vote or the `error` of an [`ErrorBody`], cut to
//! [`MAX_REASON_CHARS`]; other bodies are never passed on.
//!
//! [`participant_router`](crate::participant_router) implements this
//! contract for any [`Participant`](dtxn::Participant);
//! [`HttpParticipant`](crate::HttpParticipant) is its client.

use dtxn::{PreparedResult, TransactionId};
use serde::{Deserialize, Serialize};

/// The most characters of a participant's own words (an aborted vote's
/// `reason`, an error answer's `error`) that the coordinator keeps; the
/// rest is cut and marked `…`. Nothing else of a participant's answer is
/// passed on.
pub const MAX_REASON_CHARS: usize = 256;

/// The body of every participant call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PhaseRequest {
    /// The transaction: 32 hex digits, hyphenated like a UUID.
    #[cfg_attr(feature = "server", schema(value_type = String, example = "7f3a9c0e-5b1d-2f4a-0000-000000000001"))]
    pub transaction_id: TransactionId,
}

/// A participant's vote, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum Vote {
    /// Prepared; will commit or roll back when told.
    Ready,
    /// Changed nothing; needs no phase 2.
    ReadOnly,
    /// Cannot commit; already undone. `reason` says why.
    Aborted,
}

/// The body of a `200` answer to `prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VoteResponse {
    /// The vote.
    pub vote: Vote,
    /// Why, for an `aborted` vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<PreparedResult> for VoteResponse {
    fn from(result: PreparedResult) -> Self {
        match result {
            PreparedResult::Ready => Self {
                vote: Vote::Ready,
                reason: None,
            },
            PreparedResult::ReadOnly => Self {
                vote: Vote::ReadOnly,
                reason: None,
            },
            PreparedResult::Aborted(reason) => Self {
                vote: Vote::Aborted,
                reason: Some(reason),
            },
        }
    }
}

impl From<VoteResponse> for PreparedResult {
    fn from(response: VoteResponse) -> Self {
        match response.vote {
            Vote::Ready => Self::Ready,
            Vote::ReadOnly => Self::ReadOnly,
            Vote::Aborted => Self::Aborted(
                response
                    .reason
                    .unwrap_or_else(|| "no reason given".to_owned()),
            ),
        }
    }
}

/// The JSON body of every error answer, from participant services and from
/// the coordinator server alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `not_found` or
    /// `invalid_state`.
    pub code: String,
    /// A human-readable description.
    pub error: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            error: error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_round_trip_through_json() {
        for result in [
            PreparedResult::Ready,
            PreparedResult::ReadOnly,
            PreparedResult::Aborted("out of stock".into()),
        ] {
            let json = serde_json::to_string(&VoteResponse::from(result.clone())).unwrap();
            let back: VoteResponse = serde_json::from_str(&json).unwrap();
            assert_eq!(PreparedResult::from(back), result);
        }
        assert_eq!(
            serde_json::to_string(&VoteResponse::from(PreparedResult::ReadOnly)).unwrap(),
            r#"{"vote":"read_only"}"#
        );
    }

    #[test]
    fn an_aborted_vote_without_reason_still_aborts() {
        let v: VoteResponse = serde_json::from_str(r#"{"vote":"aborted"}"#).unwrap();
        assert_eq!(
            PreparedResult::from(v),
            PreparedResult::Aborted("no reason given".into())
        );
    }
}
