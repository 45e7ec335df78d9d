//! The tokio driver: the transaction table, the public coordinator handle,
//! the executor of participant calls and the background sweeper.

mod call;
mod entry;
mod exec;
mod scratch;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::{Action, CoreError, Event, Limits, Operation, Transaction, TransactionState};
use crate::outcome::{
    OutcomeStatus, PrepareOutcome, Registration, TransactionOutcome, TransactionReport,
};
use crate::{CoordinatorConfig, CoordinatorError, Participant, TransactionId};
use entry::{lock, Entry};

/// How far in the future "never" is, for deadlines too large for the
/// clock (as tokio does for its own timers).
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

/// `now + d`, or [`FAR_FUTURE`] from now when that overflows the clock:
/// no configured duration can make it panic.
fn deadline_after(now: Instant, d: std::time::Duration) -> Instant {
    now.checked_add(d).unwrap_or_else(|| now + FAR_FUTURE)
}

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<TransactionId, Arc<Entry>, IdHash>>;

/// 2^64 / φ: multiplying by it spreads a key's bits over the high half of
/// the product (Fibonacci hashing).
pub(crate) const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hashes a [`TransactionId`] with one multiplication instead of SipHash.
///
/// Flooding attacks need attacker-chosen keys *inserted*; the table only
/// ever inserts ids this coordinator generated (a random nonce and a
/// sequence), and looking up a made-up id costs one probe sequence like
/// any other miss.
#[derive(Clone, Copy, Default)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u128(&mut self, v: u128) {
        // Fibonacci hashing of both halves (the sequence, the low half, is
        // what varies). Its best bits are the high ones, so they are
        // rotated to the bottom, where the table takes its index: within
        // a shard the sequence's low six bits are all the same.
        let h = ((v as u64) ^ (v >> 64) as u64).wrapping_mul(FIBONACCI);
        self.0 = h.rotate_left(32);
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `TransactionId`; a correct fallback all the same.
        for &b in bytes {
            let h = (self.0 ^ u64::from(b)).wrapping_mul(FIBONACCI);
            self.0 = h.rotate_left(32);
        }
    }
}

/// State shared by the handles, the executor tasks and the sweeper.
pub(crate) struct Shared {
    pub config: CoordinatorConfig,
    limits: Limits,
    nonce: u64,
    /// Seeds each transaction's jitter generator (with its sequence).
    jitter_seed: u64,
    next_sequence: AtomicU64,
    shards: Box<[Shard]>,
    /// Unfinished transactions (the capacity counter).
    unfinished: AtomicUsize,
    /// Lifetime totals, for metrics.
    committed: AtomicU64,
    aborted: AtomicU64,
    hazards: AtomicU64,
    /// Finished transactions still remembered, oldest first.
    finished: Mutex<VecDeque<(Instant, TransactionId)>>,
    /// Calls that follow calls abandoned with their runtime, waiting for
    /// the next sweep on a live one.
    orphans: Mutex<Vec<(Arc<Entry>, Vec<entry::Call>)>>,
    /// The runtime the sweeper runs on, for work started outside any
    /// runtime (the last handle dropped in plain code). Cleared when that
    /// runtime shuts down.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    /// Whether a sweeper task is alive. Cleared by the task's guard when it
    /// ends or its runtime drops it, so the next call from another runtime
    /// starts a new one.
    sweeper_running: AtomicBool,
    shutdown: AtomicBool,
    wake_sweeper: Notify,
    /// When the sleeping sweeper next wakes, in nanoseconds since `epoch`
    /// (`u64::MAX`: only when woken; 0 while it sweeps). A new deadline or
    /// retention expiry earlier than this wakes it.
    sweeper_wakes: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn shard(&self, id: TransactionId) -> &Shard {
        &self.shards[(id.sequence() as usize) % SHARDS]
    }

    fn get(self: &Arc<Self>, txn: TransactionId) -> Result<Arc<Entry>, CoordinatorError> {
        self.ensure_sweeper();
        lock(self.shard(txn))
            .get(&txn)
            .cloned()
            .ok_or(CoordinatorError::NotFound { txn })
    }

