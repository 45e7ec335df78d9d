//! Fault-injecting participants: [`FaultyParticipant`] wraps a [`Resource`]
//! (the participant's actual state, such as a bank [`Account`](crate::Account))
//! and misbehaves at chosen [`CrashPoint`]s of chosen transactions, while
//! recording what the coordinator told it ([`CallRecord`]) so the
//! [checker](crate::check) can compare the coordinator's claims with what
//! really happened.
//!
//! # Crash points and fault kinds
//!
//! | point | where the fault strikes |
//! |---|---|
//! | [`BeforePrepare`](CrashPoint::BeforePrepare) | `prepare` arrived, nothing reserved yet |
//! | [`AfterPrepare`](CrashPoint::AfterPrepare) | the resource prepared (reserved), the vote is not sent yet |
//! | [`BeforeApply`](CrashPoint::BeforeApply) | `commit` arrived, nothing applied yet |
//! | [`AfterApply`](CrashPoint::AfterApply) | the commit was applied, the acknowledgement is not sent yet |
//! | [`DuringRollback`](CrashPoint::DuringRollback) | `rollback` arrived, nothing undone yet |
//!
//! | kind | effect on this call | later calls |
//! |---|---|---|
//! | [`Error`](FaultKind::Error) | `commit`/`rollback`: a transient [`ParticipantError`]; `prepare` (which has no error channel): the participant undoes what it reserved and votes `Aborted` | normal |
//! | [`Panic`](FaultKind::Panic) | panics (message starts with [`INJECTED_PANIC`]) | normal |
//! | [`Hang`](FaultKind::Hang) | never returns (the coordinator's timeout drops it) | normal |
//! | [`Die`](FaultKind::Die) | the participant dies: this call and **every later call, for any transaction**, fails ([`DeathMode::Error`]: `prepare` panics, phase 2 returns a transient error) or hangs ([`DeathMode::Hang`]) | dead |
//! | [`Slow`](FaultKind::Slow) | waits the given extra latency, then carries on normally | normal |
//!
//! A fault fires on the first [`times`](Fault::times) arrivals at its point
//! in its transaction (so a phase-2 fault with `times` ≥ the retry budget
//! exhausts it). A dropped call (timed out) stops where it was: work done
//! before the drop stays done, like a crashed process with durable state.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};

use crate::lock;
use crate::trace::{txn_label, Trace};

/// Every injected panic message starts with this, so that
/// [`silence_injected_panics`] can keep them out of test output.
pub const INJECTED_PANIC: &str = "dtxn-verify injected panic";

/// Installs (once per process) a panic hook that stays quiet for panics
/// injected by a [`FaultyParticipant`] and defers to the previous hook for
/// every other panic. The coordinator catches injected panics; without
/// this, each would still print a message to stderr.
pub fn silence_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            if !message.is_some_and(|m| m.starts_with(INJECTED_PANIC)) {
                previous(info);
            }
        }));
    });
}

/// Where in a participant call a fault strikes. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum CrashPoint {
    /// In `prepare`, before the resource prepared anything.
    BeforePrepare,
    /// In `prepare`, after the resource prepared, before the vote is returned.
    AfterPrepare,
    /// In `commit`, before the resource applied the transaction.
    BeforeApply,
    /// In `commit`, after the resource applied it, before acknowledging.
    AfterApply,
    /// In `rollback`, before the resource undid anything.
    DuringRollback,
}

impl CrashPoint {
    /// Every crash point.
    pub const ALL: [CrashPoint; 5] = [
        CrashPoint::BeforePrepare,
        CrashPoint::AfterPrepare,
        CrashPoint::BeforeApply,
        CrashPoint::AfterApply,
        CrashPoint::DuringRollback,
    ];
}

/// How a dead participant fails every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum DeathMode {
    /// Calls fail at once: `prepare` panics, `commit`/`rollback` return a
    /// transient error (as a refused connection would look).
    Error,
    /// Calls never return (the coordinator's timeouts end them).
    Hang,
}

/// What a fault does. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum FaultKind {
    /// A transient error (phase 2) or an undo-and-vote-`Aborted` (prepare).
    Error,
    /// A panic.
    Panic,
    /// The call never returns.
    Hang,
    /// Permanent death: this and every later call on the participant fail
    /// or hang.
    Die(DeathMode),
    /// Extra latency, then normal behaviour.
    Slow(Duration),
}

