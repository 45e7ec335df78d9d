//! The JSON bodies of the coordinator server's API, with their OpenAPI
//! schemas. Rust clients can deserialize answers into these types.
//!
//! Every enumerated value is `snake_case`, in answers and in requests
//! alike (`"active"`, `"already_registered"`, `"commit"`,
//! `?state=prepared`). Durations are milliseconds, as numbers with at
//! most three decimals (microsecond resolution).

use std::time::Duration;

use dtxn::{
    AbortReason, CallFailure, Decision, Hazard, ParticipantReport, Phase2Status, PrepareOutcome,
    PrepareStatus, PreparedResult, Registration, TransactionId, TransactionOutcome,
    TransactionReport, TransactionState, TransactionSummary,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::wire::Vote;

/// Milliseconds at microsecond resolution. Dividing whole microseconds
/// gives the double nearest the decimal value, which prints as written
/// (`4.015`); `as_secs_f64() * 1000.0` would print `4.015000000000001`.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// A transaction's state ([`TransactionState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// Begun; participants may register.
    Active,
    /// Phase 1 is running.
    Preparing,
    /// Every participant voted yes; waiting for the client's commit or
    /// rollback (*in doubt*).
    Prepared,
    /// Decision Commit; phase 2 in delivery (*in doubt* for participants).
    Committing,
    /// Decision Commit; done.
    Committed,
    /// Decision Abort; rollback in delivery (*in doubt* for participants).
    Aborting,
    /// Decision Abort; done.
    Aborted,
}

impl TxnState {
    /// Whether participants are in doubt: they voted and wait for the
    /// decision (`prepared`), or the decision is still being delivered
    /// (`committing`, `aborting`).
    pub fn is_in_doubt(self) -> bool {
        matches!(self, Self::Prepared | Self::Committing | Self::Aborting)
    }
}

impl From<TransactionState> for TxnState {
    fn from(state: TransactionState) -> Self {
        match state {
            TransactionState::Active => Self::Active,
            TransactionState::Preparing => Self::Preparing,
            TransactionState::Prepared => Self::Prepared,
            TransactionState::Committing => Self::Committing,
            TransactionState::Committed => Self::Committed,
            TransactionState::Aborting => Self::Aborting,
            TransactionState::Aborted => Self::Aborted,
            // A state newer than this server: the nearest known one by
            // what has been decided.
            other => match (other.decision(), other.is_terminal()) {
                (Some(dtxn::Decision::Commit), true) => Self::Committed,
                (Some(dtxn::Decision::Commit), false) => Self::Committing,
                (Some(_), true) => Self::Aborted,
                (Some(_), false) => Self::Aborting,
                (None, _) => Self::Preparing,
            },
        }
    }
}

/// A transaction and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransactionStatus {
    /// The transaction id, 32 hex digits.
    #[schema(value_type = String, example = "7f3a9c0e-5b1d-2f4a-0000-000000000001")]
    pub id: TransactionId,
    /// Its state.
    pub state: TxnState,
}

/// The answer of `GET /admin/decisions`: the Commit decisions held in the
/// decision log whose phase 2 has not ended with every participant
/// acknowledged (empty without `--log`). In a cluster, those of every live
/// node unless `?scope=node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoggedDecisionList {
    /// The decisions, by transaction id.
    pub decisions: Vec<LoggedDecisionBody>,
    /// In a cluster, the ids of the live nodes that could not be asked for
    /// theirs: the list lacks their decisions. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}

/// Which decisions `GET /admin/decisions` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionScope {
    /// Every live node's, in a cluster (the default).
    Cluster,
    /// This node's only.
    Node,
}

/// The query of `GET /admin/decisions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    /// `cluster` (default): in a cluster, every live node's decisions;
    /// `node`: this node's only. The same without a cluster.
    pub scope: Option<DecisionScope>,
}

/// One logged Commit decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoggedDecisionBody {
    /// The transaction id.
    #[schema(value_type = String)]
    pub id: TransactionId,
    /// `committing` while phase 2 is delivered, `committed` once it ended
    /// with participants given up on.
    pub state: TxnState,
    /// The participants given up on: resolve them by hand, then
    /// `POST /transactions/{id}/resolve`.
    pub hazards: Vec<String>,
    /// In a cluster, the id of the node holding the decision (ask it, or
    /// any node, to resolve). Absent without a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The answer of `GET /transactions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TransactionList {
    /// Unfinished transactions, oldest first.
    pub transactions: Vec<UnfinishedTransaction>,
}

