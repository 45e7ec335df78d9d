//! The coordinator's error type.

use crate::core::{Operation, TransactionState};
use crate::TransactionId;

/// Why a [`TransactionCoordinator`](crate::TransactionCoordinator) call was
/// refused. A refused call changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// No such transaction: the id was never issued by this coordinator, or
    /// the transaction finished long enough ago to be forgotten.
    #[error("transaction {txn} not found (unknown, or finished and forgotten)")]
    NotFound {
        /// The id asked for.
        txn: TransactionId,
    },
    /// The operation is not allowed in the transaction's current state (for
    /// example commit before prepare, or rollback after a Commit decision).
    #[error("cannot {operation} transaction {txn}: it is {current}")]
    InvalidState {
        /// The transaction.
        txn: TransactionId,
        /// Its state when the call was made.
        current: TransactionState,
        /// The refused operation.
        operation: Operation,
    },
    /// The transaction already has the configured maximum of participants.
    #[error("transaction {txn} already has the maximum of {limit} participants")]
    TooManyParticipants {
        /// The transaction.
        txn: TransactionId,
        /// The configured limit.
        limit: usize,
    },
    /// The coordinator already runs the configured maximum of unfinished
    /// transactions; retry after some finish.
    #[error("capacity exceeded: {limit} transactions are already running")]
    CapacityExceeded {
        /// The configured limit.
        limit: usize,
    },
    /// [`TransactionCoordinator::shutdown`](crate::TransactionCoordinator::shutdown)
    /// was called: no new transactions are begun.
    #[error("the coordinator is shutting down: no new transactions")]
    ShuttingDown,
    /// The coordinator shares its decision log with other coordinators and
    /// lost its lease on it (it was paused or cut off for longer than the
    /// lease, and another coordinator took its transactions over): it acts
    /// on nothing any more (PROTOCOL.md rule 17). Ask the transaction's
    /// new owner; restart this process to rejoin.
    #[error("the coordinator lost its lease on the shared decision log: another coordinator owns its transactions now")]
    Fenced,
    /// [`resolve_hazard`](crate::TransactionCoordinator::resolve_hazard) of
    /// a transaction that is no logged decision with a hazard.
    #[error("transaction {txn} is no logged decision with a participant given up on")]
    NoLoggedHazard {
        /// The transaction.
        txn: TransactionId,
    },
    /// The coordinator keeps a [decision log](crate::log) and the
    /// participant has no [`recovery_key`](crate::Participant::recovery_key):
    /// a Commit decision could not be delivered to it after a restart.
    #[error("participant {participant} of transaction {txn} has no recovery key, which a coordinator with a decision log requires")]
    NotRecoverable {
        /// The transaction.
        txn: TransactionId,
        /// The participant's name.
        participant: String,
    },
}
