//! One transaction's entry in the table: the core machine behind a short
//! mutex, its participants, timings, and its published state.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::call::Borrowed;
use super::{scratch, Shared};
use crate::core::{
    AbortCause, Action, CallFailure, CoreError, Event, Peer, Phase2Status, PrepareStatus,
    Transaction, TransactionState,
};
use crate::log::{CommitRecord, LoggedParticipant};
use crate::outcome::{
    AbortReason, Hazard, ParticipantReport, TransactionOutcome, TransactionReport,
};
use crate::{CallContext, Participant, Payload, Phase, TransactionId};

/// A participant call ready to be performed by the executor.
pub(crate) struct Call {
    /// The participant, borrowed from the entry's list (see
    /// [`Borrowed`]): no reference count is touched per call.
    pub participant: Borrowed,
    /// A `Prepare`, `Commit` or `Rollback` action.
    pub action: Action,
    pub payload: Option<Payload>,
}

/// A write of the Commit decision to the decision log, ready to be
/// performed by the executor (the core asks for one at a time).
pub(crate) struct LogWrite {
    pub attempt: u32,
    pub record: CommitRecord,
}

/// What becomes of a logged Commit decision once its phase 2 ended.
enum LogEnd {
    /// Every participant acknowledged: the decision can leave the log.
    Ended,
    /// A participant was given up on: the decision stays in the log.
    Hazard,
}

/// A recovered transaction's participants, their recovery keys, and their
/// payloads by index.
pub(crate) type Logged = (
    Vec<Arc<dyn Participant>>,
    Vec<Arc<str>>,
    Vec<(u32, Payload)>,
);

thread_local! {
    /// A step's actions (see [`scratch`]).
    static ACTIONS: Cell<Vec<Action>> = const { Cell::new(Vec::new()) };
    /// A step's calls, given back by the runner that starts them.
    pub(crate) static CALLS: Cell<Vec<Call>> = const { Cell::new(Vec::new()) };
}

/// What one step of the machine did. `calls` must be executed even when
/// `result` is an error: an expired deadline may have been applied first.
pub(crate) struct Applied {
    pub calls: Vec<Call>,
    /// The decision-log write the step asked for, if any.
    pub log: Option<LogWrite>,
    /// When the core next needs its timer while phase 2 is delivered (an
    /// attempt waiting out its backoff). The deadline of an undecided
    /// transaction is the sweeper's, not in here.
    pub wake_at: Option<Instant>,
    /// Whether the event itself was accepted.
    pub result: Result<(), CoreError>,
}

struct Inner {
    machine: Transaction,
    /// Only ever added to (while Active), never removed from before the
    /// entry is dropped: calls borrow their participant from here (see
    /// [`Borrowed`]).
    participants: Vec<Arc<dyn Participant>>,
    /// The payloads registered with participants, by participant index in
    /// ascending order. Most transactions have none: an empty `Vec` holds
    /// no allocation, so they pay one word-triple and nothing per
    /// participant.
    payloads: Vec<(u32, Payload)>,
    /// Each participant's recovery key, with a decision log (else empty).
    keys: Vec<Arc<str>>,
    /// Which participants may already be registered: a 256-bit Bloom
    /// filter over their addresses, so most registrations skip the linear
    /// duplicate scan (which made registering N participants O(N²)).
    registered: Registered,
    /// Callers waiting for a state change (see [`Entry::wait_for`]): a
    /// change with none wakes nobody.
    waiters: u32,
}

impl Inner {
    /// The payload of participant `index`, if one was registered.
    fn payload(&self, index: usize) -> Option<Payload> {
        if self.payloads.is_empty() {
            return None;
        }
        let index = u32::try_from(index).ok()?;
        self.payloads
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|at| self.payloads[at].1.clone())
    }
}

impl Drop for Inner {
    /// Participants are user values: their `Drop` may panic or call back
    /// into the coordinator. Whoever drops the last reference to an entry
    /// does so outside every coordinator lock (see `Shared::forget`); here
    /// each participant is dropped on its own with panics caught, so a
    /// panicking `Drop` reaches neither that caller nor the sweeper.
    fn drop(&mut self) {
        for participant in self.participants.drain(..) {
            drop_user(participant);
        }
    }
}