/// One unfinished transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnfinishedTransaction {
    /// The transaction id.
    #[schema(value_type = String)]
    pub id: TransactionId,
    /// Its state (never `committed` or `aborted`).
    pub state: TxnState,
    /// Milliseconds since it began.
    pub age_ms: u64,
    /// Registered participants.
    pub participants: usize,
    /// See [`TxnState::is_in_doubt`].
    pub in_doubt: bool,
}

impl From<&TransactionSummary> for UnfinishedTransaction {
    fn from(summary: &TransactionSummary) -> Self {
        let state = TxnState::from(summary.state);
        Self {
            id: summary.txn,
            state,
            age_ms: u64::try_from(summary.age.as_millis()).unwrap_or(u64::MAX),
            participants: summary.participants,
            in_doubt: state.is_in_doubt(),
        }
    }
}

/// Filters of `GET /transactions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only transactions in this state (`active`, `preparing`, `prepared`,
    /// `committing`, `aborting`).
    pub state: Option<TxnState>,
    /// Only transactions that are (`true`) or are not (`false`) in doubt.
    pub in_doubt: Option<bool>,
}

/// The body of `POST /transactions/{id}/participants`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A known participant's name or, with `url`, any name for the service.
    #[schema(example = "users")]
    pub name: String,
    /// The participant service's base URL (ad hoc registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "http://127.0.0.1:7001/2pc/")]
    pub url: Option<String>,
    /// Any JSON value, sent unchanged to this participant with every call
    /// (`prepare`, `commit`, `rollback`) as `payload`. At most
    /// `max_payload_bytes` of JSON text (default 8 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"email": "zoë@example.com", "plan": "free"}))]
    pub payload: Option<Box<serde_json::value::RawValue>>,
    /// Extra headers sent to this participant with every call of this
    /// transaction, as `{"name": "value"}` (at most 16; not `authorization`,
    /// `host`, `content-type`, `content-length`, `connection` or
    /// `transfer-encoding`). Never logged or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!({"x-tenant": "acme"}))]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

impl PartialEq for RegisterRequest {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.url == other.url
            && self.payload.as_ref().map(|p| p.get()) == other.payload.as_ref().map(|p| p.get())
            && self.headers == other.headers
    }
}

/// Whether a participant was new to the transaction ([`Registration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationName {
    /// Added.
    Registered,
    /// The same service (name and URL) was already registered; nothing
    /// changed.
    AlreadyRegistered,
}

/// The answer of `POST /transactions/{id}/participants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// What happened.
    pub registration: RegistrationName,
}

impl From<Registration> for RegisterResponse {
    fn from(registration: Registration) -> Self {
        let registration = match registration {
            Registration::Registered => RegistrationName::Registered,
            Registration::AlreadyRegistered => RegistrationName::AlreadyRegistered,
        };
        Self { registration }
    }
}

/// What a participant call came to when it gave no answer ([`CallFailure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The participant answered with an error (or was unreachable).
    Error,
    /// The participant panicked (in-process participants only).
    Panicked,
    /// The call did not finish within its timeout.
    TimedOut,
}

/// A participant call that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallFailureBody {
    /// How it failed.
    pub kind: FailureKind,
    /// Whether retrying cannot help.
    pub permanent: bool,
    /// What happened, for humans.
    pub message: String,
}

impl From<&CallFailure> for CallFailureBody {
    fn from(failure: &CallFailure) -> Self {
        let kind = match failure {
            CallFailure::Error(_) => FailureKind::Error,
            CallFailure::Panicked(_) => FailureKind::Panicked,
            // Abandoned calls are as unknown as timed-out ones.
            CallFailure::TimedOut | CallFailure::Abandoned => FailureKind::TimedOut,
            // A failure newer than this server; `message` says what it is.
            _ => FailureKind::Error,
        };
        Self {
            kind,
            permanent: failure.is_permanent(),
            message: failure.to_string(),
        }
    }
}

/// Why a transaction was decided Abort ([`AbortReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AbortKind {
    /// A participant voted to abort (`participant`, `index`, `reason`).
    Voted,
    /// A participant's prepare call failed (`participant`, `index`,
    /// `failure`).
    PrepareFailed,
    /// The client rolled back.
    RolledBack,
    /// The transaction's deadline passed.
    DeadlineExpired,
    /// The coordinator shut down before the transaction was decided.
    CoordinatorShutdown,
}

