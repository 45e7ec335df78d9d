//! The deterministic protocol core: one transaction's two-phase-commit state
//! machine, with no I/O, no clock, no tokio and no ambient randomness.
//!
//! Events go in through [`Transaction::handle_at`] with the time (a client
//! asked to commit, a vote arrived, a call failed); [`Action`]s come out
//! (call `prepare` on participant 3, call `commit` on participant 5 for the
//! second time). Time is an input, as in quinn-proto: the core keeps the
//! transaction's deadline and the phase-2 backoff as timers, says when it
//! next needs to be woken ([`Transaction::poll_timeout`]) and acts when it
//! is ([`Transaction::handle_timeout`]); retry jitter comes from a
//! generator it owns, seeded by whoever makes it; it records the timings
//! of every call itself. The async driver in
//! [`TransactionCoordinator`](crate::TransactionCoordinator) executes the
//! actions, feeds the results and the clock back and arms the timer; it
//! never decides anything itself.
//!
//! Every state change goes through one checked function that refuses moves
//! not in the protocol's state diagram, and the whole machine is plain data
//! (`Clone + Eq + Hash + Debug`), so a model checker or a seeded simulation
//! can drive exactly the code the product runs. The core depends on nothing
//! above it: its types ([`RetryPolicy`], [`PreparedResult`], ...) are
//! defined here and re-exported by the crate root.
//!
//! ```
//! use std::time::Duration;
//! use dtxn::core::{Action, CallFailure, Event, Limits, Transaction};
//! use dtxn::{PreparedResult, TransactionState};
//!
//! let ms = Duration::from_millis;
//! let mut txn = Transaction::new(Limits::default())
//!     .with_deadline(ms(60_000))
//!     .with_seed(7);
//! let mut actions = Vec::new();
//! txn.handle_at(Event::Register, ms(0), &mut actions)?;
//! assert_eq!(txn.poll_timeout(), Some(ms(60_000))); // the deadline
//! txn.handle_at(Event::Prepare, ms(1), &mut actions)?;
//! assert_eq!(actions, [Action::Prepare { participant: 0 }]);
//! actions.clear();
//!
//! let vote = Event::PrepareDone { participant: 0, result: Ok(PreparedResult::Ready) };
//! txn.handle_at(vote, ms(3), &mut actions)?;
//! assert_eq!(txn.state(), TransactionState::Prepared);
//! assert_eq!(txn.prepare_latency(0), Some(ms(2)));
//! txn.handle_at(Event::Commit, ms(4), &mut actions)?;
//! assert_eq!(actions, [Action::Commit { participant: 0, attempt: 1 }]);
//! actions.clear();
//!
//! // The commit times out: its retry waits out a jittered backoff, a timer.
//! let failed = Event::Phase2Done {
//!     participant: 0,
//!     attempt: 1,
//!     result: Err(CallFailure::TimedOut),
//!     retry_budget_spent: false,
//! };
//! txn.handle_at(failed, ms(5), &mut actions)?;
//! assert!(actions.is_empty());
//! let due = txn.poll_timeout().expect("a retry is due later");
//! assert!(due >= ms(55) && due <= ms(105));
//! txn.handle_timeout(due, &mut actions)?;
//! assert_eq!(actions, [Action::Commit { participant: 0, attempt: 2 }]);
//!
//! let acked = Event::Phase2Done { participant: 0, attempt: 2, result: Ok(()), retry_budget_spent: false };
//! txn.handle_at(acked, due + ms(1), &mut actions)?;
//! assert_eq!(txn.state(), TransactionState::Committed);
//! # Ok::<(), dtxn::core::CoreError>(())
//! ```

mod machine;
mod retry;
mod types;

pub use machine::{Limits, PlantedBug, Transaction};
pub use retry::RetryPolicy;
pub use types::{
    AbortCause, Action, CallFailure, CoreError, Decision, Event, Operation, ParticipantError, Peer,
    Phase2Status, PrepareStatus, PreparedResult, TransactionState,
};