/// Drops a user value (a participant), catching a panic from its `Drop`.
pub(crate) fn drop_user<T>(value: T) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
    if dropped.is_err() {
        tracing::error!("a participant's Drop panicked; the panic was caught and ignored");
    }
}

pub(crate) struct Entry {
    pub id: TransactionId,
    pub begun: Instant,
    pub deadline: Instant,
    inner: Mutex<Inner>,
    /// The machine's state, published for lock-free reads and waiters
    /// (see [`StateCell`]).
    state: StateCell,
    /// The contexts of first calls without a payload, one per phase: the
    /// calls borrow them from here (see `call.rs`).
    contexts: [CallContext; 3],
}

/// A 256-bit Bloom filter (one hash) over participant addresses.
#[derive(Default)]
struct Registered([u64; 4]);

impl Registered {
    fn bit(ptr: *const ()) -> (usize, u64) {
        // Fibonacci hashing of the address; its top eight bits pick the bit.
        let h = (ptr as usize as u64).wrapping_mul(super::FIBONACCI) >> 56;
        ((h >> 6) as usize, 1 << (h & 63))
    }

    fn contains(&self, ptr: *const ()) -> bool {
        let (word, mask) = Self::bit(ptr);
        self.0[word] & mask != 0
    }

    fn insert(&mut self, ptr: *const ()) {
        let (word, mask) = Self::bit(ptr);
        self.0[word] |= mask;
    }
}

/// Locks, ignoring poisoning: no user code runs under these locks, and the
/// machine is left consistent by every `handle` call (errors change nothing).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A participant's name; a `name()` that panics gets a placeholder instead
/// of taking the coordinator down.
pub(crate) fn safe_name(p: &dyn Participant) -> String {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.name().to_owned()))
        .unwrap_or_else(|_| "<name() panicked>".to_owned())
}

impl Entry {
    pub fn new(id: TransactionId, machine: Transaction, begun: Instant, deadline: Instant) -> Self {
        Self {
            id,
            begun,
            deadline,
            inner: Mutex::new(Inner {
                machine,
                participants: Vec::new(),
                payloads: Vec::new(),
                keys: Vec::new(),
                registered: Registered::default(),
                waiters: 0,
            }),
            state: StateCell::new(),
            contexts: [Phase::Prepare, Phase::Commit, Phase::Rollback]
                .map(|phase| CallContext::new(id, phase)),
        }
    }

    /// The entry of a transaction recovered from the decision log, its
    /// machine replayed to Committing: participants, their recovery keys
    /// and payloads (by index) as logged.
    pub fn recovered(
        id: TransactionId,
        machine: Transaction,
        begun: Instant,
        (participants, keys, payloads): Logged,
    ) -> Self {
        let state = machine.state();
        let entry = Self::new(id, machine, begun, begun);
        {
            let mut inner = lock(&entry.inner);
            for p in &participants {
                inner.registered.insert(Arc::as_ptr(p) as *const ());
            }
            inner.participants = participants;
            inner.keys = keys;
            inner.payloads = payloads;
        }
        entry.state.set(state);
        entry
    }

    /// The context of a first call without a payload in `phase`.
    pub fn context(&self, phase: Phase) -> &CallContext {
        &self.contexts[match phase {
            Phase::Prepare => 0,
            Phase::Commit => 1,
            Phase::Rollback => 2,
        }]
    }

    pub fn state(&self) -> TransactionState {
        self.state.get()
    }

    /// A time of the core as an instant of the clock (saturating).
    fn instant(&self, at: Duration) -> Instant {
        super::deadline_after(self.begun, at)
    }

