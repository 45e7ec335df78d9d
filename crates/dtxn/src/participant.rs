//! The [`Participant`] trait that services implement, and its vote type.

use std::fmt;
use std::sync::Arc;

use crate::TransactionId;

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

/// A service taking part in distributed transactions.
///
/// The coordinator calls [`prepare`](Self::prepare) once per transaction, and
/// then at most one of [`commit`](Self::commit) or
/// [`rollback`](Self::rollback), possibly several times if it fails (so
/// phase 2 must be idempotent, keyed on the [`TransactionId`]).
///
/// * `prepare` may also be followed by `rollback` without a vote having been
///   seen by the coordinator (the call timed out or panicked), and `rollback`
///   may arrive for a transaction whose `prepare` was never called (the
///   transaction was abandoned while the participant was registered).
/// * A `prepare` that returns [`PreparedResult::Aborted`] or
///   [`PreparedResult::ReadOnly`] never receives phase 2.
///
/// The trait is object safe and uses [`async_trait`](crate::async_trait),
/// re-exported so implementors need no extra dependency. For participants
/// whose code blocks (a synchronous database client), implement
/// [`BlockingParticipant`] and wrap it in [`Blocking`].
///
/// ```
/// use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
///
/// struct Inventory;
///
/// #[async_trait]
/// impl Participant for Inventory {
///     fn name(&self) -> &str {
///         "inventory"
///     }
///     async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
///         PreparedResult::Ready // reserve the item here
///     }
///     async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
///         Ok(()) // apply the reservation
///     }
///     async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
///         Ok(()) // release the reservation
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Participant: Send + Sync {
    /// A short name used in errors, logs and reports. Defaults to the
    /// implementing type's name.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Phase 1: prepare to commit `txn` and vote.
    async fn prepare(&self, txn: TransactionId) -> PreparedResult;

    /// Phase 1 for participants whose `prepare` *call* can fail without a
    /// vote — a remote service that is unreachable, answers garbage or
    /// breaks the connection. The coordinator calls this, not
    /// [`prepare`](Self::prepare); the default just votes with `prepare`.
    ///
    /// An `Err` is treated like a panic or a timeout: the transaction
    /// aborts (reported as [`AbortReason::PrepareFailed`](crate::AbortReason::PrepareFailed)),
    /// and — unlike after an [`Aborted`](PreparedResult::Aborted) vote —
    /// this participant *is* sent `rollback`, since it may have prepared
    /// before the failure was seen. Override it instead of voting `Aborted`
    /// when the participant's state is unknown.
    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        Ok(self.prepare(txn).await)
    }

    /// Phase 2 after a Commit decision. Must be idempotent.
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError>;

    /// Phase 2 after an Abort decision. Must be idempotent, and must accept a
    /// transaction it never prepared.
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError>;
}

/// A participant whose code blocks the thread, such as one using a
/// synchronous database client. Wrap it in [`Blocking`] to register it.
pub trait BlockingParticipant: Send + Sync + 'static {
    /// See [`Participant::name`].
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
    /// See [`Participant::prepare`].
    fn prepare(&self, txn: TransactionId) -> PreparedResult;
    /// See [`Participant::commit`].
    fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError>;
    /// See [`Participant::rollback`].
    fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError>;
}

/// Adapts a [`BlockingParticipant`] into a [`Participant`] by running each
/// call on tokio's blocking thread pool (`spawn_blocking`), so blocking code
/// never stalls the runtime's worker threads.
///
/// A panic in the blocking code is propagated to the coordinator, which
/// treats it like any participant panic. If a call times out, the blocking
/// thread still runs the call to its end (threads cannot be cancelled).
///
/// ```
/// use std::sync::Arc;
/// use dtxn::{Blocking, BlockingParticipant, ParticipantError, PreparedResult, TransactionId};
///
/// struct SyncDb;
/// impl BlockingParticipant for SyncDb {
///     fn prepare(&self, _: TransactionId) -> PreparedResult { PreparedResult::Ready }
///     fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
///     fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// }
///
/// let participant: Arc<dyn dtxn::Participant> = Arc::new(Blocking::new(SyncDb));
/// ```
pub struct Blocking<T>(Arc<T>);

impl<T: BlockingParticipant> Blocking<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self(Arc::new(inner))
    }

    /// The wrapped participant.
    pub fn get_ref(&self) -> &T {
        &self.0
    }

    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&T) -> R + Send + 'static) -> R {
        let inner = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down and cancelled the task.
            Err(_) => std::panic::panic_any("blocking participant call was cancelled"),
        }
    }
}

impl<T> fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Blocking")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

#[async_trait::async_trait]
impl<T: BlockingParticipant> Participant for Blocking<T> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.run(move |p| p.prepare(txn)).await
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.run(move |p| p.commit(txn)).await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.run(move |p| p.rollback(txn)).await
    }
}