/// Why a transaction aborted: machine-readable fields and a `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AbortReasonBody {
    /// The kind of reason.
    pub kind: AbortKind,
    /// The participant responsible, for `voted` and `prepare_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// Its registration index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The reason the participant gave, for `voted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failed call, for `prepare_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<CallFailureBody>,
    /// The whole reason, for humans.
    pub message: String,
}

impl From<&AbortReason> for AbortReasonBody {
    fn from(reason: &AbortReason) -> Self {
        let mut body = Self {
            kind: AbortKind::RolledBack,
            participant: None,
            index: None,
            reason: None,
            failure: None,
            message: reason.to_string(),
        };
        match reason {
            AbortReason::Voted {
                participant,
                index,
                reason,
            } => {
                body.kind = AbortKind::Voted;
                body.participant = Some(participant.clone());
                body.index = Some(*index);
                body.reason = Some(reason.clone());
            }
            AbortReason::PrepareFailed {
                participant,
                index,
                failure,
            } => {
                body.kind = AbortKind::PrepareFailed;
                body.participant = Some(participant.clone());
                body.index = Some(*index);
                body.failure = Some(failure.into());
            }
            AbortReason::RolledBack => body.kind = AbortKind::RolledBack,
            AbortReason::DeadlineExpired => body.kind = AbortKind::DeadlineExpired,
            AbortReason::CoordinatorShutdown => body.kind = AbortKind::CoordinatorShutdown,
            // A reason newer than this server; `message` says what it is.
            _ => body.kind = AbortKind::RolledBack,
        }
        body
    }
}

/// The result of phase 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrepareOutcomeName {
    /// Everyone voted yes: commit or roll back next.
    Prepared,
    /// The decision is Abort (see `reason`); rollback is under way.
    Aborted,
}

/// The answer of `POST /transactions/{id}/prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrepareResponse {
    /// Prepared or aborted.
    pub outcome: PrepareOutcomeName,
    /// Why, when aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<AbortReasonBody>,
}

impl From<&PrepareOutcome> for PrepareResponse {
    fn from(outcome: &PrepareOutcome) -> Self {
        match outcome {
            PrepareOutcome::Prepared => Self {
                outcome: PrepareOutcomeName::Prepared,
                reason: None,
            },
            PrepareOutcome::Aborted(reason) => Self {
                outcome: PrepareOutcomeName::Aborted,
                reason: Some(reason.into()),
            },
        }
    }
}

/// The coordinator's decision ([`Decision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionName {
    /// Commit.
    Commit,
    /// Abort.
    Abort,
}

impl From<Decision> for DecisionName {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Commit => Self::Commit,
            Decision::Abort => Self::Abort,
        }
    }
}

/// A participant given up on in phase 2: its outcome is unknown
/// ([`Hazard`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HazardBody {
    /// Its name.
    pub participant: String,
    /// Its registration index.
    pub index: usize,
    /// What it should have done.
    pub decision: DecisionName,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_failure: CallFailureBody,
}

impl From<&Hazard> for HazardBody {
    fn from(hazard: &Hazard) -> Self {
        Self {
            participant: hazard.participant.clone(),
            index: hazard.index,
            decision: hazard.decision.into(),
            attempts: hazard.attempts,
            last_failure: (&hazard.last_failure).into(),
        }
    }
}

/// What was decided, in the answer of `GET /transactions/{id}/outcome`
/// ([`dtxn::OutcomeStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    /// The decision is Commit (phase 2 may still be delivering it).
    Committed,
    /// The decision is Abort (phase 2 may still be delivering it).
    Aborted,
    /// Not decided yet: ask again later.
    Pending,
    /// This coordinator does not hold the transaction (never begun here,
    /// forgotten after its retention, or begun before a restart). Never a
    /// reason to presume abort.
    Unknown,
}

impl From<dtxn::OutcomeStatus> for OutcomeName {
    fn from(status: dtxn::OutcomeStatus) -> Self {
        match status {
            dtxn::OutcomeStatus::Committed => Self::Committed,
            dtxn::OutcomeStatus::Aborted => Self::Aborted,
            dtxn::OutcomeStatus::Pending => Self::Pending,
            // `Unknown`, and any answer newer than this server: not known.
            _ => Self::Unknown,
        }
    }
}

