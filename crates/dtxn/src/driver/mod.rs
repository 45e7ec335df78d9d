//! The tokio driver around the protocol core, by job:
//!
//! * `mod.rs`: the transaction table shared by everything ([`Shared`]):
//!   shards, capacity, retention, the client call path;
//! * `handle.rs`: the public handle, [`TransactionCoordinator`];
//! * `entry.rs`: one transaction's entry: the core behind a short lock, its
//!   participants, the one step path, its published state and reports;
//! * `exec.rs`: the runner that executes a step's calls and timer;
//! * `call.rs`: one participant call, polled in place;
//! * `sweeper.rs`: the background task (deadlines, retention, orphans);
//! * `scratch.rs`: per-thread buffers.

mod call;
mod entry;
mod exec;
mod handle;
mod scratch;
mod sweeper;

pub use handle::{
    CoordinatorStats, LoggedDecision, Ownership, TransactionCoordinator, TransactionSummary,
};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::{Action, CoreError, Event, Limits, Operation, TransactionState};
use crate::log::DecisionLog;
use crate::{CoordinatorConfig, CoordinatorError, OutcomeStatus, TransactionId};
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

/// [`Shared::sweeper_wakes`] while a sweep runs (and before the first).
const SWEEPING: u64 = 0;

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

/// What a transaction's runner left to do when it was dropped with its
/// runtime: the calls and the log write that follow.
type Orphan = (Arc<Entry>, Vec<entry::Call>, Option<entry::LogWrite>);

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
    orphans: Mutex<Vec<Orphan>>,
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
    /// (`u64::MAX`: only when woken; [`SWEEPING`] while it sweeps). A new
    /// deadline or retention expiry earlier than this wakes it.
    sweeper_wakes: AtomicU64,
    epoch: Instant,
    /// The decision log, if the coordinator keeps one.
    log: Option<Arc<dyn DecisionLog>>,
    /// With a log: the nonces of every coordinator that used it, whose
    /// ids are this log's (presumed abort answers for them).
    incarnations: Mutex<Vec<u64>>,
    /// Logged Commit decisions that ended with a participant given up on,
    /// with those participants' names: kept in the log until an operator
    /// resolves them, and answered `committed` even once forgotten here.
    logged_hazards: Mutex<HashMap<TransactionId, Vec<String>>>,
    /// With a shared log: the lease without which no call is sent
    /// (PROTOCOL.md rule 17).
    lease: Option<crate::log::Lease>,
    /// Set for good once the lease was found lost or lapsed: the
    /// coordinator acts on nothing any more.
    fenced: AtomicBool,
    /// Woken once when `fenced` is set.
    on_fenced: Notify,
    /// Coordinators taken over, and the decisions adopted from them.
    takeovers: AtomicU64,
    adopted: AtomicU64,
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
    pub(crate) fn after_step(
        &self,
        entry: &Entry,
        changed_to: Option<TransactionState>,
        now: Instant,
    ) {
        let Some(state) = changed_to else { return };
        if let Some(decision) = state.decision().filter(|_| !state.is_terminal()) {
            tracing::debug!(txn = %entry.id, ?decision, "decided");
        }
        if !state.is_terminal() {
            return;
        }
        tracing::debug!(txn = %entry.id, %state, "finished");
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

    /// Puts a logged Commit decision back in the table and delivers it
    /// again. The transaction is replayed through the core to Committing,
    /// then told its decision is durable, which issues the `commit` calls.
    fn redeliver(
        self: &Arc<Self>,
        record: crate::log::CommitRecord,
        resolver: &dyn crate::log::ParticipantResolver,
        recovery: &mut crate::log::Recovery,
    ) {
        let txn = record.txn;
        let count = record.participants.len();
        let mut participants: Vec<Arc<dyn crate::Participant>> = Vec::with_capacity(count);
        let mut keys = Vec::with_capacity(count);
        let mut payloads = Vec::new();
        for (i, logged) in record.participants.into_iter().enumerate() {
            let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                resolver.resolve(&logged.key)
            }))
            .ok()
            .flatten();
            participants.push(found.unwrap_or_else(|| {
                tracing::error!(%txn, key = %logged.key, "no participant for this recovery key: it is given up on");
                recovery.unresolved.push((txn, logged.key.to_string()));
                Arc::new(Unresolved(Arc::clone(&logged.key)))
            }));
            keys.push(logged.key);
            if let Some(payload) = logged.payload {
                payloads.push((u32::try_from(i).unwrap_or(u32::MAX), payload));
            }
        }
        // A lower limit since the decision was logged must not refuse it.
        let limits = Limits {
            max_participants: self.limits.max_participants.max(count),
            ..self.limits
        };
        let mut machine = crate::core::Transaction::new(limits)
            .with_seed(self.jitter_seed ^ txn.as_u128() as u64)
            .with_decision_log();
        let mut ignored = Vec::new();
        let replayed = (0..count)
            .map(|_| Event::Register)
            .chain([Event::Prepare])
            .chain((0..count).map(|participant| Event::PrepareDone {
                participant,
                result: Ok(crate::PreparedResult::Ready),
            }))
            .chain([Event::Commit])
            .try_for_each(|event| machine.handle(event, &mut ignored));
        if let Err(e) = replayed {
            tracing::error!(%txn, error = %e, "a logged decision could not be replayed");
            return;
        }
        let now = Instant::now();
        let entry = Arc::new(Entry::recovered(
            txn,
            machine,
            now,
            (participants, keys, payloads),
        ));
        self.unfinished.fetch_add(1, Ordering::AcqRel);
        lock(self.shard(txn)).insert(txn, Arc::clone(&entry));
        recovery.redelivering.push(txn);
        let durable = Event::CommitLogged {
            attempt: 1,
            result: Ok(()),
        };
        let applied = entry.apply(durable, self);
        self.run_detached(&entry, applied);
    }

    /// Lets the log drop `txn`'s decision: every participant acknowledged.
    fn log_end(&self, txn: TransactionId) {
        if let Some(log) = &self.log {
            crate::failpoint::reach!(crate::failpoint::ALL_ACKNOWLEDGED);
            log.log_end(txn);
        }
    }

    /// Remembers a logged Commit that ended with a hazard: its decision
    /// stays in the log, and queries answer `committed` for good.
    fn keep_logged_hazard(&self, entry: &Entry) {
        let txn = entry.id;
        tracing::warn!(%txn, "committed with a participant given up on: the decision stays in the log");
        let names = entry
            .outcome()
            .hazards
            .into_iter()
            .map(|h| h.participant)
            .collect();
        lock(&self.logged_hazards).insert(txn, names);
    }

    /// The outcome of a transaction this coordinator does not hold: with a
    /// log, presumed abort for the ids its coordinators issued (PROTOCOL.md
    /// rule 16); otherwise unknown (rule 15).
    fn outcome_of_unknown(&self, txn: TransactionId) -> OutcomeStatus {
        // A fenced coordinator's ids belong to another now.
        if self.log.is_none() || self.is_fenced() {
            return OutcomeStatus::Unknown;
        }
        if lock(&self.logged_hazards).contains_key(&txn) {
            return OutcomeStatus::Committed;
        }
        let issuer = (txn.as_u128() >> 64) as u64;
        if issuer == self.nonce || lock(&self.incarnations).contains(&issuer) {
            OutcomeStatus::Aborted
        } else {
            OutcomeStatus::Unknown
        }
    }

    /// Whether this coordinator may send participant calls and write its
    /// log: always without a lease; with one, while it is held. The first
    /// time it is not, the coordinator is fenced for good.
    pub(crate) fn may_act(&self) -> bool {
        match &self.lease {
            None => true,
            Some(_) if self.fenced.load(Ordering::Acquire) => false,
            Some(lease) if lease.is_held() => true,
            Some(_) => {
                self.fence();
                false
            }
        }
    }

    /// Stops acting for good: the lease is lost (PROTOCOL.md rule 17).
    /// Calls in flight finish on their own; no call follows them, waiting
    /// clients get [`CoordinatorError::Fenced`], and the new owner of the
    /// transactions delivers their decisions.
    pub(crate) fn fence(&self) {
        if let Some(lease) = &self.lease {
            lease.lose();
        }
        if !self.fenced.swap(true, Ordering::AcqRel) {
            tracing::error!(
                unfinished = self.unfinished.load(Ordering::Acquire),
                "the coordinator lost its lease: it acts on no transaction any more, their new owner finishes them"
            );
            self.on_fenced.notify_waiters();
            self.wake_sweeper.notify_one();
        }
    }

    /// Whether the coordinator is fenced.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Completes once the coordinator is fenced (never without a lease).
    pub(crate) async fn fenced(&self) {
        loop {
            let notified = self.on_fenced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_fenced() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `entry`'s state satisfies `done`, or the coordinator is
    /// fenced.
    async fn wait_unless_fenced(
        &self,
        entry: &Entry,
        done: impl Fn(TransactionState) -> bool,
    ) -> Result<TransactionState, CoordinatorError> {
        if self.lease.is_none() {
            return Ok(entry.wait_for(done).await);
        }
        // Boxed: only a cluster member waits on both, and every client
        // future would otherwise carry room for the pair.
        Box::pin(async {
            tokio::select! {
                state = entry.wait_for(done) => Ok(state),
                () = self.fenced() => Err(CoordinatorError::Fenced),
            }
        })
        .await
    }

    /// Takes over the decisions of a coordinator whose lease expired:
    /// delivers them again, and answers for its transaction ids.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        takeover: crate::log::Takeover,
        resolver: &dyn crate::log::ParticipantResolver,
    ) -> crate::log::Recovery {
        let mut recovery = crate::log::Recovery::default();
        lock(&self.incarnations).extend(takeover.incarnations);
        let count = takeover.in_doubt.len();
        for record in takeover.in_doubt {
            if lock(self.shard(record.txn)).contains_key(&record.txn) {
                continue;
            }
            self.redeliver(record, resolver, &mut recovery);
        }
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        self.adopted.fetch_add(count as u64, Ordering::Relaxed);
        tracing::warn!(
            node = %takeover.node,
            decisions = count,
            unresolved = recovery.unresolved.len(),
            "took over a coordinator whose lease expired: delivering its Commit decisions"
        );
        recovery
    }

    /// Nanoseconds from `epoch` to `at` (saturating).
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wakes the sweeper if it sleeps past `at`, or is sweeping now (its
    /// sweep may have missed the transaction `at` belongs to): one atomic
    /// load when it does not.
    fn wake_sweeper_by(&self, at: Instant) {
        let wakes = self.sweeper_wakes.load(Ordering::Acquire);
        if wakes == SWEEPING || self.since_epoch(at) < wakes {
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
        let running = sweeper::SweeperRunning(Arc::downgrade(self));
        handle.spawn(sweeper::sweeper(Arc::downgrade(self), running));
    }

    /// Runs what a step outside any runner requires (its calls, its timer)
    /// in a new task.
    fn run_detached(self: &Arc<Self>, entry: &Arc<Entry>, applied: entry::Applied) {
        exec::runner(self, entry, applied, false).detach("rollback");
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
        self.start_client_call(entry, event, operation, &done)?;
        self.wait_unless_fenced(entry, done).await
    }

    /// The synchronous part of [`client_call`](Self::client_call), on its
    /// first poll: a function of its own, so that none of its locals (the
    /// step's calls, the runner) takes room in every client future.
    fn start_client_call(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        event: Event,
        operation: Operation,
        done: &impl Fn(TransactionState) -> bool,
    ) -> Result<(), CoordinatorError> {
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
        let mut runner = exec::runner(self, entry, applied, true);
        runner.drive_ready(done);
        runner.detach(phase);
        result.map_err(|e| map_core_error(entry, e, operation))
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
            .filter(|(orphan, ..)| Arc::ptr_eq(orphan, entry))
            .flat_map(|(_, calls, log)| {
                calls
                    .iter()
                    .map(|call| call.action.clone())
                    .chain(log.as_ref().map(|write| Action::LogCommit {
                        attempt: write.attempt,
                    }))
            })
            .collect();
        let mut calls = Vec::new();
        let mut log = None;
        for event in entry.abandoned_calls() {
            if queued.iter().any(|action| answers(&event, action)) {
                continue;
            }
            let applied = entry.apply(event, self);
            calls.extend(applied.calls);
            log = applied.log.or(log);
        }
        tracing::warn!(txn = %entry.id, "participant calls abandoned with their runtime");
        if !calls.is_empty() || log.is_some() || entry.wake_at().is_some() {
            lock(&self.orphans).push((Arc::clone(entry), calls, log));
            // The sweeper resumes them, on whichever runtime it lives.
            self.wake_sweeper.notify_one();
        }
    }
}

/// A participant of a logged decision that no resolver knew at restart:
/// every call fails permanently, so it is given up on at once (a hazard)
/// and the decision stays in the log for the next start.
struct Unresolved(Arc<str>);

#[async_trait::async_trait]
impl crate::Participant for Unresolved {
    fn name(&self) -> &str {
        &self.0
    }
    fn recovery_key(&self) -> Option<&str> {
        Some(&self.0)
    }
    async fn prepare(&self, _: TransactionId) -> crate::PreparedResult {
        crate::PreparedResult::Aborted("no participant under this recovery key".to_owned())
    }
    async fn commit(&self, _: TransactionId) -> Result<(), crate::ParticipantError> {
        Err(crate::ParticipantError::permanent(format!(
            "no participant registered under the recovery key {:?} at restart",
            self.0
        )))
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), crate::ParticipantError> {
        self.commit(txn).await
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
        CoreError::Stale { .. }
        | CoreError::StaleLogAnswer { .. }
        | CoreError::IllegalTransition { .. } => {
            tracing::error!(%txn, error = %e, "core refused a client event unexpectedly");
            CoordinatorError::InvalidState {
                txn,
                current: entry.state(),
                operation,
            }
        }
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
        (Event::CommitLogged { attempt, .. }, Action::LogCommit { attempt: a }) => attempt == a,
        _ => false,
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