    /// The runtime to spawn work on: the caller's, else the sweeper's.
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| lock(&self.runtime).clone())
    }

    /// Removes `ids` from the table. Each entry is dropped *after* its
    /// shard's lock is released: it may hold the last reference to
    /// participants, whose `Drop` is user code that may call back into the
    /// coordinator (even drop its last handle, which sweeps every shard).
    fn forget(&self, ids: impl IntoIterator<Item = TransactionId>) {
        for id in ids {
            let removed = lock(self.shard(id)).remove(&id);
            drop(removed);
        }
    }

    /// Counts a transaction that just reached terminal `state` (called by
    /// [`Entry::apply`] before it publishes the state).
    pub(crate) fn count_finished(&self, state: TransactionState, hazards: usize) {
        self.unfinished.fetch_sub(1, Ordering::AcqRel);
        let total = if state == TransactionState::Committed {
            &self.committed
        } else {
            &self.aborted
        };
        total.fetch_add(1, Ordering::Relaxed);
        if hazards > 0 {
            self.hazards.fetch_add(hazards as u64, Ordering::Relaxed);
        }
    }

    /// Bookkeeping after a state change (called by [`Entry`]'s step path,
    /// outside its lock): logs the decision, and puts finished transactions
    /// in the retention queue.
    pub(crate) fn after_step(&self, entry: &Entry, changed_to: Option<TransactionState>) {
        let Some(state) = changed_to else { return };
        if let Some(decision) = state.decision().filter(|_| !state.is_terminal()) {
            tracing::debug!(txn = %entry.id, ?decision, "decided");
        }
        if !state.is_terminal() {
            return;
        }
        tracing::debug!(txn = %entry.id, %state, "finished");
        let now = Instant::now();
        // Each finish adds one: at most one goes, keeping the count.
        let oldest = {
            let mut finished = lock(&self.finished);
            finished.push_back((now, entry.id));
            (finished.len() > self.config.retention_count)
                .then(|| finished.pop_front())
                .flatten()
        };
        self.forget(oldest.map(|(_, id)| id));
        self.wake_sweeper_by(deadline_after(now, self.config.retention_period));
    }

    /// Nanoseconds from `epoch` to `at` (saturating).
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wakes the sweeper if it sleeps past `at` (one atomic load when it
    /// does not).
    fn wake_sweeper_by(&self, at: Instant) {
        if self.since_epoch(at) < self.sweeper_wakes.load(Ordering::Acquire) {
            self.wake_sweeper.notify_one();
        }
    }

    /// Ensures a sweeper runs, on the caller's runtime if none is alive:
    /// a coordinator that outlives the runtime that started its sweeper
    /// (one shared across `#[tokio::test]`s, say) gets a new one on the
    /// next call made from another runtime. One atomic load when it runs.
    fn ensure_sweeper(self: &Arc<Self>) {
        if self.sweeper_running.load(Ordering::Acquire) || self.shutdown.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeper_running.swap(true, Ordering::AcqRel) {
            return;
        }
        *lock(&self.runtime) = Some(handle.clone());
        // The guard is made before the spawn, so a task dropped unpolled
        // (its runtime already shutting down) still clears the flag.
        let running = SweeperRunning(Arc::downgrade(self));
        handle.spawn(sweeper(Arc::downgrade(self), running));
    }

    /// Runs what a step outside any runner requires (its calls, its timer)
    /// in a new task.
    fn run_detached(self: &Arc<Self>, entry: &Arc<Entry>, applied: entry::Applied) {
        exec::runner(self, entry, applied).detach("rollback");
    }

    /// Fires `entry`'s timers now if its deadline has passed while it is
    /// Active or Prepared (the core then rolls it back).
    fn expire_if_due(self: &Arc<Self>, entry: &Arc<Entry>) {
        if Instant::now() >= entry.deadline
            && matches!(
                entry.state(),
                TransactionState::Active | TransactionState::Prepared
            )
            && self.runtime().is_some()
        {
            let applied = entry.timeout(self);
            self.run_detached(entry, applied);
        }
    }

    /// Applies a client event, drives the participant calls it requires in
    /// the caller's task until the state satisfies `done`, hands any calls
    /// still running to a spawned task, and returns that state.
    ///
    /// On a refusal, calls the event caused anyway (an expired deadline is
    /// applied first) run in the background. Cancel safe: dropping the
    /// future hands the calls in flight to a spawned task.
    async fn client_call(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        event: Event,
        operation: Operation,
        done: impl Fn(TransactionState) -> bool,
    ) -> Result<TransactionState, CoordinatorError> {
        let phase = match operation {
            Operation::Prepare => "prepare",
            Operation::Commit => "commit",
            Operation::Rollback | Operation::Register => "rollback",
        };
        let mut applied = entry.apply(event, self);
        let result = std::mem::replace(&mut applied.result, Ok(()));
        // Calls that answer at once are driven here; the rest go to a task
        // before this future first returns Pending, so nothing waits on
        // this caller polling again (PROTOCOL.md rule 14).
        let mut runner = exec::runner(self, entry, applied);
        runner.drive_ready(&done);
        runner.detach(phase);
        if let Err(e) = result {
            return Err(map_core_error(entry, e, operation));
        }
        Ok(entry.wait_for(done).await)
    }

    /// Entries not yet terminal (a snapshot, shard by shard).
    fn unfinished_entries(&self) -> Vec<Arc<Entry>> {
        let mut list = Vec::new();
        for shard in self.shards.iter() {
            list.extend(
                lock(shard)
                    .values()
                    .filter(|e| !e.state().is_terminal())
                    .cloned(),
            );
        }
        list
    }

    /// Feeds a failure for every call of `entry` in flight, after they
    /// were dropped unfinished with their runtime, and queues the calls that
    /// follow (retries, rollbacks) and the core's timer for the next sweep:
    /// no runtime may be running now.
    ///
    /// Calls already queued here are not in flight, though the machine
    /// counts them so: when several runners of one transaction go down with
    /// their runtime, the second must not fail the retries the first queued.
    pub(crate) fn abandoned(&self, entry: &Arc<Entry>) {
        let queued: Vec<Action> = lock(&self.orphans)
            .iter()
            .filter(|(orphan, _)| Arc::ptr_eq(orphan, entry))
            .flat_map(|(_, calls)| calls.iter().map(|call| call.action.clone()))
            .collect();
        let mut calls = Vec::new();
        for event in entry.abandoned_calls() {
            if queued.iter().any(|action| answers(&event, action)) {
                continue;
            }
            calls.extend(entry.apply(event, self).calls);
        }
        tracing::warn!(txn = %entry.id, "participant calls abandoned with their runtime");
        if !calls.is_empty() || entry.wake_at().is_some() {
            lock(&self.orphans).push((Arc::clone(entry), calls));
            // The sweeper resumes them, on whichever runtime it lives.
            self.wake_sweeper.notify_one();
        }
    }

    /// Runs the calls queued by [`abandoned`](Self::abandoned), and the
    /// timers of their transactions.
    fn adopt_orphans(self: &Arc<Self>) {
        let orphans = std::mem::take(&mut *lock(&self.orphans));
        for (entry, calls) in orphans {
            tracing::info!(txn = %entry.id, "resuming participant calls abandoned with a runtime");
            let applied = entry::Applied {
                calls,
                wake_at: entry.wake_at(),
                result: Ok(()),
            };
            exec::runner(self, &entry, applied).detach("resume");
        }
    }

    /// Rolls back expired Active/Prepared transactions (at shutdown, tells
    /// every undecided one: the core rolls back those Active or Prepared,
    /// and those Preparing once phase 1 ends) and forgets old finished ones.
    /// Returns when it next has work: the earliest deadline still to come of
    /// an undecided transaction, or the next finished one to forget.
    fn sweep(self: &Arc<Self>, shutting_down: bool) -> Option<Instant> {
        self.adopt_orphans();
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for shard in self.shards.iter() {
            due.extend(
                lock(shard)
                    .values()
                    .filter(|e| {
                        let state = e.state();
                        if shutting_down {
                            return state.decision().is_none();
                        }
                        if state.decision().is_none() && e.deadline > now {
                            next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
                        }
                        // One still Preparing past its deadline is rolled
                        // back by its core once phase 1 ends.
                        e.deadline <= now
                            && matches!(
                                state,
                                TransactionState::Active | TransactionState::Prepared
                            )
                    })
                    .cloned(),
            );
        }
        for entry in due {
            let applied = if shutting_down {
                entry.apply(Event::Shutdown, self)
            } else {
                entry.timeout(self)
            };
            if entry.state().decision().is_some() {
                tracing::info!(txn = %entry.id, shutting_down, "rolled back an abandoned transaction");
            }
            self.run_detached(&entry, applied);
        }
        let mut forget = Vec::new();
        {
            let mut finished = lock(&self.finished);
            while let Some(&(at, id)) = finished.front() {
                if now.saturating_duration_since(at) < self.config.retention_period {
                    let expires = deadline_after(at, self.config.retention_period);
                    next = Some(next.map_or(expires, |n| n.min(expires)));
                    break;
                }
                finished.pop_front();
                forget.push(id);
            }
        }
        self.forget(forget);
        next
    }
}

