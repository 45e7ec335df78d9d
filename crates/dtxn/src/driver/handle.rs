//! The public handle: [`TransactionCoordinator`] and what it reports.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::entry::{lock, Entry};
use super::{deadline_after, map_core_error, IdHash, Shared, FIBONACCI, SHARDS};
use crate::core::{Event, Limits, Operation, Transaction, TransactionState};
use crate::log::{DecisionLog, LogError, ParticipantResolver, Recovery};
use crate::outcome::{
    OutcomeStatus, PrepareOutcome, Registration, TransactionOutcome, TransactionReport,
};
use crate::{CoordinatorConfig, CoordinatorError, Participant, TransactionId};

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

/// A coordinator's standing in a cluster on a shared decision log, from
/// [`TransactionCoordinator::ownership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Ownership {
    /// Whether its lease is held now (it may act).
    pub lease_held: bool,
    /// Whether it lost its lease for good and acts on nothing any more.
    pub fenced: bool,
    /// Coordinators it took over since it was made.
    pub takeovers: u64,
    /// Commit decisions it adopted in those takeovers.
    pub adopted_decisions: u64,
    /// Incarnations (transaction id prefixes) it answers for: its own, its
    /// predecessors' under the same node id, and those taken over.
    pub incarnations: usize,
}

/// A Commit decision held in the decision log, from
/// [`TransactionCoordinator::logged_decisions`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LoggedDecision {
    /// The transaction.
    pub txn: TransactionId,
    /// `Committing` while phase 2 is delivered, `Committed` once it ended
    /// with participants given up on.
    pub state: TransactionState,
    /// The participants given up on (names), for a `Committed` one.
    pub hazards: Vec<String>,
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
        Self::build(config, None)
    }

    fn build(config: CoordinatorConfig, log: Option<Arc<dyn DecisionLog>>) -> Self {
        let lease = log.as_ref().and_then(|log| log.lease());
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
            log,
            incarnations: Mutex::new(Vec::new()),
            logged_hazards: Mutex::new(HashMap::new()),
            lease,
            fenced: AtomicBool::new(false),
            on_fenced: Notify::new(),
            takeovers: AtomicU64::new(0),
            adopted: AtomicU64::new(0),
        });
        shared.ensure_sweeper();
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// A coordinator that keeps its Commit decisions in `log`, so that
    /// they survive a crash (see [`dtxn::log`](crate::log)): opens the log,
    /// and delivers again every Commit decision it holds whose phase 2 had
    /// not ended, finding each participant by its
    /// [`recovery_key`](crate::Participant::recovery_key) through
    /// `participants`. Returns once that redelivery has started (it runs in
    /// the background, with the retry policy, like any phase 2).
    ///
    /// With a log, every participant registered must have a recovery key,
    /// and outcome queries answer `aborted` for ids that this log's
    /// coordinators issued and that are not held (presumed abort).
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use dtxn::log::{ParticipantRegistry, SqliteLog};
    /// use dtxn::{CoordinatorConfig, TransactionCoordinator};
    ///
    /// # let dir = std::env::temp_dir().join(format!("dtxn-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let log = SqliteLog::open(dir.join("decisions.db")).await?;
    /// let registry = ParticipantRegistry::new(); // insert your participants here
    /// let (coordinator, recovery) =
    ///     TransactionCoordinator::recover(CoordinatorConfig::default(), Arc::new(log), &registry).await?;
    /// assert!(recovery.redelivering.is_empty());
    /// # drop(coordinator); std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// # #[cfg(not(feature = "sqlite"))]
    /// # fn main() {}
    /// ```
    ///
    /// # Errors
    ///
    /// The [`LogError`] of opening the log (in use by another coordinator,
    /// written by a newer version, unreadable).
    pub async fn recover(
        config: CoordinatorConfig,
        log: Arc<dyn DecisionLog>,
        participants: &dyn ParticipantResolver,
    ) -> Result<(Self, Recovery), LogError> {
        let coordinator = Self::build(config, Some(Arc::clone(&log)));
        let shared = coordinator.shared();
        let contents = log.open(shared.nonce).await?;
        *lock(&shared.incarnations) = contents.incarnations;
        let mut recovery = Recovery::default();
        for record in contents.in_doubt {
            shared.redeliver(record, participants, &mut recovery);
        }
        if !recovery.redelivering.is_empty() {
            tracing::info!(
                transactions = recovery.redelivering.len(),
                unresolved = recovery.unresolved.len(),
                "delivering logged Commit decisions again"
            );
        }
        Ok((coordinator, recovery))
    }

    /// A coordinator in a cluster of coordinators sharing one decision
    /// log (see [`PostgresLog::join_cluster`]): recovers like
    /// [`recover`](Self::recover), then, every half lease, takes over one
    /// coordinator of the cluster whose lease expired (one at a time, as
    /// many as there are): delivers its logged Commit decisions again,
    /// finding their participants through `participants`, and answers
    /// outcome queries for its transaction ids.
    ///
    /// While its lease is not held it sends no participant call and
    /// writes no decision (PROTOCOL.md rule 17); once it finds it lapsed
    /// or lost, it is fenced for good: calls fail with
    /// [`CoordinatorError::Fenced`] and [`fenced`](Self::fenced)
    /// completes. A server then exits, to be restarted with a new lease.
    ///
    /// With a log that has no lease (one of its own), this is
    /// [`recover`](Self::recover) and no more.
    ///
    /// [`PostgresLog::join_cluster`]: https://docs.rs/dtxn/latest/dtxn/log/struct.PostgresLog.html#method.join_cluster
    ///
    /// # Errors
    ///
    /// As [`recover`](Self::recover).
    pub async fn join_cluster(
        config: CoordinatorConfig,
        log: Arc<dyn DecisionLog>,
        participants: Arc<dyn ParticipantResolver>,
    ) -> Result<(Self, Recovery), LogError> {
        let (coordinator, recovery) =
            Self::recover(config, Arc::clone(&log), &*participants).await?;
        if let Some(lease) = log.lease() {
            tokio::spawn(take_over_dead(
                Arc::downgrade(coordinator.shared()),
                log,
                participants,
                lease.duration(),
            ));
        }
        Ok((coordinator, recovery))
    }

    /// With a shared decision log: its lease, its takeovers; `None` for a
    /// coordinator whose log (if any) is its own.
    pub fn ownership(&self) -> Option<Ownership> {
        let shared = self.shared();
        let lease = shared.lease.as_ref()?;
        Some(Ownership {
            lease_held: !shared.is_fenced() && lease.is_held(),
            fenced: shared.is_fenced(),
            takeovers: shared.takeovers.load(Ordering::Relaxed),
            adopted_decisions: shared.adopted.load(Ordering::Relaxed),
            incarnations: lock(&shared.incarnations).len(),
        })
    }

    /// Completes once the coordinator lost its lease on a shared log and
    /// stopped acting (see [`join_cluster`](Self::join_cluster)); never
    /// for one without a lease.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn fenced(&self) {
        let shared = self.shared();
        if shared.lease.is_none() {
            std::future::pending::<()>().await;
        }
        shared.fenced().await;
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
            // A fenced coordinator's transactions end elsewhere.
            if shared
                .wait_unless_fenced(&entry, TransactionState::is_terminal)
                .await
                .is_err()
            {
                return;
            }
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
        if shared.lease.is_some() && !shared.may_act() {
            return Err(CoordinatorError::Fenced);
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
        if shared.log.is_some() {
            machine = machine.with_decision_log();
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
        // With a decision log every participant needs a recovery key: user
        // code, so asked outside every lock, with a panic caught.
        let key = match &shared.log {
            None => None,
            Some(_) => {
                let key = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    participant.recovery_key().map(Arc::<str>::from)
                }))
                .ok()
                .flatten();
                if key.is_none() {
                    // An unknown transaction or a fenced coordinator is
                    // said first, as for any registration.
                    shared.get(txn)?;
                    if shared.is_fenced() {
                        return Err(CoordinatorError::Fenced);
                    }
                    let participant = super::entry::safe_name(&*participant);
                    return Err(CoordinatorError::NotRecoverable { txn, participant });
                }
                key
            }
        };
        let (result, rejected) = self.register_locked(txn, participant, payload, key);
        // Outside every lock: it may be the last reference.
        if let Some(p) = rejected {
            super::entry::drop_user(p);
        }
        result
    }

    /// Registers under the shard's lock, which spares the entry's
    /// reference count a round trip per participant (a shard's lock is
    /// only ever taken before an entry's, never while one is held).
    /// Returns the participant when it was not registered, to be dropped
    /// outside the locks.
    ///
    /// No clock is read here (one per participant would be a tenth of a
    /// registration's cost): a registration that races the deadline is
    /// accepted, and the participant is rolled back with the rest when the
    /// sweeper (or the next client call) finds the deadline passed.
    #[allow(clippy::type_complexity)]
    fn register_locked(
        &self,
        txn: TransactionId,
        participant: Arc<dyn Participant>,
        payload: Option<crate::Payload>,
        key: Option<Arc<str>>,
    ) -> (
        Result<Registration, CoordinatorError>,
        Option<Arc<dyn Participant>>,
    ) {
        let shared = self.shared();
        shared.ensure_sweeper();
        let shard = lock(shared.shard(txn));
        let Some(entry) = shard.get(&txn) else {
            return (Err(CoordinatorError::NotFound { txn }), Some(participant));
        };
        if shared.is_fenced() {
            return (Err(CoordinatorError::Fenced), Some(participant));
        }
        match entry.register(participant, payload, key) {
            (Ok(true), rejected) => (Ok(Registration::Registered), rejected),
            (Ok(false), rejected) => (Ok(Registration::AlreadyRegistered), rejected),
            (Err(e), rejected) => (Err(map_core_error(entry, e, Operation::Register)), rejected),
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
        self.decide(txn, Event::Commit, Operation::Commit).await
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
        self.decide(txn, Event::Rollback, Operation::Rollback).await
    }

    /// Commit or rollback: applies `event`, drives phase 2 until the
    /// transaction is terminal, and returns its outcome.
    async fn decide(
        &self,
        txn: TransactionId,
        event: Event,
        operation: Operation,
    ) -> Result<TransactionOutcome, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        shared
            .client_call(&entry, event, operation, TransactionState::is_terminal)
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
                let state = entry.state();
                // Not durable yet: a crash now would abort it.
                if state == TransactionState::Committing && entry.awaiting_log() {
                    return OutcomeStatus::Pending;
                }
                OutcomeStatus::of(state)
            }
            Err(_) => self.shared().outcome_of_unknown(txn),
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

    /// The Commit decisions held in the [decision log](crate::log) whose
    /// phase 2 has not ended with every participant acknowledged: those
    /// still being delivered (perhaps waiting out a backoff) and those
    /// committed with a participant given up on, kept until
    /// [`resolve_hazard`](Self::resolve_hazard). Empty without a log.
    pub fn logged_decisions(&self) -> Vec<LoggedDecision> {
        let shared = self.shared();
        if shared.log.is_none() {
            return Vec::new();
        }
        let mut list: Vec<LoggedDecision> = shared
            .unfinished_entries()
            .into_iter()
            .filter(|entry| entry.state() == TransactionState::Committing && entry.commit_logged())
            .map(|entry| LoggedDecision {
                txn: entry.id,
                state: TransactionState::Committing,
                hazards: Vec::new(),
            })
            .collect();
        list.extend(
            lock(&shared.logged_hazards)
                .iter()
                .map(|(txn, names)| LoggedDecision {
                    txn: *txn,
                    state: TransactionState::Committed,
                    hazards: names.clone(),
                }),
        );
        list.sort_by_key(|d| d.txn);
        list
    }

    /// Makes now the phase-2 retries (and the decision-log write) of `txn`
    /// that wait out their backoff, as an operator does once a participant
    /// is back. Returns the transaction's state; one with nothing waiting
    /// is left as it is.
    ///
    /// # Errors
    ///
    /// [`NotFound`](CoordinatorError::NotFound).
    pub fn retry_now(&self, txn: TransactionId) -> Result<TransactionState, CoordinatorError> {
        let shared = self.shared();
        let entry = shared.get(txn)?;
        if !entry.state().is_terminal() {
            let applied = entry.retry_now(shared);
            shared.run_detached(&entry, applied);
        }
        Ok(entry.state())
    }

    /// Marks resolved a logged Commit decision that ended with a
    /// participant given up on, once an operator has made that participant
    /// commit by other means: the decision leaves the log.
    ///
    /// # Errors
    ///
    /// [`NoLoggedHazard`](CoordinatorError::NoLoggedHazard) unless `txn` is
    /// one of [`logged_decisions`](Self::logged_decisions) with hazards.
    pub fn resolve_hazard(&self, txn: TransactionId) -> Result<(), CoordinatorError> {
        let shared = self.shared();
        if lock(&shared.logged_hazards).remove(&txn).is_none() {
            return Err(CoordinatorError::NoLoggedHazard { txn });
        }
        tracing::info!(%txn, "hazard resolved by an operator: the decision leaves the log");
        shared.log_end(txn);
        Ok(())
    }

    fn expire_if_due(&self, entry: &Arc<Entry>) {
        self.shared().expire_if_due(entry);
    }
}

