//! Plain-data types of the protocol core.

use std::fmt;

/// Where a transaction is in the protocol.
///
/// ```text
/// Active ──prepare──► Preparing ──all voted yes──► Prepared ──commit──► Committing ──► Committed
///   │                    │                            │
///   └──── rollback / deadline / a no vote ───────────►└──► Aborting ──► Aborted
/// ```
///
/// `Committed` and `Aborted` are terminal. In `Committing` the decision is
/// Commit and phase 2 is being delivered; `Aborting` likewise for Abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransactionState {
    /// Begun; participants may register.
    Active,
    /// Phase 1 is running.
    Preparing,
    /// Every participant voted `Ready` or `ReadOnly`; waiting for commit.
    Prepared,
    /// Decision Commit; phase 2 in delivery.
    Committing,
    /// Decision Commit; phase 2 done (see the outcome for hazards).
    Committed,
    /// Decision Abort; rollback in delivery.
    Aborting,
    /// Decision Abort; rollback done. Nobody was told to commit.
    Aborted,
}

impl TransactionState {
    /// `Committed` or `Aborted`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Committed | Self::Aborted)
    }

    /// The decision, once taken.
    pub fn decision(self) -> Option<Decision> {
        match self {
            Self::Committing | Self::Committed => Some(Decision::Commit),
            Self::Aborting | Self::Aborted => Some(Decision::Abort),
            Self::Active | Self::Preparing | Self::Prepared => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Preparing => "Preparing",
            Self::Prepared => "Prepared",
            Self::Committing => "Committing",
            Self::Committed => "Committed",
            Self::Aborting => "Aborting",
            Self::Aborted => "Aborted",
        }
    }
}

impl fmt::Display for TransactionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The coordinator's decision for a transaction; taken once, never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every participant voted yes and the client asked to commit.
    Commit,
    /// Anything else.
    Abort,
}

/// A client operation, named in [`CoreError::InvalidState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `register_participant`.
    Register,
    /// `prepare_transaction`.
    Prepare,
    /// `commit_transaction`.
    Commit,
    /// `rollback_transaction`.
    Rollback,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Register => "register",
            Self::Prepare => "prepare",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        })
    }
}

/// Why a participant call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallFailure {
    /// The participant returned an error.
    #[error("error: {0}")]
    Error(#[from] ParticipantError),
    /// The participant panicked; the panic message.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The call did not finish within its timeout.
    #[error("timed out")]
    TimedOut,
    /// The call was dropped before it finished, with the tokio runtime it
    /// ran on; its outcome is unknown, like a timeout's.
    #[error("abandoned: its runtime shut down")]
    Abandoned,
}

impl CallFailure {
    /// Whether retrying the call cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Error(e) if e.is_permanent())
    }
}

/// Phase-1 status of one participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrepareStatus {
    /// Not asked to prepare (yet, or ever: the transaction aborted first).
    NotAsked,
    /// `prepare` is in flight.
    InFlight,
    /// The participant voted.
    Voted(PreparedResult),
    /// The `prepare` call erred, panicked or timed out: an `Aborted` vote
    /// whose participant state is unknown (so it gets `rollback`).
    Failed(Box<CallFailure>),
}

/// Phase-2 status of one participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase2Status {
    /// No phase-2 call made (not needed, or not yet).
    NotSent,
    /// Attempt `attempt` (1-based) is scheduled or in flight.
    InFlight {
        /// The current attempt.
        attempt: u32,
    },
    /// The participant acknowledged.
    Acknowledged {
        /// Attempts it took.
        attempts: u32,
    },
    /// Given up on after the retry budget: a heuristic hazard.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: Box<CallFailure>,
    },
}

/// One participant's progress through the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Peer {
    /// Phase 1.
    pub prepare: PrepareStatus,
    /// Phase 2.
    pub phase2: Phase2Status,
    /// When its calls ended, for reports: not part of its identity.
    #[serde(skip)]
    pub(crate) times: PeerTimes,
}

impl Peer {
    /// A registered participant not yet asked anything.
    pub const UNASKED: Peer = Peer {
        prepare: PrepareStatus::NotAsked,
        phase2: Phase2Status::NotSent,
        times: PeerTimes::NEVER,
    };
}

/// When one participant's calls ended, in microseconds since the
/// transaction began (`u32::MAX`: not yet), kept this small because a
/// transaction may have hundreds of participants.
///
/// Recorded only to be reported: the protocol never reads it, so peers
/// that differ only here compare equal and hash alike, as they behave
/// alike (a model checker exploring the states must not tell them apart).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerTimes {
    pub prepared: u32,
    pub phase2_done: u32,
}

impl PeerTimes {
    pub const NEVER: Self = Self {
        prepared: u32::MAX,
        phase2_done: u32::MAX,
    };
}

impl PartialEq for PeerTimes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PeerTimes {}

impl std::hash::Hash for PeerTimes {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// Why a transaction was decided Abort.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortCause {
    /// A participant voted [`PreparedResult::Aborted`].
    Voted {
        /// Its index in registration order.
        participant: usize,
        /// The reason it gave.
        reason: String,
    },
    /// A participant's `prepare` erred, panicked or timed out.
    PrepareFailed {
        /// Its index in registration order.
        participant: usize,
        /// What happened.
        failure: CallFailure,
    },
    /// The client called `rollback_transaction`.
    RolledBack,
    /// The transaction deadline passed while it was Active or Prepared.
    DeadlineExpired,
    /// Every handle to the coordinator was dropped while the transaction was
    /// Active or Prepared, so no client could ever commit it.
    CoordinatorShutdown,
}