    /// Registers `participant` unless this very `Arc` is already registered.
    /// Returns `Ok(true)` when added. A refused or duplicate `participant`
    /// is returned, for the caller to drop once it holds no lock (it may be
    /// the last reference).
    pub(crate) fn register(
        &self,
        participant: Arc<dyn Participant>,
        payload: Option<Payload>,
        key: Option<Arc<str>>,
    ) -> (Result<bool, CoreError>, Option<Arc<dyn Participant>>) {
        let mut inner = lock(&self.inner);
        let state = inner.machine.state();
        if state != TransactionState::Active {
            let refused = CoreError::InvalidState {
                current: state,
                operation: crate::core::Operation::Register,
            };
            return (Err(refused), Some(participant));
        }
        let ptr = Arc::as_ptr(&participant) as *const ();
        let maybe_registered = inner.registered.contains(ptr);
        if maybe_registered
            && inner
                .participants
                .iter()
                .any(|p| Arc::as_ptr(p) as *const () == ptr)
        {
            return (Ok(false), Some(participant));
        }
        if let Err(e) = inner.machine.register(&mut Vec::new()) {
            return (Err(e), Some(participant));
        }
        if let Some(payload) = payload {
            // The limit on participants keeps indices far below u32::MAX.
            let index = u32::try_from(inner.participants.len()).unwrap_or(u32::MAX);
            inner.payloads.push((index, payload));
        }
        inner.participants.push(participant);
        inner.keys.extend(key);
        inner.registered.insert(ptr);
        (Ok(true), None)
    }

    /// Feeds `event` to the machine (see [`step`](Self::step)).
    pub fn apply(&self, event: Event, shared: &Shared) -> Applied {
        self.apply_all(std::iter::once(event), shared)
    }

    /// Feeds `events` to the machine in order, in one step: the answers of
    /// calls that finished together (a phase whose participants all answer
    /// at once) cost one lock and one clock reading, not one each.
    /// `result` is the first refusal, if any.
    pub fn apply_all(&self, events: impl IntoIterator<Item = Event>, shared: &Shared) -> Applied {
        self.step(shared, |inner, now, actions, gave_up| {
            let mut result = Ok(());
            for event in events {
                let answered = match &event {
                    Event::PrepareDone { participant, .. }
                    | Event::Phase2Done { participant, .. } => Some(*participant),
                    _ => None,
                };
                let handled = inner.machine.handle_at(event, now, actions);
                if let (Some(i), Ok(())) = (answered, &handled) {
                    if let Phase2Status::GaveUp { attempts, .. } = inner.machine.peers()[i].phase2 {
                        gave_up.push((Arc::clone(&inner.participants[i]), attempts));
                    }
                }
                if result.is_ok() {
                    result = handled;
                }
            }
            result
        })
    }

    /// Fires the machine's timers: the deadline, phase-2 attempts whose
    /// backoff is over.
    pub fn timeout(&self, shared: &Shared) -> Applied {
        self.step(shared, |inner, now, actions, _| {
            inner.machine.handle_timeout(now, actions)
        })
    }

    /// Issues now the phase-2 retries and the log write waiting out their
    /// backoff (an operator's "retry now").
    pub fn retry_now(&self, shared: &Shared) -> Applied {
        self.step(shared, |inner, now, actions, _| {
            inner.machine.retry_now(now, actions)
        })
    }

    /// Whether the Commit decision is durable in the decision log.
    pub fn commit_logged(&self) -> bool {
        lock(&self.inner).machine.commit_logged()
    }

    /// When the machine next needs its timer while phase 2 is delivered.
    pub fn wake_at(&self) -> Option<Instant> {
        let inner = lock(&self.inner);
        Self::phase2_timer(&inner).map(|at| self.instant(at))
    }

    fn phase2_timer(inner: &Inner) -> Option<Duration> {
        let state = inner.machine.state();
        (state.decision().is_some() && !state.is_terminal())
            .then(|| inner.machine.poll_timeout())
            .flatten()
    }