impl FaultKind {
    /// A short name for counting: `error`, `panic`, `hang`, `death`, `slow`.
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Panic => "panic",
            FaultKind::Hang => "hang",
            FaultKind::Die(_) => "death",
            FaultKind::Slow(_) => "slow",
        }
    }
}

/// One planned fault: at `point`, do `kind`, on the first `times` arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Fault {
    /// Where.
    pub point: CrashPoint,
    /// What.
    pub kind: FaultKind,
    /// On how many arrivals at `point` (within the transaction) it fires.
    pub times: u32,
}

impl Fault {
    /// A fault firing once.
    pub fn new(point: CrashPoint, kind: FaultKind) -> Self {
        Self {
            point,
            kind,
            times: 1,
        }
    }

    /// The same fault, firing on the first `times` arrivals.
    pub fn times(self, times: u32) -> Self {
        Self { times, ..self }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {:?}", self.kind, self.point)?;
        if self.times != 1 {
            write!(f, " x{}", self.times)?;
        }
        Ok(())
    }
}

/// Faults that fired, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// Injected errors.
    pub error: u64,
    /// Injected panics.
    pub panic: u64,
    /// Injected hangs.
    pub hang: u64,
    /// Participants killed (each counted once, when it died).
    pub death: u64,
    /// Injected delays.
    pub slow: u64,
}

impl FaultCounts {
    /// Counts one fault of `kind`.
    pub fn count(&mut self, kind: &FaultKind) {
        match kind {
            FaultKind::Error => self.error += 1,
            FaultKind::Panic => self.panic += 1,
            FaultKind::Hang => self.hang += 1,
            FaultKind::Die(_) => self.death += 1,
            FaultKind::Slow(_) => self.slow += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &FaultCounts) {
        self.error += other.error;
        self.panic += other.panic;
        self.hang += other.hang;
        self.death += other.death;
        self.slow += other.slow;
    }

    /// All faults together.
    pub fn total(&self) -> u64 {
        self.error + self.panic + self.hang + self.death + self.slow
    }
}

/// What a participant was told in one transaction, and what it did: the
/// ground truth the [checker](crate::check) compares the coordinator's
/// report with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// `prepare` calls received.
    pub prepare_calls: u32,
    /// `commit` calls received.
    pub commit_calls: u32,
    /// `rollback` calls received.
    pub rollback_calls: u32,
    /// The vote actually returned to the coordinator (`None`: no `prepare`
    /// returned — never asked, or it panicked, hung, or was timed out).
    pub vote: Option<PreparedResult>,
    /// The resource applied the transaction's commit.
    pub applied: bool,
    /// The resource undid the transaction on a coordinator `rollback`.
    pub rolled_back: bool,
    /// A `commit` call returned `Ok` (the coordinator got an acknowledgement).
    pub acked_commit: bool,
    /// A `rollback` call returned `Ok`.
    pub acked_rollback: bool,
    /// The faults that fired, in order.
    pub faults: Vec<Fault>,
}

impl fmt::Display for CallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prepare x{} vote {:?}, commit x{}{}{}, rollback x{}{}",
            self.prepare_calls,
            self.vote,
            self.commit_calls,
            if self.applied { " applied" } else { "" },
            if self.acked_commit { " acked" } else { "" },
            self.rollback_calls,
            if self.acked_rollback { " acked" } else { "" },
        )?;
        if !self.faults.is_empty() {
            let faults: Vec<String> = self.faults.iter().map(Fault::to_string).collect();
            write!(f, ", faults [{}]", faults.join(", "))?;
        }
        Ok(())
    }
}

/// The in-memory state a participant guards: what `prepare`, `commit` and
/// `rollback` do once no fault is in the way. Calls are synchronous and
/// quick (they run under no lock of the participant).
pub trait Resource: Send + Sync + 'static {
    /// Prepares `txn` (reserving what it needs) and votes.
    fn prepare(&self, txn: TransactionId) -> PreparedResult;
    /// Applies `txn`; idempotent. Returns whether this call applied it (not
    /// already applied and something was prepared).
    fn commit(&self, txn: TransactionId) -> bool;
    /// Undoes whatever `txn` reserved or staged; idempotent, and accepts a
    /// transaction never prepared.
    fn rollback(&self, txn: TransactionId);
}

/// The trivial resource: always votes `Ready`, holds nothing.
impl Resource for () {
    fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    fn commit(&self, _txn: TransactionId) -> bool {
        true
    }
    fn rollback(&self, _txn: TransactionId) {}
}

#[derive(Default)]
struct Inner {
    plans: HashMap<TransactionId, Vec<Fault>>,
    records: HashMap<TransactionId, CallRecord>,
    dead: Option<DeathMode>,
    fired: FaultCounts,
}