/// Something that happened, fed to [`Transaction::handle`](super::Transaction::handle).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// A client registers a participant (index = current participant count).
    Register,
    /// A client asks to prepare.
    Prepare,
    /// A client asks to commit.
    Commit,
    /// A client asks to roll back.
    Rollback,
    /// The transaction deadline passed (also found by the core itself from
    /// the times it is fed, see [`Transaction::with_deadline`](super::Transaction::with_deadline)).
    /// While phase 1 runs it is remembered and takes effect if phase 1
    /// ends in Prepared.
    DeadlineExpired,
    /// The coordinator is shutting down (its last handle was dropped).
    /// Remembered during phase 1, like `DeadlineExpired`.
    Shutdown,
    /// A `prepare` call ended.
    PrepareDone {
        /// The participant.
        participant: usize,
        /// Its vote, or why there was none.
        result: Result<PreparedResult, CallFailure>,
    },
    /// A `commit` or `rollback` attempt ended.
    Phase2Done {
        /// The participant.
        participant: usize,
        /// Which attempt.
        attempt: u32,
        /// Acknowledged, or why not.
        result: Result<(), CallFailure>,
        /// The retry policy's time budget is spent: a failure is not
        /// retried. The core also judges the budget itself, from the times
        /// it is fed ([`Transaction::handle_at`](super::Transaction::handle_at));
        /// `true` forces it.
        retry_budget_spent: bool,
    },
    /// A [`LogCommit`](Action::LogCommit) write ended: the Commit decision
    /// is durable (`Ok`), or the write failed and is retried after a
    /// backoff (the decision may or may not be on disk, so it is neither
    /// delivered nor given up: see [`Action::LogCommit`]).
    CommitLogged {
        /// Which write.
        attempt: u32,
        /// Durable, or why not.
        result: Result<(), CallFailure>,
    },
}

/// A participant call the driver must make, returned by
/// [`Transaction::handle`](super::Transaction::handle).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Call `prepare`, under the prepare timeout.
    Prepare {
        /// The participant.
        participant: usize,
    },
    /// Call `commit` now. A retry is issued only once its backoff is over
    /// (by [`Transaction::handle_timeout`](super::Transaction::handle_timeout)).
    Commit {
        /// The participant.
        participant: usize,
        /// 1-based attempt.
        attempt: u32,
    },
    /// Call `rollback` now; retries as for `Commit`.
    Rollback {
        /// The participant.
        participant: usize,
        /// 1-based attempt.
        attempt: u32,
    },
    /// Make the Commit decision durable in the decision log, with the
    /// participants to deliver it to (only with
    /// [`with_decision_log`](super::Transaction::with_decision_log)). No
    /// `commit` call is issued before [`Event::CommitLogged`] says it is
    /// durable (PROTOCOL.md rule 16). A failed write is retried after a
    /// backoff, for as long as it takes: once a write may have reached the
    /// disk, only a durable one may end it.
    LogCommit {
        /// 1-based attempt.
        attempt: u32,
    },
}

impl Action {
    /// The participant the action calls (`None`: the decision log).
    pub fn participant(&self) -> Option<usize> {
        match *self {
            Self::Prepare { participant }
            | Self::Commit { participant, .. }
            | Self::Rollback { participant, .. } => Some(participant),
            Self::LogCommit { .. } => None,
        }
    }
}

/// An event the core refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CoreError {
    /// The client operation is not allowed in the current state.
    #[error("cannot {operation} a transaction that is {current}")]
    InvalidState {
        /// The state.
        current: TransactionState,
        /// The refused operation.
        operation: Operation,
    },
    /// The transaction already has the maximum number of participants.
    #[error("transaction already has the maximum of {limit} participants")]
    TooManyParticipants {
        /// The limit.
        limit: usize,
    },
    /// A call result for a participant that has no such call outstanding
    /// (a duplicate or late response). It changed nothing.
    #[error("stale response from participant {participant}")]
    Stale {
        /// The participant.
        participant: usize,
    },
    /// A decision-log answer with no such write outstanding (a duplicate
    /// or late answer). It changed nothing.
    #[error("stale answer from the decision log (write {attempt})")]
    StaleLogAnswer {
        /// The write it claims to answer.
        attempt: u32,
    },
    /// A state change outside the protocol's diagram: a bug in the core.
    #[error("illegal transition {from} -> {to}")]
    IllegalTransition {
        /// From.
        from: TransactionState,
        /// To.
        to: TransactionState,
    },
}

/// A participant's answer to `prepare`: its vote in phase 1.
///
/// The names follow X/Open XA: `Ready` is `XA_OK`, `ReadOnly` is `XA_RDONLY`,
/// `Aborted` is one of the `XA_RB*` codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PreparedResult {
    /// Prepared: the participant has made its work durable enough to commit
    /// and will commit when told (or roll back when told).
    Ready,
    /// The participant changed nothing; it needs no phase 2 and gets none.
    ReadOnly,
    /// The participant cannot commit and has already undone its work. The
    /// transaction aborts; this participant gets no `rollback`.
    Aborted(String),
}

/// A `commit` or `rollback` call that did not succeed.
///
/// A *transient* error (the default) is retried under the coordinator's
/// [`RetryPolicy`](crate::RetryPolicy); a *permanent* one tells the
/// coordinator that retrying is pointless, so the participant is given up on
/// at once and reported as a heuristic hazard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize)]
#[error("{message}")]
pub struct ParticipantError {
    message: String,
    permanent: bool,
}

impl ParticipantError {
    /// A failure that may go away: the call is retried.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure that will not go away: the coordinator stops retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }

    /// What went wrong, as the participant described it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the participant said retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}