    /// The one step path: under the entry's lock and with one clock
    /// reading, `feed` hands the machine its input; then the actions it
    /// returned become calls, a finished transaction is counted, the new
    /// state is published, and (after the lock) a decision or an end is
    /// logged and a finished transaction queued for forgetting.
    ///
    /// A terminal state is counted in `shared`'s totals *before* it is
    /// published, so whoever sees it finished also sees it counted.
    fn step(
        &self,
        shared: &Shared,
        feed: impl FnOnce(
            &mut Inner,
            Duration,
            &mut Vec<Action>,
            &mut Vec<(Arc<dyn Participant>, u32)>,
        ) -> Result<(), CoreError>,
    ) -> Applied {
        let mut actions = scratch::take(&ACTIONS);
        let mut gave_up = Vec::new();
        let mut inner = lock(&self.inner);
        let before = inner.machine.state();
        // The one clock reading of the step: the core's time is since the
        // transaction began.
        let now = Instant::now();
        let core_now = now.saturating_duration_since(self.begun);
        let result = feed(&mut inner, core_now, &mut actions, &mut gave_up);
        let after = inner.machine.state();
        if before == TransactionState::Active && after != TransactionState::Active {
            // Registration is over: give back the growth slack, when there
            // is enough of it to be worth a reallocation (a quarter of the
            // list, and at least 16 slots: 256 bytes).
            let (len, capacity) = (inner.participants.len(), inner.participants.capacity());
            if capacity - len > (len / 4).max(15) {
                inner.participants.shrink_to_fit();
            }
            inner.payloads.shrink_to_fit();
        }
        let mut calls = if actions.is_empty() {
            Vec::new()
        } else {
            scratch::take(&CALLS)
        };
        // A write of the log is asked for only while the machine awaits
        // it: the common step pays one check.
        let log = inner
            .machine
            .awaiting_log()
            .then(|| {
                let at = actions
                    .iter()
                    .position(|a| matches!(a, Action::LogCommit { .. }))?;
                let Action::LogCommit { attempt } = actions.remove(at) else {
                    return None;
                };
                Some(LogWrite {
                    attempt,
                    record: self.commit_record(&inner),
                })
            })
            .flatten();
        // Only participant calls are left.
        calls.extend(actions.drain(..).map(|action| {
            let i = action.participant().unwrap_or_default();
            Call {
                participant: Borrowed::of(&inner.participants[i]),
                payload: inner.payload(i),
                action,
            }
        }));
        scratch::give(&ACTIONS, actions);
        let log_end = (after == TransactionState::Committed
            && before != TransactionState::Committed
            && inner.machine.commit_logged())
        .then(|| {
            if inner.machine.hazards().next().is_none() {
                LogEnd::Ended
            } else {
                LogEnd::Hazard
            }
        });
        let wake_at = Self::phase2_timer(&inner).map(|at| self.instant(at));
        let mut hazard_free = false;
        if after.is_terminal() && !before.is_terminal() {
            let hazards = inner.machine.hazards().count();
            hazard_free = hazards == 0;
            shared.count_finished(after, hazards);
        }
        // Published under the lock so concurrent steps cannot publish
        // states out of order.
        let changed_to = (after != before).then(|| {
            self.publish(&inner, after, hazard_free);
            after
        });
        drop(inner);
        for (p, attempts) in gave_up {
            tracing::warn!(
                txn = %self.id,
                participant = %safe_name(&*p),
                attempts,
                decision = ?after.decision().unwrap_or(crate::core::Decision::Abort),
                "participant given up on in phase 2: heuristic hazard"
            );
        }
        match log_end {
            Some(LogEnd::Ended) => shared.log_end(self.id),
            Some(LogEnd::Hazard) => shared.keep_logged_hazard(self),
            None => {}
        }
        shared.after_step(self, changed_to, now);
        Applied {
            calls,
            log,
            wake_at,
            result,
        }
    }

