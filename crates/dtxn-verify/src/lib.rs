//! Verification tooling for dtxn: fault-injecting participants, workloads
//! and invariant checkers shared by the seeded simulation tests and the
//! `dtxn soak` command.
//!
//! # Pieces
//!
//! * [`FaultyParticipant`] ([`fault`]): a [`dtxn::Participant`] around a
//!   [`Resource`] that injects planned faults per transaction — errors,
//!   panics, hangs, permanent death, slowness — at five [`CrashPoint`]s, and
//!   records what the coordinator told it ([`CallRecord`]).
//! * The bank workload ([`bank`]): each participant is an [`Account`] with
//!   an `i64` balance; debits reserve in `prepare` (voting `Aborted` on
//!   insufficient funds), changes apply idempotently in `commit`, `rollback`
//!   releases.
//! * The invariant checker ([`check`]): conservation of money (with
//!   amounts left in doubt by heuristic hazards counted separately),
//!   all-or-nothing among live participants, hazards reported exactly where
//!   a participant was lost after the decision, every transaction finished,
//!   every call within its time bound. The module docs define each precisely.
//! * [`simulate`] ([`sim`]): one seeded, deterministic run of a few
//!   concurrent transfers with random faults on tokio's paused clock, some
//!   runs ending with every client and coordinator handle dropped mid-call,
//!   some with the coordinator crashing and a new one recovering from its
//!   decision log (a [`SimDisk`], [`disk`]); returns the violations found.
//!   A failing seed replays exactly.
//! * [`soak()`] ([`mod@soak`]): many transfers (up to 1000 at once, 1 to 100
//!   participants each) on a multi-thread runtime with the real clock,
//!   returning a serializable [`SoakReport`].
//!
//! ```
//! use dtxn_verify::{silence_injected_panics, simulate, SimParams};
//!
//! silence_injected_panics();
//! let report = simulate(42, &SimParams::default());
//! assert!(report.passed(), "{report}");
//! ```
//!
//! # Determinism of the simulation
//!
//! Everything random in a simulation derives from its seed, including the
//! coordinator's retry jitter (drawn from fastrand's thread-local generator,
//! which [`simulate`] seeds; the current-thread runtime runs every task on
//! the calling thread), and the paused clock makes timing exact, so a seed
//! replays exactly; the simulation tests check that. See [`sim`] for the
//! details.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bank;
pub mod check;
pub mod client;
pub mod disk;
pub mod fault;
pub mod sim;
pub mod soak;
pub mod trace;
pub mod workload;

pub use bank::{Account, AccountParticipant, Bank};
pub use check::{check_transaction, Bounds, TxnEvidence, TxnVerdict};
pub use client::ClientPlan;
pub use disk::{SimDisk, WriteEvent};
pub use fault::{
    silence_injected_panics, CallRecord, CrashPoint, DeathMode, Fault, FaultCounts, FaultKind,
    FaultyParticipant, Resource, INJECTED_PANIC,
};
pub use sim::{simulate, CrashSummary, SimParams, SimReport};
pub use soak::{soak, SoakParams, SoakReport};
pub use trace::Trace;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks, ignoring poisoning (no code panics while holding these locks,
/// and injected panics never happen under one).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