/// The answer of `GET /transactions/{id}/outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeQueryResponse {
    /// The transaction id.
    #[schema(value_type = String)]
    pub id: TransactionId,
    /// What was decided.
    pub outcome: OutcomeName,
}

/// The answer of `POST /transactions/{id}/commit` and `…/rollback`
/// ([`TransactionOutcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeResponse {
    /// The transaction id.
    #[schema(value_type = String)]
    pub id: TransactionId,
    /// Commit or Abort.
    pub decision: DecisionName,
    /// For Abort, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<AbortReasonBody>,
    /// Participants given up on in phase 2. A Commit with hazards is still
    /// a commit: every other participant committed.
    pub hazards: Vec<HazardBody>,
}

impl From<&TransactionOutcome> for OutcomeResponse {
    fn from(outcome: &TransactionOutcome) -> Self {
        Self {
            id: outcome.txn,
            decision: outcome.decision.into(),
            abort_reason: outcome.abort_reason.as_ref().map(Into::into),
            hazards: outcome.hazards.iter().map(Into::into).collect(),
        }
    }
}

/// Where a participant is in phase 1 ([`PrepareStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrepareStatusKind {
    /// Not asked to prepare.
    NotAsked,
    /// `prepare` is in flight.
    InFlight,
    /// It voted (`vote`, and `reason` for an aborted vote).
    Voted,
    /// The call failed (`failure`).
    Failed,
}

/// A participant's phase 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrepareStatusBody {
    /// Where it is.
    pub status: PrepareStatusKind,
    /// Its vote, once `voted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<Vote>,
    /// Why, for an `aborted` vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failed call, once `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<CallFailureBody>,
}

impl From<&PrepareStatus> for PrepareStatusBody {
    fn from(status: &PrepareStatus) -> Self {
        let mut body = Self {
            status: PrepareStatusKind::NotAsked,
            vote: None,
            reason: None,
            failure: None,
        };
        match status {
            PrepareStatus::NotAsked => {}
            PrepareStatus::InFlight => body.status = PrepareStatusKind::InFlight,
            PrepareStatus::Voted(vote) => {
                body.status = PrepareStatusKind::Voted;
                let (vote, reason) = match vote {
                    PreparedResult::Ready => (Vote::Ready, None),
                    PreparedResult::ReadOnly => (Vote::ReadOnly, None),
                    PreparedResult::Aborted(reason) => (Vote::Aborted, Some(reason.clone())),
                };
                body.vote = Some(vote);
                body.reason = reason;
            }
            PrepareStatus::Failed(failure) => {
                body.status = PrepareStatusKind::Failed;
                body.failure = Some(failure.as_ref().into());
            }
        }
        body
    }
}

/// Where a participant is in phase 2 ([`Phase2Status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase2StatusKind {
    /// No phase-2 call made (not needed, or not yet).
    NotSent,
    /// Attempt number `attempts` is scheduled or in flight.
    InFlight,
    /// It acknowledged after `attempts` attempts.
    Acknowledged,
    /// Given up on after `attempts` attempts (`last_failure`): a hazard.
    GaveUp,
}

/// A participant's phase 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Phase2StatusBody {
    /// Where it is.
    pub status: Phase2StatusKind,
    /// Attempts so far (the current one while `in_flight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Why the last attempt failed, once `gave_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<CallFailureBody>,
}

impl From<&Phase2Status> for Phase2StatusBody {
    fn from(status: &Phase2Status) -> Self {
        let (status, attempts, last_failure) = match status {
            Phase2Status::NotSent => (Phase2StatusKind::NotSent, None, None),
            Phase2Status::InFlight { attempt } => {
                (Phase2StatusKind::InFlight, Some(*attempt), None)
            }
            Phase2Status::Acknowledged { attempts } => {
                (Phase2StatusKind::Acknowledged, Some(*attempts), None)
            }
            Phase2Status::GaveUp { attempts, last } => (
                Phase2StatusKind::GaveUp,
                Some(*attempts),
                Some(last.as_ref().into()),
            ),
        };
        Self {
            status,
            attempts,
            last_failure,
        }
    }
}

/// One participant in a [`ReportResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ParticipantReportBody {
    /// Its name.
    pub name: String,
    /// Phase 1.
    pub prepare: PrepareStatusBody,
    /// Phase 2.
    pub phase2: Phase2StatusBody,
    /// Milliseconds from the start of phase 1 to its vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_latency_ms: Option<f64>,
    /// Milliseconds from its first phase-2 call to its acknowledgement or
    /// give-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase2_latency_ms: Option<f64>,
}