    /// The Commit decision as logged: the participants that voted `Ready`,
    /// by recovery key, with their payloads.
    fn commit_record(&self, inner: &Inner) -> CommitRecord {
        let participants = inner
            .machine
            .peers()
            .iter()
            .enumerate()
            .filter(|(_, peer)| peer.prepare == PrepareStatus::Voted(crate::PreparedResult::Ready))
            .map(|(i, _)| LoggedParticipant {
                // With a log every registration has a key (refused
                // otherwise). Were one missing, the participant is still
                // logged, under a key no resolver knows: after a crash it
                // is a reported hazard, never silently left out.
                key: inner
                    .keys
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Arc::from("<no recovery key>")),
                payload: inner.payload(i),
            })
            .collect();
        CommitRecord {
            txn: self.id,
            participants,
        }
    }

    /// Whether the Commit decision waits to be made durable (see
    /// [`Transaction::awaiting_log`]).
    pub fn awaiting_log(&self) -> bool {
        lock(&self.inner).machine.awaiting_log()
    }

    /// Publishes `state`, under the entry's lock (so states are published
    /// in order), and wakes the callers waiting for a change, if any.
    /// `hazard_free`: `state` is terminal and no participant was given up
    /// on, which lets [`outcome`](Self::outcome) answer a clean commit
    /// without the lock.
    fn publish(&self, inner: &Inner, state: TransactionState, hazard_free: bool) {
        self.state.set_ended(state, hazard_free);
        if inner.waiters > 0 {
            self.state.changed.notify_waiters();
        }
    }

    /// Waits until the state satisfies `pred`. Cancel safe.
    ///
    /// A state already there costs one atomic read. Otherwise the caller
    /// registers as a waiter under the entry's lock, where states are
    /// published: either the state it then reads is new enough, or the
    /// publication that follows sees it counted and wakes it.
    pub async fn wait_for(&self, pred: impl Fn(TransactionState) -> bool) -> TransactionState {
        let state = self.state.get();
        if pred(state) {
            return state;
        }
        let mut waiter = Waiter {
            entry: self,
            counted: false,
        };
        loop {
            // `notify_waiters` wakes a `Notified` from when it is made and
            // enabled: both happen before the lock is released.
            let notified = self.state.changed.notified();
            let mut notified = std::pin::pin!(notified);
            {
                let mut inner = lock(&self.inner);
                let state = self.state.get();
                if pred(state) {
                    if waiter.counted {
                        inner.waiters -= 1;
                        waiter.counted = false;
                    }
                    return state;
                }
                if !waiter.counted {
                    inner.waiters += 1;
                    waiter.counted = true;
                }
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    fn abort_reason(inner: &Inner) -> Option<(AbortCause, Option<Arc<dyn Participant>>)> {
        let cause = inner.machine.abort_cause()?.clone();
        let who = match &cause {
            AbortCause::Voted { participant, .. }
            | AbortCause::PrepareFailed { participant, .. } => {
                Some(Arc::clone(&inner.participants[*participant]))
            }
            _ => None,
        };
        Some((cause, who))
    }

    pub fn abort_reason_named(&self) -> Option<AbortReason> {
        let found = Self::abort_reason(&lock(&self.inner));
        found.map(|(cause, who)| name_cause(cause, who.as_deref()))
    }

    /// A failure for every call the machine believes in flight (not those
    /// waiting out a backoff: their timer is simply armed again): what to
    /// feed it when the calls were dropped unfinished with their runtime.
    pub fn abandoned_calls(&self) -> Vec<Event> {
        let inner = lock(&self.inner);
        let mut events = Vec::new();
        if let Some(attempt) = inner.machine.log_write_in_flight() {
            events.push(Event::CommitLogged {
                attempt,
                result: Err(CallFailure::Abandoned),
            });
        }
        for (participant, peer) in inner.machine.peers().iter().enumerate() {
            if peer.prepare == crate::core::PrepareStatus::InFlight {
                events.push(Event::PrepareDone {
                    participant,
                    result: Err(CallFailure::Abandoned),
                });
            }
            let waiting = inner.machine.retry_due(participant).is_some();
            if let (Phase2Status::InFlight { attempt }, false) = (&peer.phase2, waiting) {
                let attempt = *attempt;
                events.push(Event::Phase2Done {
                    participant,
                    attempt,
                    result: Err(CallFailure::Abandoned),
                    retry_budget_spent: false,
                });
            }
        }
        events
    }

    pub fn participant_count(&self) -> usize {
        lock(&self.inner).participants.len()
    }

    /// The final outcome (call once the state is terminal or decided).
    pub fn outcome(&self) -> TransactionOutcome {
        if self.state.committed_cleanly() {
            // Final: nothing about a Committed transaction changes again.
            return TransactionOutcome {
                txn: self.id,
                decision: crate::core::Decision::Commit,
                abort_reason: None,
                hazards: Vec::new(),
            };
        }
        let (decision, reason, hazards) = {
            let inner = lock(&self.inner);
            let decision = inner.machine.state().decision();
            let hazards: Vec<_> = inner
                .machine
                .hazards()
                .map(|(i, attempts, last)| {
                    (
                        Arc::clone(&inner.participants[i]),
                        i,
                        attempts,
                        last.clone(),
                    )
                })
                .collect();
            (decision, Self::abort_reason(&inner), hazards)
        };
        let decision = decision.unwrap_or(crate::core::Decision::Abort);
        TransactionOutcome {
            txn: self.id,
            decision,
            abort_reason: reason.map(|(cause, who)| name_cause(cause, who.as_deref())),
            hazards: hazards
                .into_iter()
                .map(|(p, index, attempts, last_failure)| Hazard {
                    participant: safe_name(&*p),
                    index,
                    decision,
                    attempts,
                    last_failure,
                })
                .collect(),
        }
    }

    pub fn report(&self) -> TransactionReport {
        let now = Instant::now();
        let (state, reason, peers, participants, latencies, prepare_started, decided, finished) = {
            let inner = lock(&self.inner);
            let m = &inner.machine;
            (
                m.state(),
                Self::abort_reason(&inner),
                m.peers().to_vec(),
                inner.participants.clone(),
                (0..inner.participants.len())
                    .map(|i| (m.prepare_latency(i), m.phase2_latency(i)))
                    .collect::<Vec<_>>(),
                m.prepare_started(),
                m.decided_at(),
                m.finished_at(),
            )
        };
        TransactionReport {
            txn: self.id,
            state,
            abort_reason: reason.map(|(cause, who)| name_cause(cause, who.as_deref())),
            // While Active the core keeps no per-participant state: every
            // registered participant is unasked.
            participants: participants
                .iter()
                .zip(latencies)
                .enumerate()
                .map(|(i, (p, (prepare_latency, phase2_latency)))| {
                    let peer = peers.get(i).cloned().unwrap_or(Peer::UNASKED);
                    ParticipantReport {
                        name: safe_name(&**p),
                        prepare: peer.prepare,
                        phase2: peer.phase2,
                        prepare_latency,
                        phase2_latency,
                    }
                })
                .collect(),
            elapsed: finished.unwrap_or_else(|| now.saturating_duration_since(self.begun)),
            prepare_started,
            decided,
        }
    }
}

fn name_cause(cause: AbortCause, who: Option<&dyn Participant>) -> AbortReason {
    let name = || who.map(safe_name).unwrap_or_default();
    match cause {
        AbortCause::Voted {
            participant,
            reason,
        } => AbortReason::Voted {
            participant: name(),
            index: participant,
            reason,
        },
        AbortCause::PrepareFailed {
            participant,
            failure,
        } => AbortReason::PrepareFailed {
            participant: name(),
            index: participant,
            failure,
        },
        AbortCause::RolledBack => AbortReason::RolledBack,
        AbortCause::DeadlineExpired => AbortReason::DeadlineExpired,
        AbortCause::CoordinatorShutdown => AbortReason::CoordinatorShutdown,
    }
}

/// A transaction's state for readers outside the lock: an atomic byte and a
/// [`Notify`] for waiters. Far smaller than a `watch` channel (which keeps
/// eight notifiers per channel), and waking is one `notify_waiters`, only
/// when someone waits (see [`Entry::wait_for`]).
struct StateCell {
    state: AtomicU8,
    changed: Notify,
}

impl StateCell {
    const STATES: [TransactionState; 7] = [
        TransactionState::Active,
        TransactionState::Preparing,
        TransactionState::Prepared,
        TransactionState::Committing,
        TransactionState::Committed,
        TransactionState::Aborting,
        TransactionState::Aborted,
    ];

    fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
            changed: Notify::new(),
        }
    }

    /// Set beside a terminal state with no hazards.
    const HAZARD_FREE: u8 = 0x80;

    fn get(&self) -> TransactionState {
        let byte = self.state.load(Ordering::Acquire) & !Self::HAZARD_FREE;
        Self::STATES[usize::from(byte)]
    }

    /// Whether the state is Committed with no participant given up on.
    fn committed_cleanly(&self) -> bool {
        self.state.load(Ordering::Acquire) == TransactionState::Committed as u8 | Self::HAZARD_FREE
    }

    /// Stores `state`: see [`Entry::publish`].
    fn set(&self, state: TransactionState) {
        self.set_ended(state, false);
    }

    /// Stores `state`, marked hazard-free if `hazard_free` (see
    /// [`Entry::publish`]).
    fn set_ended(&self, state: TransactionState, hazard_free: bool) {
        // `STATES` lists the variants in declaration order.
        let flag = if hazard_free { Self::HAZARD_FREE } else { 0 };
        self.state.store(state as u8 | flag, Ordering::Release);
    }
}