/// What a crash point decided.
enum Gate {
    Proceed,
    Error,
    Panic,
    Hang,
    Dead(DeathMode),
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Prepare,
    Commit,
    Rollback,
}

/// A [`Participant`] around a [`Resource`] that injects planned faults per
/// transaction and records every call. See the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use dtxn::{Participant, TransactionCoordinator};
/// use dtxn_verify::{CrashPoint, Fault, FaultKind, FaultyParticipant};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let coordinator = TransactionCoordinator::new();
/// let txn = coordinator.begin_transaction().unwrap();
/// let p = Arc::new(FaultyParticipant::new("p", ()));
/// p.plan(txn, Fault::new(CrashPoint::BeforePrepare, FaultKind::Error));
/// coordinator.register_participant(txn, p.clone() as Arc<dyn Participant>).unwrap();
/// assert!(!coordinator.prepare_transaction(txn).await.unwrap().is_prepared());
/// assert_eq!(p.record(txn).prepare_calls, 1);
/// # }
/// ```
pub struct FaultyParticipant<R> {
    name: String,
    recovery_key: Option<String>,
    resource: R,
    inner: Mutex<Inner>,
    trace: Option<Trace>,
}

impl<R: Resource> FaultyParticipant<R> {
    /// A healthy participant named `name` guarding `resource`.
    pub fn new(name: impl Into<String>, resource: R) -> Self {
        Self {
            name: name.into(),
            recovery_key: None,
            resource,
            inner: Mutex::default(),
            trace: None,
        }
    }

    /// The same participant, found again under `key` by a coordinator that
    /// restarts on a decision log ([`Participant::recovery_key`]; with a
    /// log, a participant without one cannot be registered).
    pub fn with_recovery_key(mut self, key: impl Into<String>) -> Self {
        self.recovery_key = Some(key.into());
        self
    }

    /// The same participant, logging its calls and faults to `trace`.
    pub fn with_trace(mut self, trace: Trace) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The guarded resource.
    pub fn resource(&self) -> &R {
        &self.resource
    }

    /// Plans `fault` for `txn` (add several for several points).
    pub fn plan(&self, txn: TransactionId, fault: Fault) {
        lock(&self.inner).plans.entry(txn).or_default().push(fault);
    }

    /// What this participant was told in `txn` (empty if nothing).
    pub fn record(&self, txn: TransactionId) -> CallRecord {
        lock(&self.inner)
            .records
            .get(&txn)
            .cloned()
            .unwrap_or_default()
    }

    /// Removes and returns the record and plan of `txn` (for long runs that
    /// check transactions one by one).
    pub fn take_record(&self, txn: TransactionId) -> CallRecord {
        let mut inner = lock(&self.inner);
        inner.plans.remove(&txn);
        inner.records.remove(&txn).unwrap_or_default()
    }

    /// Whether the participant has died, and how it fails since.
    pub fn dead(&self) -> Option<DeathMode> {
        lock(&self.inner).dead
    }

    /// Faults that fired so far, by kind.
    pub fn faults_fired(&self) -> FaultCounts {
        lock(&self.inner).fired
    }

    fn log(&self, args: fmt::Arguments<'_>) {
        if let Some(trace) = &self.trace {
            trace.log(format_args!("{} {args}", self.name));
        }
    }

    fn update(&self, txn: TransactionId, f: impl FnOnce(&mut CallRecord)) {
        f(lock(&self.inner).records.entry(txn).or_default());
    }

    /// Records the arrival of a call; returns the death mode if dead.
    fn arrive(&self, txn: TransactionId, call: Call) -> Option<DeathMode> {
        self.log(format_args!("{} {call:?}", txn_label(txn)));
        let mut inner = lock(&self.inner);
        let record = inner.records.entry(txn).or_default();
        match call {
            Call::Prepare => record.prepare_calls += 1,
            Call::Commit => record.commit_calls += 1,
            Call::Rollback => record.rollback_calls += 1,
        }
        inner.dead
    }