/// The takeover loop of a coordinator in a cluster: every half lease, takes
/// over the coordinators whose lease expired, one per storage transaction.
/// Stops when the coordinator is dropped or fenced.
async fn take_over_dead(
    shared: std::sync::Weak<Shared>,
    log: Arc<dyn DecisionLog>,
    participants: Arc<dyn ParticipantResolver>,
    lease: std::time::Duration,
) {
    let every = lease / 2;
    loop {
        tokio::time::sleep(every).await;
        loop {
            let Some(coordinator) = shared.upgrade() else {
                return;
            };
            if !coordinator.may_act() {
                return;
            }
            drop(coordinator);
            // The store may hang (a server frozen or cut off): the lease is
            // checked meanwhile, so a lapse still fences this coordinator.
            // The answer itself is awaited, not dropped: the takeover it
            // reports may be committed. (If this coordinator stops first, a
            // takeover committed meanwhile is in its own part of the log,
            // which the node that takes it over delivers.)
            let mut taking = log.take_over();
            let taken = loop {
                tokio::select! {
                    taken = &mut taking => break taken,
                    () = tokio::time::sleep(every) => {
                        let Some(coordinator) = shared.upgrade() else {
                            return;
                        };
                        if !coordinator.may_act() {
                            return;
                        }
                    }
                }
            };
            let Some(coordinator) = shared.upgrade() else {
                return;
            };
            match taken {
                Ok(Some(takeover)) => {
                    coordinator.adopt(takeover, &*participants);
                }
                Ok(None) => break,
                Err(LogError::Fenced { .. }) => {
                    coordinator.fence();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking for coordinators to take over failed");
                    break;
                }
            }
        }
    }
}
