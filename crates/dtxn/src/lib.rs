//! # dtxn — an in-memory two-phase-commit coordinator
//!
//! Microservices sometimes have to act as one: creating a user also hands
//! out a free product and creates a welcome order, and either all three
//! happen or none do. `dtxn` is the transaction coordinator for that: each
//! service implements [`Participant`], and a [`TransactionCoordinator`]
//! runs two-phase commit (2PC, with presumed abort) across them, with all
//! transaction state in memory.
//!
//! ```
//! use std::sync::Arc;
//! use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionCoordinator,
//!            TransactionId, TransactionState};
//!
//! struct Service(&'static str);
//!
//! #[async_trait]
//! impl Participant for Service {
//!     fn name(&self) -> &str { self.0 }
//!     async fn prepare(&self, _txn: TransactionId) -> PreparedResult { PreparedResult::Ready }
//!     async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
//!     async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dtxn::CoordinatorError> {
//! let coordinator = TransactionCoordinator::new();
//! let txn = coordinator.begin_transaction()?;
//! for name in ["users", "products", "orders"] {
//!     coordinator.register_participant(txn, Arc::new(Service(name)))?;
//! }
//! if coordinator.prepare_transaction(txn).await?.is_prepared() {
//!     let outcome = coordinator.commit_transaction(txn).await?;
//!     assert!(outcome.is_committed() && outcome.hazards.is_empty());
//! }
//! assert_eq!(coordinator.get_transaction_state(txn)?, TransactionState::Committed);
//! # Ok(())
//! # }
//! ```
//!
//! # The protocol
//!
//! [`prepare_transaction`](TransactionCoordinator::prepare_transaction)
//! asks every participant to prepare, concurrently. If all vote
//! [`Ready`](PreparedResult::Ready) or [`ReadOnly`](PreparedResult::ReadOnly)
//! the transaction is `Prepared` and
//! [`commit_transaction`](TransactionCoordinator::commit_transaction) tells
//! the `Ready` voters to commit. The first [`Aborted`](PreparedResult::Aborted)
//! vote — or a `prepare` that errs, panics or times out — decides Abort at
//! once, and `rollback` goes to everyone who may hold work. Phase-2 calls
//! that fail are retried with capped, jittered exponential backoff; a
//! participant that still fails is given up on and reported as a *heuristic
//! hazard* in the [`TransactionOutcome`], never hidden and never turning a
//! Commit into an Abort. The full contract, with the state diagram and what
//! each call does in each state, is in the repository's `docs/PROTOCOL.md`.
//!
//! # Guarantees
//!
//! * **Atomicity**: no participant is told `commit` in a transaction in
//!   which any is told `rollback`; the decision is Commit only if every
//!   participant voted yes; it never changes.
//! * **Bounded time**: phase 1 returns within the prepare timeout; phase 2
//!   within the retry policy's time budget plus one call's timeout; a
//!   transaction left Active or Prepared is rolled
//!   back at its deadline; dropping every coordinator handle rolls back what
//!   no client can finish.
//! * **Cancel safety, and no caller is special**: every async method is
//!   cancel safe. A client future drives the participant calls that answer
//!   at once and hands the rest to a spawned task before it first waits, so
//!   a future that is dropped, or held and never polled again, delays no
//!   other caller, no deadline and no shutdown.
//! * **Re-entrancy**: no user code (participant calls or `Drop`) runs under
//!   a coordinator lock, so participants may hold a coordinator handle and
//!   call back into it, even from `Drop`; a panic in a participant's `Drop`
//!   is caught and reaches no caller and no background task.
//! * **Any runtime**: deadlines are enforced by a background task on the
//!   runtime the coordinator is used from; if that runtime shuts down, the
//!   next call from another runtime starts a new one.
//! * **Isolation of failures**: a participant that panics or hangs affects
//!   only its own call; no lock is held across `.await`, and transactions
//!   only share brief accesses to a sharded table.
//! * **Bounded memory**: at most `max_transactions` unfinished transactions;
//!   finished ones are remembered for `retention_period` and at most
//!   `retention_count`, then forgotten (calls then get `NotFound`).
//!
//! # Choosing options
//!
//! [`CoordinatorConfig`] holds every limit and timeout, with defaults
//! suitable for in-datacenter services (100 participants, 1000 concurrent
//! transactions, 5 s prepare timeout, phase-2 retries for up to 60 s). Set the prepare
//! timeout above your slowest participant's p99.9, and the transaction
//! deadline above the longest time a client may hold a transaction open.
//!
//! # Layout
//!
//! * [`core`]: the deterministic protocol state machine (no I/O, no clock).
//! * `driver` (this crate's [`TransactionCoordinator`]): the tokio shell that
//!   executes the core's actions, owns timers, tasks and the table.
//! * [`Participant`] and [`Blocking`]: what services implement.
//! * [`CoordinatorConfig`], [`RetryPolicy`]: configuration.
//! * [`log`]: the optional decision log that makes Commit decisions survive
//!   a crash ([`TransactionCoordinator::recover`]; backends behind the
//!   features `sqlite` and `postgres`).
//! * [`CoordinatorError`]: what can be refused.
//!
//! Spans and events are emitted with [`tracing`](https://docs.rs/tracing)
//! (target `dtxn`), each carrying the transaction id.

#![warn(missing_docs)]
// Denied, not forbidden: `driver/call.rs` stores a participant's borrowing
// future beside what it borrows, with its measured reason and safety
// argument there. Nothing else may use `unsafe`.
#![deny(unsafe_code)]

mod config;
pub mod core;
mod driver;
mod error;
pub mod failpoint;
mod id;
pub mod log;
mod outcome;
mod participant;

pub use async_trait::async_trait;
pub use config::{ConfigError, CoordinatorConfig, CoordinatorConfigBuilder, RetryPolicy};
pub use core::{CallFailure, Decision, Operation, Phase2Status, PrepareStatus, TransactionState};
pub use driver::{
    CoordinatorStats, LoggedDecision, Ownership, TransactionCoordinator, TransactionSummary,
};
pub use error::CoordinatorError;
pub use id::{ParseTransactionIdError, TransactionId};
pub use outcome::{
    AbortReason, Hazard, OutcomeStatus, ParticipantReport, PrepareOutcome, Registration,
    TransactionOutcome, TransactionReport,
};
pub use participant::{
    Blocking, BlockingParticipant, CallContext, Participant, ParticipantError, Payload, Phase,
    PreparedResult,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::TransactionCoordinator>();
        assert_send_sync::<crate::CoordinatorError>();
        assert_send_sync::<crate::TransactionOutcome>();
        assert_send_sync::<crate::TransactionReport>();
        assert_send_sync::<std::sync::Arc<dyn crate::Participant>>();
        assert_send_sync::<crate::core::Transaction>();
    }
}
