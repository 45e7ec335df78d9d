//! Scripted participants: each one's behaviour is fixed by the generated
//! [`Script`] when it is created, so the reference model can predict every
//! vote, every phase-2 attempt and every hazard.
//!
//! A participant may be registered in several transactions; its phase-2
//! script (for example "fail once, then succeed") runs per transaction, and
//! every call is logged per transaction so the test can compare the exact
//! calls each participant received with what the model predicts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dtxn::{
    async_trait, CallFailure, Participant, ParticipantError, PreparedResult, TransactionId,
};

use super::model::MAX_ATTEMPTS;

/// The payload of a scripted `prepare` panic (kept out of the test output
/// by [`install_quiet_panic_hook`]).
pub const SCRIPTED_PANIC: &str = "scripted participant panic";

/// A participant's name in a test case: `p3` was created by the fourth
/// registration of a new participant. Names are carried by the steps, so
/// deleting unrelated steps while shrinking never renames a participant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct P(pub u32);

impl std::fmt::Debug for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// How a participant answers `prepare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// `PreparedResult::Ready`, at once.
    Ready,
    /// `PreparedResult::ReadOnly`, at once.
    ReadOnly,
    /// `PreparedResult::Aborted`, at once.
    Aborted,
    /// Panics at once.
    Panic,
    /// Never answers (the coordinator's prepare timeout fires).
    Hang,
}

/// How a participant answers `commit` and `rollback` (per transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase2 {
    /// Acknowledges the first attempt.
    Ok,
    /// A transient error on the first attempt, then acknowledges.
    FailThenOk,
    /// A transient error on every attempt: given up on after the retry budget.
    FailAlways,
    /// A permanent error: given up on at once.
    FailPermanent,
    /// Never answers: every attempt times out, then given up on.
    Hang,
}

impl Phase2 {
    /// Attempts the coordinator makes before the call is acknowledged or
    /// given up on.
    pub fn attempts(self) -> u32 {
        match self {
            Phase2::Ok | Phase2::FailPermanent => 1,
            Phase2::FailThenOk => 2,
            Phase2::FailAlways | Phase2::Hang => MAX_ATTEMPTS,
        }
    }

    /// Why the last attempt failed, when the participant is given up on.
    pub fn gave_up(self, p: P) -> Option<CallFailure> {
        match self {
            Phase2::Ok | Phase2::FailThenOk => None,
            Phase2::FailAlways => Some(CallFailure::Error(transient_error(p))),
            Phase2::FailPermanent => Some(CallFailure::Error(permanent_error(p))),
            Phase2::Hang => Some(CallFailure::TimedOut),
        }
    }
}

/// A participant's whole behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Script {
    /// Its answer to `prepare`.
    pub vote: Vote,
    /// Its answers to `commit` / `rollback`.
    pub phase2: Phase2,
}

/// The name participant `p` reports.
pub fn name(p: P) -> String {
    format!("{p:?}")
}

/// The reason a [`Vote::Aborted`] participant gives.
pub fn refusal(p: P) -> String {
    format!("{p:?} refuses")
}

fn transient_error(p: P) -> ParticipantError {
    ParticipantError::transient(format!("{p:?}: phase 2 failed"))
}

fn permanent_error(p: P) -> ParticipantError {
    ParticipantError::permanent(format!("{p:?}: gone for good"))
}

/// The calls one participant received for one transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// `prepare` calls.
    pub prepare: u32,
    /// `commit` attempts.
    pub commit: u32,
    /// `rollback` attempts.
    pub rollback: u32,
}

/// A participant following a [`Script`], logging its calls per transaction.
pub struct Scripted {
    p: P,
    name: String,
    script: Script,
    calls: Mutex<HashMap<TransactionId, Calls>>,
}

impl Scripted {
    /// Participant `p`.
    pub fn new(p: P, script: Script) -> Self {
        Self {
            p,
            name: name(p),
            script,
            calls: Mutex::default(),
        }
    }

    /// Every call received so far, per transaction.
    pub fn calls(&self) -> HashMap<TransactionId, Calls> {
        self.log().clone()
    }

    fn log(&self) -> std::sync::MutexGuard<'_, HashMap<TransactionId, Calls>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs a phase-2 call and answers it per the script.
    async fn phase2(&self, txn: TransactionId, commit: bool) -> Result<(), ParticipantError> {
        let attempt = {
            let mut log = self.log();
            let calls = log.entry(txn).or_default();
            if commit {
                calls.commit += 1;
            } else {
                calls.rollback += 1;
            }
            calls.commit + calls.rollback
        };
        match self.script.phase2 {
            Phase2::Ok => Ok(()),
            Phase2::FailThenOk if attempt > 1 => Ok(()),
            Phase2::FailThenOk | Phase2::FailAlways => Err(transient_error(self.p)),
            Phase2::FailPermanent => Err(permanent_error(self.p)),
            Phase2::Hang => std::future::pending().await,
        }
    }
}

#[async_trait]
impl Participant for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.log().entry(txn).or_default().prepare += 1;
        match self.script.vote {
            Vote::Ready => PreparedResult::Ready,
            Vote::ReadOnly => PreparedResult::ReadOnly,
            Vote::Aborted => PreparedResult::Aborted(refusal(self.p)),
            Vote::Panic => std::panic::panic_any(SCRIPTED_PANIC),
            Vote::Hang => std::future::pending().await,
        }
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.phase2(txn, true).await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.phase2(txn, false).await
    }
}

/// Upcasts for registration (the same `Arc` every time, so registering it
/// twice in one transaction is a duplicate).
pub fn as_dyn(p: &Arc<Scripted>) -> Arc<dyn Participant> {
    Arc::clone(p) as Arc<dyn Participant>
}

thread_local! {
    static EXPECTING_FAILURES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps two kinds of expected panics out of the test output: scripted
/// participant panics (the coordinator catches them; thousands happen per
/// run) and, on the current thread while `f` runs, the assertion failures
/// of a run that is *meant* to fail (a planted bug being caught and shrunk).
/// Every other panic is reported as usual.
pub fn expecting_failures<R>(f: impl FnOnce() -> R) -> R {
    install_quiet_panic_hook();
    EXPECTING_FAILURES.with(|flag| flag.set(true));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            EXPECTING_FAILURES.with(|flag| flag.set(false));
        }
    }
    let _reset = Reset;
    f()
}

/// Installs (once per process) a panic hook that hides scripted participant
/// panics; see [`expecting_failures`].
pub fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info.payload().downcast_ref::<&str>() == Some(&SCRIPTED_PANIC);
            if scripted || EXPECTING_FAILURES.with(|flag| flag.get()) {
                return;
            }
            previous(info);
        }));
    });
}
