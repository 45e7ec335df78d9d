//! The participant wire contract, version 1: what the coordinator sends
//! to a participant service and what it accepts back.
//!
//! A participant service exposes three endpoints under its base URL. Each
//! takes `POST` with a JSON body ([`PhaseRequest`]):
//!
//! ```text
//! POST {base}/prepare    {"version": 1, "transaction_id": "<id>", "attempt": 1,
//!                         "payload": {...}, "outcome_url": "http://coordinator/transactions/<id>/outcome"}
//! POST {base}/commit     (the same fields; attempt counts retries: 1, 2, ...)
//! POST {base}/rollback   (the same fields)
//! ```
//!
//! - `version` is [`WIRE_VERSION`]. A service must refuse a version it does
//!   not know with `400` and an [`ErrorBody`] whose code is
//!   `unsupported_version` ([`participant_router`](crate::participant_router)
//!   does); for `prepare` that is a failed call (the transaction aborts),
//!   for phase 2 a permanent failure. An absent `version` means 1.
//! - `transaction_id` is a [`TransactionId`] in its display form: 32 hex
//!   digits, hyphenated like a UUID (`7f3a9c0e-5b1d-2f4a-0000-000000000001`).
//! - `attempt` is 1 for the first call of a phase and counts phase-2
//!   retries; absent means 1.
//! - `payload`, when present, is the JSON value registered with this
//!   participant for this transaction (`POST /transactions/{id}/participants`
//!   with `"payload"`), sent unchanged with every call.
//! - `outcome_url`, when the coordinator advertises its address, is where
//!   the service may `GET` what was decided: `{"outcome": "committed" |
//!   "aborted" | "pending" | "unknown"}` ([`OutcomeStatus`](dtxn::OutcomeStatus)).
//!   A service that prepared and then hears nothing asks there; on
//!   `pending` or `unknown` it must keep waiting (it must never presume
//!   abort from `unknown`: a coordinator without a durable log forgets).
//!
//! Services must ignore fields they do not know: later minor revisions may
//! add some without changing `version`. The coordinator's OpenAPI document
//! for this side is served at `GET /openapi/participant.json` (and by
//! [`server::participant_openapi`](crate::server::participant_openapi)), so a
//! service in any language can be generated from it.
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
//! prepared. Error bodies, when present, are an [`ErrorBody`]. The
//! barrier of the `dtxn-participant` crate gives a service all of this
//! inside its own database transaction.
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
use serde_json::value::RawValue;

/// The version of the wire contract this crate speaks, sent as `version`
/// in every [`PhaseRequest`].
pub const WIRE_VERSION: u32 = 1;

/// The most characters of a participant's own words (an aborted vote's
/// `reason`, an error answer's `error`) that the coordinator keeps; the
/// rest is cut and marked `…`. Nothing else of a participant's answer is
/// passed on.
pub const MAX_REASON_CHARS: usize = 256;

/// The body of every participant call (`prepare`, `commit`, `rollback`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PhaseRequest {
    /// The wire contract's version: [`WIRE_VERSION`]. Absent means 1.
    #[serde(default = "version_one")]
    #[cfg_attr(feature = "server", schema(example = 1, minimum = 1))]
    pub version: u32,
    /// The transaction: 32 hex digits, hyphenated like a UUID.
    #[cfg_attr(feature = "server", schema(value_type = String, example = "7f3a9c0e-5b1d-2f4a-0000-000000000001"))]
    pub transaction_id: TransactionId,
    /// 1 for the first call of a phase; phase-2 retries count up. Absent
    /// means 1.
    #[serde(default = "attempt_one")]
    #[cfg_attr(feature = "server", schema(example = 1, minimum = 1))]
    pub attempt: u32,
    /// The JSON value registered with this participant for this
    /// transaction, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>, example = json!({"email": "zoë@example.com"})))]
    pub payload: Option<Box<RawValue>>,
    /// Where to `GET` what the coordinator decided, when it advertises
    /// its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "server",
        schema(
            example = "http://127.0.0.1:8080/transactions/7f3a9c0e-5b1d-2f4a-0000-000000000001/outcome"
        )
    )]
    pub outcome_url: Option<String>,
}

impl PhaseRequest {
    /// A version-1 request for the first attempt, with nothing else.
    pub fn new(transaction_id: TransactionId) -> Self {
        Self {
            version: WIRE_VERSION,
            transaction_id,
            attempt: 1,
            payload: None,
            outcome_url: None,
        }
    }
}

impl PartialEq for PhaseRequest {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.transaction_id == other.transaction_id
            && self.attempt == other.attempt
            && self.payload.as_ref().map(|p| p.get()) == other.payload.as_ref().map(|p| p.get())
            && self.outcome_url == other.outcome_url
    }
}

fn version_one() -> u32 {
    1
}

fn attempt_one() -> u32 {
    1
}

/// [`PhaseRequest`] as the coordinator sends it, borrowing the payload
/// rather than copying it for each call.
#[derive(Serialize)]
pub(crate) struct OutgoingRequest<'a> {
    pub version: u32,
    pub transaction_id: TransactionId,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_url: Option<&'a str>,
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
    fn phase_requests_default_to_version_one_and_the_first_attempt() {
        let id = "7f3a9c0e-5b1d-2f4a-0000-000000000001";
        let old: PhaseRequest =
            serde_json::from_str(&format!(r#"{{"transaction_id":"{id}"}}"#)).unwrap();
        assert_eq!(old, PhaseRequest::new(id.parse().unwrap()));
        // Unknown fields are ignored: later revisions may add some.
        let new: PhaseRequest = serde_json::from_str(&format!(
            r#"{{"version":1,"transaction_id":"{id}","attempt":3,"payload":{{"name":"Zoë 🦀","n":[1,2]}},"outcome_url":"http://c/x","later":true}}"#
        ))
        .unwrap();
        assert_eq!(new.attempt, 3);
        assert_eq!(new.payload.unwrap().get(), r#"{"name":"Zoë 🦀","n":[1,2]}"#);
    }

    #[test]
    fn the_outgoing_request_is_what_participants_parse() {
        let payload: &RawValue = serde_json::from_str(r#"[1, "two"]"#).unwrap();
        let sent = OutgoingRequest {
            version: WIRE_VERSION,
            transaction_id: TransactionId::from_u128(9),
            attempt: 2,
            payload: Some(payload),
            outcome_url: Some("http://c/transactions/x/outcome"),
        };
        let json = serde_json::to_string(&sent).unwrap();
        let got: PhaseRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(got.version, 1);
        assert_eq!(got.transaction_id, TransactionId::from_u128(9));
        assert_eq!(got.attempt, 2);
        assert_eq!(got.payload.unwrap().get(), r#"[1, "two"]"#);
        assert_eq!(
            got.outcome_url.as_deref(),
            Some("http://c/transactions/x/outcome")
        );
        let bare = OutgoingRequest {
            version: WIRE_VERSION,
            transaction_id: TransactionId::from_u128(9),
            attempt: 1,
            payload: None,
            outcome_url: None,
        };
        assert!(!serde_json::to_string(&bare).unwrap().contains("payload"));
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