/// Whether `event` is the result of the call `action`.
fn answers(event: &Event, action: &Action) -> bool {
    match (event, action) {
        (Event::PrepareDone { participant, .. }, Action::Prepare { participant: p }) => {
            participant == p
        }
        (
            Event::Phase2Done {
                participant,
                attempt,
                ..
            },
            Action::Commit {
                participant: p,
                attempt: a,
            }
            | Action::Rollback {
                participant: p,
                attempt: a,
            },
        ) => participant == p && attempt == a,
        _ => false,
    }
}

/// Held by the sweeper task: clears [`Shared::sweeper_running`] (and the
/// runtime it ran on) when the task ends or is dropped with its runtime.
struct SweeperRunning(Weak<Shared>);

impl Drop for SweeperRunning {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            // The runtime first: a sweeper started after the flag clears
            // stores its own.
            *lock(&shared.runtime) = None;
            shared.sweeper_running.store(false, Ordering::Release);
        }
    }
}

/// The background task: sleeps until the next deadline or retention expiry
/// (never sooner than `sweep_interval` after its last sweep, so that many
/// deadlines close together cost one sweep), or until woken by one earlier
/// than planned, an orphaned call or a shutdown; sweeps; and stops when the
/// coordinator is dropped (the drop itself rolls back what no client can
/// finish). An idle coordinator's sweeper sleeps until woken.
async fn sweeper(shared: Weak<Shared>, _running: SweeperRunning) {
    let Some(interval) = shared.upgrade().map(|s| s.config.sweep_interval) else {
        return;
    };
    loop {
        let (notified, wake_at) = match shared.upgrade() {
            Some(s) if s.shutdown.load(Ordering::Acquire) => return,
            Some(s) => {
                // While it sweeps, any new deadline wakes it again after:
                // the sweep may have missed its transaction.
                s.sweeper_wakes.store(0, Ordering::Release);
                // No user code runs in a sweep (participants are dropped
                // with their panics caught); should anything panic all the
                // same, deadlines must still be enforced next time.
                let swept =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.sweep(false)));
                let next = match swept {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::error!("a sweep panicked; the sweeper goes on");
                        Some(Instant::now())
                    }
                };
                let earliest = deadline_after(Instant::now(), interval);
                let wake_at = next.map(|at| at.max(earliest));
                s.sweeper_wakes.store(
                    wake_at.map_or(u64::MAX, |at| s.since_epoch(at)),
                    Ordering::Release,
                );
                // Registered before sleeping so a wake-up is not missed.
                let s2 = Arc::clone(&s);
                drop(s);
                (async move { s2.wake_sweeper.notified().await }, wake_at)
            }
            None => return,
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = notified => {}
        }
    }
}