impl From<&ParticipantReport> for ParticipantReportBody {
    fn from(report: &ParticipantReport) -> Self {
        Self {
            name: report.name.clone(),
            prepare: (&report.prepare).into(),
            phase2: (&report.phase2).into(),
            prepare_latency_ms: report.prepare_latency.map(millis),
            phase2_latency_ms: report.phase2_latency.map(millis),
        }
    }
}

/// The answer of `GET /transactions/{id}/report` ([`TransactionReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    /// The transaction id.
    #[schema(value_type = String)]
    pub id: TransactionId,
    /// Its state now.
    pub state: TxnState,
    /// For Abort, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<AbortReasonBody>,
    /// Participants in registration order.
    pub participants: Vec<ParticipantReportBody>,
    /// Milliseconds since begin (until finish, once finished).
    pub elapsed_ms: f64,
    /// Milliseconds from begin to the start of phase 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare_started_ms: Option<f64>,
    /// Milliseconds from begin to the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_ms: Option<f64>,
}

impl From<&TransactionReport> for ReportResponse {
    fn from(report: &TransactionReport) -> Self {
        Self {
            id: report.txn,
            state: report.state.into(),
            abort_reason: report.abort_reason.as_ref().map(Into::into),
            participants: report.participants.iter().map(Into::into).collect(),
            elapsed_ms: millis(report.elapsed),
            prepare_started_ms: report.prepare_started.map(millis),
            decided_ms: report.decided.map(millis),
        }
    }
}

/// Whether the server takes new transactions, in `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Shutting down: no new transactions; existing ones may finish.
    Draining,
}

/// The answer of `GET /health` (always `200`: the process is alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `draining` while shutting down.
    pub status: HealthStatus,
    /// Transactions not yet committed or aborted.
    pub unfinished: usize,
}

/// Whether the server welcomes new work, in `GET /ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReadyStatus {
    /// Ready (`200`).
    Ready,
    /// Shutting down: no new transactions (`503`).
    ShuttingDown,
    /// Every concurrency slot is taken: requests are being shed (`503`).
    Saturated,
    /// In a cluster, this node does not hold its lease, or has been fenced
    /// off (another node took over its transactions) (`503`).
    LeaseLost,
}

/// The answer of `GET /ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready` (`200`), or why not (`503`).
    pub status: ReadyStatus,
    /// Transactions not yet committed or aborted.
    pub unfinished: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_print_without_float_noise() {
        for (micros, printed) in [
            (4015, "4.015"),
            (1, "0.001"),
            (250_000, "250.0"),
            (0, "0.0"),
        ] {
            let json = serde_json::to_string(&millis(Duration::from_micros(micros))).unwrap();
            assert_eq!(json, printed);
        }
        // Below a microsecond is below the resolution.
        let json = serde_json::to_string(&millis(Duration::from_nanos(4_015_999))).unwrap();
        assert_eq!(json, "4.015");
    }

    #[test]
    fn api_and_library_enums_serialize_in_snake_case() {
        let values = [
            serde_json::to_value(TxnState::Prepared).unwrap(),
            serde_json::to_value(RegistrationName::AlreadyRegistered).unwrap(),
            serde_json::to_value(DecisionName::Commit).unwrap(),
            serde_json::to_value(TransactionState::Prepared).unwrap(),
            serde_json::to_value(Decision::Commit).unwrap(),
            serde_json::to_value(Registration::AlreadyRegistered).unwrap(),
            serde_json::to_value(AbortReason::DeadlineExpired).unwrap(),
            serde_json::to_value(PrepareOutcome::Prepared).unwrap(),
            serde_json::to_value(Phase2Status::NotSent).unwrap(),
        ];
        assert_eq!(
            values,
            [
                json!("prepared"),
                json!("already_registered"),
                json!("commit"),
                json!("prepared"),
                json!("commit"),
                json!("already_registered"),
                json!("deadline_expired"),
                json!("prepared"),
                json!("not_sent"),
            ]
        );
        let query: ListQuery = serde_json::from_value(json!({"state": "committing"})).unwrap();
        assert_eq!(query.state, Some(TxnState::Committing));
        assert!(serde_json::from_value::<ListQuery>(json!({"state": "Committing"})).is_err());
    }
}