/// A caller of [`Entry::wait_for`]: counted among the entry's waiters
/// until it returns or is dropped.
struct Waiter<'a> {
    entry: &'a Entry,
    counted: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.counted {
            lock(&self.entry.inner).waiters -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{lock, Entry, StateCell};
    use crate::core::{Limits, Transaction};
    use crate::{TransactionId, TransactionState};

    fn entry() -> Arc<Entry> {
        let now = tokio::time::Instant::now();
        Arc::new(Entry::new(
            TransactionId::from_parts(1, 1),
            Transaction::new(Limits::default()),
            now,
            now,
        ))
    }

    fn publish(entry: &Entry, state: TransactionState) {
        entry.publish(&lock(&entry.inner), state, false);
    }

    fn waiters(entry: &Entry) -> u32 {
        lock(&entry.inner).waiters
    }

    #[test]
    fn every_state_round_trips_through_the_cell() {
        let cell = StateCell::new();
        for state in StateCell::STATES {
            cell.set(state);
            assert_eq!(cell.get(), state);
            assert!(!cell.committed_cleanly());
            cell.set_ended(state, true);
            assert_eq!(cell.get(), state);
            assert_eq!(
                cell.committed_cleanly(),
                state == TransactionState::Committed
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_on_the_state_it_waits_for() {
        let entry = entry();
        let waiter = tokio::spawn({
            let entry = entry.clone();
            async move { entry.wait_for(TransactionState::is_terminal).await }
        });
        tokio::task::yield_now().await;
        publish(&entry, TransactionState::Preparing);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        publish(&entry, TransactionState::Aborted);
        assert_eq!(waiter.await.unwrap(), TransactionState::Aborted);
        assert_eq!(waiters(&entry), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_is_no_longer_counted_and_later_waiters_still_wake() {
        let entry = entry();
        let dropped = tokio::spawn({
            let entry = entry.clone();
            async move { entry.wait_for(TransactionState::is_terminal).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(waiters(&entry), 1);
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        assert_eq!(waiters(&entry), 0);
        // A state already there is returned without counting a waiter.
        assert_eq!(
            entry.wait_for(|s| s == TransactionState::Active).await,
            TransactionState::Active
        );
        assert_eq!(waiters(&entry), 0);
        let waiter = tokio::spawn({
            let entry = entry.clone();
            async move { entry.wait_for(TransactionState::is_terminal).await }
        });
        tokio::task::yield_now().await;
        publish(&entry, TransactionState::Committed);
        assert_eq!(waiter.await.unwrap(), TransactionState::Committed);
        assert_eq!(waiters(&entry), 0);
    }

    #[test]
    fn racing_publications_never_strand_a_waiter() {
        // Two threads: one waits for Committed, the other publishes it at
        // once; repeated, any lost wake-up would hang a run.
        for _ in 0..2000 {
            let entry = entry();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let publisher = std::thread::spawn({
                let entry = entry.clone();
                move || publish(&entry, TransactionState::Committed)
            });
            let state = rt.block_on(entry.wait_for(TransactionState::is_terminal));
            assert_eq!(state, TransactionState::Committed);
            publisher.join().unwrap();
        }
    }
}