    /// Fires the fault planned at `point`, if any (sleeping for `Slow`).
    async fn gate(&self, txn: TransactionId, point: CrashPoint) -> Gate {
        let fault = {
            let mut inner = lock(&self.inner);
            let Inner {
                plans,
                records,
                dead,
                fired,
            } = &mut *inner;
            let fault = plans
                .get_mut(&txn)
                .and_then(|faults| faults.iter_mut().find(|f| f.point == point && f.times > 0))
                .map(|f| {
                    f.times -= 1;
                    *f
                });
            if let Some(fault) = fault {
                if let FaultKind::Die(mode) = fault.kind {
                    // Only the first death counts: it stays dead.
                    if dead.is_none() {
                        fired.count(&fault.kind);
                    }
                    *dead = Some(mode);
                } else {
                    fired.count(&fault.kind);
                }
                records
                    .entry(txn)
                    .or_default()
                    .faults
                    .push(Fault { times: 1, ..fault });
            }
            fault
        };
        let Some(fault) = fault else {
            return Gate::Proceed;
        };
        self.log(format_args!(
            "{} fault {:?} at {point:?}",
            txn_label(txn),
            fault.kind
        ));
        match fault.kind {
            FaultKind::Error => Gate::Error,
            FaultKind::Panic => Gate::Panic,
            FaultKind::Hang => Gate::Hang,
            FaultKind::Die(mode) => Gate::Dead(mode),
            FaultKind::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Gate::Proceed
            }
        }
    }

    fn panic(&self, txn: TransactionId, what: &str) -> ! {
        panic!("{INJECTED_PANIC}: {} {} {what}", self.name, txn_label(txn))
    }

    async fn dead_prepare(&self, txn: TransactionId, mode: DeathMode) -> PreparedResult {
        match mode {
            DeathMode::Error => self.panic(txn, "is dead"),
            DeathMode::Hang => std::future::pending().await,
        }
    }

    async fn dead_phase2(&self, mode: DeathMode) -> Result<(), ParticipantError> {
        match mode {
            DeathMode::Error => Err(ParticipantError::transient(format!(
                "{} is dead",
                self.name
            ))),
            DeathMode::Hang => std::future::pending().await,
        }
    }

    fn vote(&self, txn: TransactionId, vote: PreparedResult) -> PreparedResult {
        self.log(format_args!("{} votes {vote:?}", txn_label(txn)));
        self.update(txn, |r| r.vote = Some(vote.clone()));
        vote
    }
}