fn map_core_error(entry: &Entry, e: CoreError, operation: Operation) -> CoordinatorError {
    let txn = entry.id;
    match e {
        CoreError::InvalidState { current, operation } => CoordinatorError::InvalidState {
            txn,
            current,
            operation,
        },
        CoreError::TooManyParticipants { limit } => {
            CoordinatorError::TooManyParticipants { txn, limit }
        }
        // Client events are never stale and the core never makes an illegal
        // move on one; should it ever, refuse the call rather than panic.
        CoreError::Stale { .. } | CoreError::IllegalTransition { .. } => {
            tracing::error!(%txn, error = %e, "core refused a client event unexpectedly");
            CoordinatorError::InvalidState {
                txn,
                current: entry.state(),
                operation,
            }
        }
    }
}

/// Drops into shutdown when the last [`TransactionCoordinator`] clone goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_sweeper.notify_one();
        // No client can finish what is still Active or Prepared: roll it
        // back now. The spawned rollback tasks keep `Shared` alive until done.
        self.shared.sweep(true);
    }
}

/// Coordinates atomic transactions across [`Participant`]s with two-phase
/// commit. State is kept in memory.
///
/// Cheap to clone (an `Arc` inside); every clone drives the same table. It
/// must be used from within a tokio runtime (participant calls that a
/// caller stops waiting for go on in spawned tasks). When the last
/// clone is dropped, the background task rolls back every transaction still
/// Active or Prepared — no client could finish them — and stops once they
/// are done.
///
/// See the [crate docs](crate) for an example and the guarantees.
#[derive(Clone)]
pub struct TransactionCoordinator {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for TransactionCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionCoordinator")
            .field("config", &self.shared().config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for TransactionCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts from [`TransactionCoordinator::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CoordinatorStats {
    /// Transactions not yet Committed or Aborted (counted against
    /// `max_transactions`).
    pub unfinished: usize,
    /// Finished transactions still remembered for queries.
    pub remembered: usize,
    /// Transactions that ended Committed, since the coordinator was made.
    pub committed: u64,
    /// Transactions that ended Aborted, since the coordinator was made.
    pub aborted: u64,
    /// Participants given up on in phase 2 (heuristic hazards), since the
    /// coordinator was made.
    pub hazards: u64,
}

/// One unfinished transaction, from
/// [`TransactionCoordinator::unfinished_transactions`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TransactionSummary {
    /// The transaction.
    pub txn: TransactionId,
    /// Its state: Active, Preparing or Prepared (*in doubt*: voted, waiting
    /// for the client's decision), or Committing/Aborting (phase 2 still
    /// delivering, perhaps retrying).
    pub state: TransactionState,
    /// Time since begin.
    pub age: std::time::Duration,
    /// Registered participants.
    pub participants: usize,
}

impl TransactionCoordinator {
    /// A coordinator with the default [`CoordinatorConfig`].
    pub fn new() -> Self {
        Self::with_config(CoordinatorConfig::default())
    }

    /// A coordinator with `config`.
    pub fn with_config(config: CoordinatorConfig) -> Self {
        let jitter_seed = config.jitter_seed.unwrap_or_else(|| fastrand::u64(..));
        let shared = Arc::new(Shared {
            limits: Limits {
                max_participants: config.max_participants,
                retry: config.retry,
            },
            config,
            nonce: crate::id::instance_nonce(),
            jitter_seed,
            next_sequence: AtomicU64::new(1),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(IdHash)))
                .collect(),
            unfinished: AtomicUsize::new(0),
            committed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            hazards: AtomicU64::new(0),
            finished: Mutex::new(VecDeque::new()),
            orphans: Mutex::new(Vec::new()),
            runtime: Mutex::new(None),
            sweeper_running: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            wake_sweeper: Notify::new(),
            sweeper_wakes: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        shared.ensure_sweeper();
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.shared().config
    }

    /// Current counts.
    pub fn stats(&self) -> CoordinatorStats {
        let shared = self.shared();
        CoordinatorStats {
            unfinished: shared.unfinished.load(Ordering::Acquire),
            remembered: lock(&shared.finished).len(),
            committed: shared.committed.load(Ordering::Relaxed),
            aborted: shared.aborted.load(Ordering::Relaxed),
            hazards: shared.hazards.load(Ordering::Relaxed),
        }
    }

    /// Every transaction not yet Committed or Aborted, oldest first. Takes
    /// each shard's lock briefly in turn, so the list is not one atomic
    /// snapshot: transactions may finish or begin while it is made.
    pub fn unfinished_transactions(&self) -> Vec<TransactionSummary> {
        let now = Instant::now();
        let mut list = Vec::new();
        for entry in self.shared().unfinished_entries() {
            let state = entry.state();
            if !state.is_terminal() {
                list.push(TransactionSummary {
                    txn: entry.id,
                    state,
                    age: now.saturating_duration_since(entry.begun),
                    participants: entry.participant_count(),
                });
            }
        }
        list.sort_by_key(|s| std::cmp::Reverse(s.age));
        list
    }

    /// Shuts the coordinator down gracefully: from now on
    /// [`begin_transaction`](Self::begin_transaction) is refused with
    /// [`CoordinatorError::ShuttingDown`], every transaction still Active or
    /// Prepared is rolled back (no client can finish it any more; one in
    /// Preparing is rolled back once its phase 1 ends), and the returned
    /// future completes once every transaction has reached Committed or
    /// Aborted — phase 2 already under way runs to its end, retries and
    /// all. Bound the wait with [`tokio::time::timeout`] if need be.
    ///
    /// Queries keep working afterwards. Calling it again waits again.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the shutdown and the rollbacks happen on the first poll
    /// and run in spawned tasks; dropping the future only stops waiting.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.shutdown.store(true, Ordering::Release);
        shared.wake_sweeper.notify_one();
        shared.sweep(true);
        for entry in shared.unfinished_entries() {
            entry.wait_for(TransactionState::is_terminal).await;
        }
    }

    /// Begins a transaction in state `Active`.
    ///
    /// # Errors
    ///
    /// [`CoordinatorError::CapacityExceeded`] when `max_transactions`
    /// transactions are unfinished.
    pub fn begin_transaction(&self) -> Result<TransactionId, CoordinatorError> {
        let shared = self.shared();
        if shared.shutdown.load(Ordering::Acquire) {
            return Err(CoordinatorError::ShuttingDown);
        }
        shared.ensure_sweeper();
        let limit = shared.config.max_transactions;
        shared
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| CoordinatorError::CapacityExceeded { limit })?;
        let id = TransactionId::from_parts(
            shared.nonce,
            shared.next_sequence.fetch_add(1, Ordering::Relaxed),
        );
        let now = Instant::now();
        let sequence = id.sequence();
        #[allow(unused_mut)]
        let mut machine = Transaction::new(shared.limits)
            .with_deadline(shared.config.transaction_deadline)
            .with_seed(shared.jitter_seed ^ sequence.wrapping_mul(FIBONACCI));
        #[cfg(feature = "planted-bugs")]
        if let Some(bug) = shared.config.planted_bug {
            machine.plant(bug);
        }
        let deadline = deadline_after(now, shared.config.transaction_deadline);
        let entry = Arc::new(Entry::new(id, machine, now, deadline));
        let refused = {
            let mut shard = lock(shared.shard(id));
            // Checked again under the shard lock, which `shutdown` takes to
            // sweep after raising the flag: either this begin sees the flag,
            // or that sweep sees this transaction and rolls it back.
            if shared.shutdown.load(Ordering::Acquire) {
                Some(entry)
            } else {
                shard.insert(id, entry);
                None
            }
        };
        if refused.is_some() {
            shared.unfinished.fetch_sub(1, Ordering::AcqRel);
            return Err(CoordinatorError::ShuttingDown);
        }
        shared.wake_sweeper_by(deadline);
        tracing::trace!(txn = %id, "begun");
        Ok(id)
    }

    /// Registers `participant` in `txn`. Registering the same `Arc` again
    /// returns [`Registration::AlreadyRegistered`] and changes nothing.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound),
    /// [`InvalidState`](CoordinatorError::InvalidState) unless `Active`,
    /// [`TooManyParticipants`](CoordinatorError::TooManyParticipants) at the
    /// limit.
    pub fn register_participant(
        &self,
        txn: TransactionId,
        participant: Arc<dyn Participant>,
    ) -> Result<Registration, CoordinatorError> {
        self.register(txn, participant, None)
    }

    /// Registers `participant` in `txn` with a [`Payload`](crate::Payload):
    /// application data the participant receives with every call, in its
    /// [`CallContext`](crate::CallContext) (see
    /// [`Participant::prepare_with`]). The payload is shared with each
    /// call, never copied. Otherwise as
    /// [`register_participant`](Self::register_participant); registering
    /// the same `Arc` again keeps the first payload.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use dtxn::{async_trait, CallContext, Participant, ParticipantError, PreparedResult, TransactionId};
    /// # struct Inventory;
    /// # #[async_trait]
    /// # impl Participant for Inventory {
    /// #     async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
    /// #         assert_eq!(cx.payload().and_then(|p| p.as_str()), Some(r#"{"sku":"book","qty":1}"#));
    /// #         Ok(PreparedResult::Ready)
    /// #     }
    /// #     async fn prepare(&self, _: TransactionId) -> PreparedResult { unreachable!() }
    /// #     async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
    /// #     async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dtxn::CoordinatorError> {
    /// let coordinator = dtxn::TransactionCoordinator::new();
    /// let txn = coordinator.begin_transaction()?;
    /// coordinator.register_participant_with_payload(
    ///     txn,
    ///     Arc::new(Inventory),
    ///     r#"{"sku":"book","qty":1}"#,
    /// )?;
    /// coordinator.prepare_transaction(txn).await?;
    /// coordinator.commit_transaction(txn).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`register_participant`](Self::register_participant).
    pub fn register_participant_with_payload(
        &self,
        txn: TransactionId,
        participant: Arc<dyn Participant>,
        payload: impl Into<crate::Payload>,
    ) -> Result<Registration, CoordinatorError> {
        self.register(txn, participant, Some(payload.into()))
    }

    fn register(
        &self,
        txn: TransactionId,
        participant: Arc<dyn Participant>,
        payload: Option<crate::Payload>,
    ) -> Result<Registration, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        self.expire_if_due(&entry);
        match entry.register(participant, payload) {
            Ok(true) => Ok(Registration::Registered),
            Ok(false) => Ok(Registration::AlreadyRegistered),
            Err(e) => Err(map_core_error(&entry, e, Operation::Register)),
        }
    }

    /// Runs phase 1: asks every participant to prepare, concurrently, each
    /// under the prepare timeout. Returns as soon as the outcome is known:
    /// [`PrepareOutcome::Prepared`] when all voted `Ready`/`ReadOnly`, or
    /// [`PrepareOutcome::Aborted`] at the *first* no vote, error, panic or
    /// timeout — without waiting for slower participants. Rollback is then
    /// delivered in the background to everyone who may hold work, including
    /// participants whose `prepare` is still running (they get `rollback`
    /// once that call ends).
    ///
    /// Repeats are idempotent: while Preparing, callers wait for the same
    /// phase 1; afterwards they get its outcome again and nobody is called.
    /// After a Commit decision the phase-1 outcome was `Prepared`.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. On the first poll the prepare calls start, those that
    /// answer at once are taken in this future (no task is spawned when all
    /// do), and the rest go to a spawned task before the future waits: if
    /// it is dropped, or held and never polled again, phase 1 goes on and
    /// other callers are not delayed. Call again (or `rollback_transaction`)
    /// to observe the outcome.
    pub async fn prepare_transaction(
        &self,
        txn: TransactionId,
    ) -> Result<PrepareOutcome, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        let state = shared
            .client_call(&entry, Event::Prepare, Operation::Prepare, |s| {
                s != TransactionState::Preparing
            })
            .await?;
        match state {
            TransactionState::Prepared
            | TransactionState::Committing
            | TransactionState::Committed => Ok(PrepareOutcome::Prepared),
            TransactionState::Aborting | TransactionState::Aborted => Ok(PrepareOutcome::Aborted(
                entry
                    .abort_reason_named()
                    .unwrap_or(crate::AbortReason::RolledBack),
            )),
            // The Prepare event always leaves Active.
            current @ (TransactionState::Active | TransactionState::Preparing) => {
                Err(CoordinatorError::InvalidState {
                    txn,
                    current,
                    operation: Operation::Prepare,
                })
            }
        }
    }

    /// Commits a Prepared transaction: takes the Commit decision, delivers
    /// `commit` to every `Ready` voter concurrently (retrying failures under
    /// the [`RetryPolicy`](crate::RetryPolicy)), and returns the outcome once
    /// every one acknowledged or was given up on (listed as
    /// [`hazards`](TransactionOutcome::hazards)).
    ///
    /// Repeats and concurrent calls wait for / return the same outcome and
    /// call nobody again.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound);
    /// [`InvalidState`](CoordinatorError::InvalidState) when Active or
    /// Preparing (prepare first) or when the decision was Abort.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The Commit decision is taken synchronously on the first
    /// poll, with the commit calls that answer at once; the rest run in a
    /// spawned task that takes phase 2 to the end whether or not this
    /// future is polled again.
    pub async fn commit_transaction(
        &self,
        txn: TransactionId,
    ) -> Result<TransactionOutcome, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        shared
            .client_call(
                &entry,
                Event::Commit,
                Operation::Commit,
                TransactionState::is_terminal,
            )
            .await?;
        Ok(entry.outcome())
    }

    /// Rolls back a transaction that is Active, Preparing or Prepared: takes
    /// the Abort decision and returns once `rollback` reached everyone who
    /// may hold work (or they were given up on, as hazards). In Aborting or
    /// Aborted it returns the same outcome again.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound);
    /// [`InvalidState`](CoordinatorError::InvalidState) when the decision
    /// was Commit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The Abort decision is taken on the first poll, with the
    /// rollback calls that answer at once; the rest run in a spawned task
    /// whether or not this future is polled again.
    pub async fn rollback_transaction(
        &self,
        txn: TransactionId,
    ) -> Result<TransactionOutcome, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        shared
            .client_call(
                &entry,
                Event::Rollback,
                Operation::Rollback,
                TransactionState::is_terminal,
            )
            .await?;
        Ok(entry.outcome())
    }

    /// The transaction's current state. An Active or Prepared transaction
    /// past its deadline is rolled back first, so the answer is never stale.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound).
    pub fn get_transaction_state(
        &self,
        txn: TransactionId,
    ) -> Result<TransactionState, CoordinatorError> {
        let entry = self.shared().get(txn)?;
        self.expire_if_due(&entry);
        Ok(entry.state())
    }

    /// What was decided for `txn`, for anyone holding its id — typically a
    /// participant that prepared and then lost contact with its client:
    /// [`Committed`](OutcomeStatus::Committed) or
    /// [`Aborted`](OutcomeStatus::Aborted) once decided (phase 2 may still
    /// be under way), [`Pending`](OutcomeStatus::Pending) before, and
    /// [`Unknown`](OutcomeStatus::Unknown) for an id this coordinator does
    /// not hold. It never answers `Aborted` for an unknown id: the
    /// transaction may have been forgotten after its retention, or begun
    /// before a restart (PROTOCOL.md rule 15). An Active or Prepared
    /// transaction past its deadline is rolled back first, as in
    /// [`get_transaction_state`](Self::get_transaction_state).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use dtxn::{OutcomeStatus, TransactionCoordinator, TransactionId};
    ///
    /// let coordinator = TransactionCoordinator::new();
    /// let txn = coordinator.begin_transaction().unwrap();
    /// assert_eq!(coordinator.outcome(txn), OutcomeStatus::Pending);
    /// coordinator.rollback_transaction(txn).await.unwrap();
    /// assert_eq!(coordinator.outcome(txn), OutcomeStatus::Aborted);
    ///
    /// let elsewhere: TransactionId = "00000000000000010000000000000001".parse().unwrap();
    /// assert_eq!(coordinator.outcome(elsewhere), OutcomeStatus::Unknown);
    /// # }
    /// ```
    pub fn outcome(&self, txn: TransactionId) -> OutcomeStatus {
        match self.shared().get(txn) {
            Ok(entry) => {
                self.expire_if_due(&entry);
                OutcomeStatus::of(entry.state())
            }
            Err(_) => OutcomeStatus::Unknown,
        }
    }

    /// A detailed report: each participant's name, vote, phase-2 result and
    /// latencies, and the transaction's timings.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound).
    pub fn transaction_report(
        &self,
        txn: TransactionId,
    ) -> Result<TransactionReport, CoordinatorError> {
        let entry = self.shared().get(txn)?;
        self.expire_if_due(&entry);
        Ok(entry.report())
    }

    fn expire_if_due(&self, entry: &Arc<Entry>) {
        self.shared().expire_if_due(entry);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::{IdHash, SHARDS};
    use crate::TransactionId;

    #[test]
    fn ids_of_one_shard_spread_over_the_low_hash_bits() {
        // 4096 consecutive ids of one shard must fill most of 4096 buckets
        // (the table indexes by the low bits).
        let buckets: HashSet<u64> = (0..4096u64)
            .map(|i| {
                let id = TransactionId::from_parts(0x1234_5678_9abc_def0, 7 + i * SHARDS as u64);
                IdHash.hash_one(id) & 4095
            })
            .collect();
        assert!(
            buckets.len() > 2400,
            "only {} of 4096 buckets used",
            buckets.len()
        );
    }
}
