//! The deterministic protocol core: one transaction's two-phase-commit state
//! machine, with no I/O, no clock, no tokio and no randomness.
//!
//! Events go in through [`Transaction::handle`] (a client asked to commit, a
//! vote arrived, a call failed, the deadline passed); [`Action`]s come out
//! (call `prepare` on participant 3, call `commit` on participant 5 for the
//! second time after a backoff). The async driver in
//! [`TransactionCoordinator`](crate::TransactionCoordinator) executes the
//! actions and feeds the results back; it never decides anything itself.
//!
//! Every state change goes through one checked function that refuses moves
//! not in the protocol's state diagram, and the whole machine is plain data
//! (`Clone + Eq + Hash + Debug`), so a model checker or a seeded simulation
//! can drive exactly the code the product runs.
//!
//! ```
//! use dtxn::core::{Action, Event, Limits, Transaction};
//! use dtxn::{PreparedResult, TransactionState};
//!
//! let mut txn = Transaction::new(Limits::default());
//! let mut actions = Vec::new();
//! txn.handle(Event::Register, &mut actions)?;
//! txn.handle(Event::Prepare, &mut actions)?;
//! assert_eq!(actions, [Action::Prepare { participant: 0 }]);
//! actions.clear();
//!
//! txn.handle(Event::PrepareDone { participant: 0, result: Ok(PreparedResult::Ready) }, &mut actions)?;
//! assert_eq!(txn.state(), TransactionState::Prepared);
//! txn.handle(Event::Commit, &mut actions)?;
//! assert_eq!(actions, [Action::Commit { participant: 0, attempt: 1 }]);
//! txn.handle(Event::Phase2Done { participant: 0, attempt: 1, result: Ok(()), retry_budget_spent: false }, &mut actions)?;
//! assert_eq!(txn.state(), TransactionState::Committed);
//! # Ok::<(), dtxn::core::CoreError>(())
//! ```

mod machine;
mod types;

pub use machine::{Limits, PlantedBug, Transaction};
pub use types::{
    AbortCause, Action, CallFailure, CoreError, Decision, Event, Operation, Peer, Phase2Status,
    PrepareStatus, TransactionState,
};