impl<R> fmt::Debug for FaultyParticipant<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyParticipant")
            .field("name", &self.name)
            .field("dead", &lock(&self.inner).dead)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<R: Resource> Participant for FaultyParticipant<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn recovery_key(&self) -> Option<&str> {
        self.recovery_key.as_deref()
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        if let Some(mode) = self.arrive(txn, Call::Prepare) {
            return self.dead_prepare(txn, mode).await;
        }
        match self.gate(txn, CrashPoint::BeforePrepare).await {
            Gate::Proceed => {}
            Gate::Error => {
                return self.vote(
                    txn,
                    PreparedResult::Aborted("injected error before preparing".into()),
                )
            }
            Gate::Panic => self.panic(txn, "before preparing"),
            Gate::Hang => std::future::pending().await,
            Gate::Dead(mode) => return self.dead_prepare(txn, mode).await,
        }
        let vote = self.resource.prepare(txn);
        match self.gate(txn, CrashPoint::AfterPrepare).await {
            Gate::Proceed => self.vote(txn, vote),
            Gate::Error => {
                // No error channel in prepare: undo, then say no.
                self.resource.rollback(txn);
                self.vote(
                    txn,
                    PreparedResult::Aborted("injected error after preparing".into()),
                )
            }
            Gate::Panic => self.panic(txn, "after preparing"),
            Gate::Hang => std::future::pending().await,
            Gate::Dead(mode) => self.dead_prepare(txn, mode).await,
        }
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        if let Some(mode) = self.arrive(txn, Call::Commit) {
            return self.dead_phase2(mode).await;
        }
        match self.gate(txn, CrashPoint::BeforeApply).await {
            Gate::Proceed => {}
            Gate::Error => {
                return Err(ParticipantError::transient(
                    "injected error before applying",
                ))
            }
            Gate::Panic => self.panic(txn, "before applying"),
            Gate::Hang => std::future::pending().await,
            Gate::Dead(mode) => return self.dead_phase2(mode).await,
        }
        if self.resource.commit(txn) {
            self.log(format_args!("{} applied", txn_label(txn)));
            self.update(txn, |r| r.applied = true);
        }
        match self.gate(txn, CrashPoint::AfterApply).await {
            Gate::Proceed => {}
            Gate::Error => {
                return Err(ParticipantError::transient("injected error after applying"))
            }
            Gate::Panic => self.panic(txn, "after applying"),
            Gate::Hang => std::future::pending().await,
            Gate::Dead(mode) => return self.dead_phase2(mode).await,
        }
        self.log(format_args!("{} acks commit", txn_label(txn)));
        self.update(txn, |r| r.acked_commit = true);
        Ok(())
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        if let Some(mode) = self.arrive(txn, Call::Rollback) {
            return self.dead_phase2(mode).await;
        }
        match self.gate(txn, CrashPoint::DuringRollback).await {
            Gate::Proceed => {}
            Gate::Error => return Err(ParticipantError::transient("injected rollback error")),
            Gate::Panic => self.panic(txn, "during rollback"),
            Gate::Hang => std::future::pending().await,
            Gate::Dead(mode) => return self.dead_phase2(mode).await,
        }
        self.resource.rollback(txn);
        self.log(format_args!("{} acks rollback", txn_label(txn)));
        self.update(txn, |r| {
            r.rolled_back = true;
            r.acked_rollback = true;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Account;

    fn txn(n: u128) -> TransactionId {
        TransactionId::from_u128(n)
    }

    fn account(balance: i64) -> Arc<FaultyParticipant<Account>> {
        silence_injected_panics();
        Arc::new(FaultyParticipant::new("a", Account::new(balance)))
    }

    #[tokio::test(start_paused = true)]
    async fn error_before_prepare_votes_aborted_without_reserving() {
        let p = account(100);
        p.resource().stage(txn(1), -10);
        p.plan(
            txn(1),
            Fault::new(CrashPoint::BeforePrepare, FaultKind::Error),
        );
        assert!(matches!(
            p.prepare(txn(1)).await,
            PreparedResult::Aborted(_)
        ));
        assert_eq!(p.resource().held(txn(1)), None);
        assert_eq!(p.faults_fired().error, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn panic_after_prepare_leaves_the_reservation_and_no_vote() {
        let p = account(100);
        p.resource().stage(txn(1), -10);
        p.plan(
            txn(1),
            Fault::new(CrashPoint::AfterPrepare, FaultKind::Panic),
        );
        let q = Arc::clone(&p);
        let joined = tokio::spawn(async move { q.prepare(txn(1)).await }).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(p.resource().held(txn(1)), Some(-10));
        let r = p.record(txn(1));
        assert_eq!((r.prepare_calls, r.vote), (1, None));
    }

    #[tokio::test(start_paused = true)]
    async fn error_after_apply_applies_once_and_acknowledges_the_retry() {
        let p = account(100);
        p.resource().stage(txn(1), 5);
        p.prepare(txn(1)).await;
        p.plan(txn(1), Fault::new(CrashPoint::AfterApply, FaultKind::Error));
        assert!(p.commit(txn(1)).await.is_err());
        assert!(p.commit(txn(1)).await.is_ok());
        let r = p.record(txn(1));
        assert!(r.applied && r.acked_commit);
        assert_eq!((r.commit_calls, p.resource().balance()), (2, 105));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_delays_by_exactly_its_latency() {
        let p = account(100);
        p.plan(
            txn(1),
            Fault::new(
                CrashPoint::DuringRollback,
                FaultKind::Slow(Duration::from_millis(30)),
            ),
        );
        let start = tokio::time::Instant::now();
        p.rollback(txn(1)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        assert_eq!(p.faults_fired().slow, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_participant_fails_every_later_call_of_every_transaction() {
        let p = account(100);
        p.plan(
            txn(1),
            Fault::new(CrashPoint::BeforeApply, FaultKind::Die(DeathMode::Error)),
        );
        p.resource().stage(txn(1), 5);
        p.prepare(txn(1)).await;
        assert!(p.commit(txn(1)).await.is_err());
        assert!(p.commit(txn(1)).await.is_err(), "still dead on retry");
        assert!(
            p.rollback(txn(2)).await.is_err(),
            "dead for other transactions"
        );
        let q = Arc::clone(&p);
        let joined = tokio::spawn(async move { q.prepare(txn(3)).await }).await;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(p.dead(), Some(DeathMode::Error));
        assert_eq!(p.faults_fired().death, 1);
        assert!(!p.record(txn(1)).applied);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_fires_only_the_planned_number_of_times() {
        let p = account(100);
        p.plan(
            txn(1),
            Fault::new(CrashPoint::DuringRollback, FaultKind::Error).times(2),
        );
        assert!(p.rollback(txn(1)).await.is_err());
        assert!(p.rollback(txn(1)).await.is_err());
        assert!(p.rollback(txn(1)).await.is_ok());
        assert_eq!(p.record(txn(1)).rollback_calls, 3);
    }
}
