//! What the coordinator reports back: outcomes, hazards, reports.

use std::fmt;
use std::time::Duration;

use crate::core::{CallFailure, Decision, Phase2Status, PrepareStatus, TransactionState};
use crate::TransactionId;

/// Whether a participant was new to the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Added.
    Registered,
    /// This very participant (the same `Arc`) was already registered; nothing changed.
    AlreadyRegistered,
}

/// The answer to "what was decided?" for a transaction id, from
/// [`TransactionCoordinator::outcome`](crate::TransactionCoordinator::outcome):
/// what a participant that prepared and then lost contact with its client
/// asks the coordinator.
///
/// Without a decision log the coordinator never answers
/// [`Aborted`](Self::Aborted) for an id it does not hold: it may have
/// forgotten the transaction after its retention, or restarted since, and a
/// participant that presumed abort from such an answer could break
/// atomicity. Such ids are [`Unknown`](Self::Unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeStatus {
    /// The decision is Commit (phase 2 may still be delivering it).
    Committed,
    /// The decision is Abort (phase 2 may still be delivering it).
    Aborted,
    /// Not decided yet: Active, Preparing or Prepared.
    Pending,
    /// This coordinator does not hold the transaction: never begun here,
    /// forgotten after its retention, or begun before a restart.
    Unknown,
}

impl OutcomeStatus {
    /// The answer for a transaction held in `state`.
    pub fn of(state: TransactionState) -> Self {
        match state.decision() {
            Some(Decision::Commit) => Self::Committed,
            Some(Decision::Abort) => Self::Aborted,
            None => Self::Pending,
        }
    }
}

impl fmt::Display for OutcomeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Committed => "committed",
            Self::Aborted => "aborted",
            Self::Pending => "pending",
            Self::Unknown => "unknown",
        })
    }
}

/// Why a transaction was decided Abort, with participant names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AbortReason {
    /// A participant voted [`PreparedResult::Aborted`](crate::PreparedResult::Aborted).
    Voted {
        /// Its name.
        participant: String,
        /// Its registration index.
        index: usize,
        /// The reason it gave.
        reason: String,
    },
    /// A participant's `prepare` erred, panicked or timed out.
    PrepareFailed {
        /// Its name.
        participant: String,
        /// Its registration index.
        index: usize,
        /// What happened.
        failure: CallFailure,
    },
    /// The client rolled back.
    RolledBack,
    /// The transaction deadline passed while it was Active or Prepared.
    DeadlineExpired,
    /// The coordinator's last handle was dropped while the transaction was
    /// Active or Prepared.
    CoordinatorShutdown,
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Voted {
                participant,
                reason,
                ..
            } => write!(f, "{participant} voted to abort: {reason}"),
            Self::PrepareFailed {
                participant,
                failure,
                ..
            } => write!(f, "{participant} failed to prepare: {failure}"),
            Self::RolledBack => f.write_str("rolled back by the client"),
            Self::DeadlineExpired => f.write_str("transaction deadline expired"),
            Self::CoordinatorShutdown => f.write_str("coordinator shut down"),
        }
    }
}

/// The result of phase 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrepareOutcome {
    /// Every participant voted `Ready` or `ReadOnly`: the transaction may
    /// now be committed (or rolled back).
    Prepared,
    /// The decision is Abort; rollback is delivered in the background
    /// (await [`rollback_transaction`](crate::TransactionCoordinator::rollback_transaction)
    /// to wait for it).
    Aborted(AbortReason),
}

impl PrepareOutcome {
    /// `true` for [`PrepareOutcome::Prepared`].
    pub fn is_prepared(&self) -> bool {
        matches!(self, Self::Prepared)
    }
}

/// A participant given up on in phase 2: its outcome is unknown
/// (a *heuristic hazard* in XA terms). Someone should look at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Hazard {
    /// Its name.
    pub participant: String,
    /// Its registration index.
    pub index: usize,
    /// What it should have done (the transaction's decision).
    pub decision: Decision,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_failure: CallFailure,
}

/// The final outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TransactionOutcome {
    /// The transaction.
    pub txn: TransactionId,
    /// Commit or Abort.
    pub decision: Decision,
    /// For Abort, why.
    pub abort_reason: Option<AbortReason>,
    /// Participants given up on in phase 2. A `Commit` with hazards is still
    /// a commit: every other `Ready` voter committed.
    pub hazards: Vec<Hazard>,
}

impl TransactionOutcome {
    /// Decision Commit (hazards or not).
    pub fn is_committed(&self) -> bool {
        self.decision == Decision::Commit
    }

    /// Whether any participant was given up on.
    pub fn has_hazards(&self) -> bool {
        !self.hazards.is_empty()
    }
}

/// One participant in a [`TransactionReport`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ParticipantReport {
    /// Its name.
    pub name: String,
    /// Its vote, or why there was none.
    pub prepare: PrepareStatus,
    /// Its phase-2 result.
    pub phase2: Phase2Status,
    /// Time from the start of phase 1 to its answer.
    pub prepare_latency: Option<Duration>,
    /// Time from its first phase-2 call to its acknowledgement or give-up.
    pub phase2_latency: Option<Duration>,
}

/// Everything known about one transaction, for humans and dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TransactionReport {
    /// The transaction.
    pub txn: TransactionId,
    /// Its state now.
    pub state: TransactionState,
    /// For Abort, why.
    pub abort_reason: Option<AbortReason>,
    /// Participants in registration order.
    pub participants: Vec<ParticipantReport>,
    /// Time since begin (until finish, once finished).
    pub elapsed: Duration,
    /// Time from begin to the start of phase 1.
    pub prepare_started: Option<Duration>,
    /// Time from begin to the decision.
    pub decided: Option<Duration>,
}
