//! The coordinator used as a hostile (or merely careless) user would:
//! participants that call back into it or misbehave in `Drop`, callers
//! that park their futures, `begin` racing `shutdown`, extreme settings, a
//! coordinator that outlives its runtime. PROTOCOL.md rules 13 and 14.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;

use common::{begin_with, config, coordinator, ms, Kind, Mock, Step};
use dtxn::{
    async_trait, CoordinatorConfig, CoordinatorError, Participant, ParticipantError,
    PrepareOutcome, PreparedResult, RetryPolicy, TransactionCoordinator, TransactionId,
    TransactionState,
};

/// Runs `test` on a paused current-thread runtime in its own thread and
/// fails if it has not finished after a minute of wall time: the defects
/// these tests guard against are deadlocks of the runtime thread, which a
/// paused clock cannot time out. A passing run takes milliseconds.
fn must_finish<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(test());
        drop(runtime);
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => thread.join().unwrap(),
        // The thread panicked: report its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("deadlock: the test's runtime thread is stuck")
        }
    }
}

/// What a [`Reentrant`] participant does when it is dropped.
enum OnDrop {
    /// Asks the coordinator for a transaction's state.
    QueryState(TransactionId),
    /// Just lets its coordinator handle go (which may be the last).
    ReleaseHandle,
    /// Panics.
    Panic,
}

/// A participant that holds a coordinator handle (it needs one to call
/// back) and misbehaves when dropped.
struct Reentrant {
    coordinator: Mutex<Option<TransactionCoordinator>>,
    on_drop: OnDrop,
    dropped: Arc<AtomicBool>,
}

impl Reentrant {
    fn new(
        coordinator: Option<TransactionCoordinator>,
        on_drop: OnDrop,
    ) -> (Arc<Self>, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let participant = Arc::new(Self {
            coordinator: Mutex::new(coordinator),
            on_drop,
            dropped: dropped.clone(),
        });
        (participant, dropped)
    }
}

#[async_trait]
impl Participant for Reentrant {
    fn name(&self) -> &str {
        "reentrant"
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
        let coordinator = self.coordinator.lock().unwrap().take();
        match self.on_drop {
            OnDrop::QueryState(txn) => {
                let c = coordinator.expect("a handle to query with");
                // Forgotten (or about to be): either answer is fine, a
                // deadlock is not.
                let _ = c.get_transaction_state(txn);
                let _ = c.stats();
            }
            OnDrop::ReleaseHandle => drop(coordinator),
            OnDrop::Panic => panic!("participant Drop panics"),
        }
    }
}

async fn commit(c: &TransactionCoordinator, txn: TransactionId) {
    assert_eq!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
    c.commit_transaction(txn).await.unwrap();
}

#[test]
fn a_refused_registration_drops_its_participant_outside_every_lock() {
    must_finish(|| async {
        let c = coordinator();
        let txn = c.begin_transaction().unwrap();
        c.prepare_transaction(txn).await.unwrap();
        // The coordinator holds the last reference to each: refused (the
        // transaction is Prepared), they are dropped by the registration.
        // One asks for the same transaction's state from its `Drop` (a
        // deadlock were the shard's lock still held), one panics in it.
        let (queries, queried) = Reentrant::new(Some(c.clone()), OnDrop::QueryState(txn));
        let refused = c.register_participant(txn, queries);
        assert!(
            matches!(refused, Err(CoordinatorError::InvalidState { .. })),
            "{refused:?}"
        );
        assert!(queried.load(Ordering::SeqCst));
        let (panics, panicked) = Reentrant::new(None, OnDrop::Panic);
        let refused = c.register_participant(txn, panics);
        assert!(
            matches!(refused, Err(CoordinatorError::InvalidState { .. })),
            "{refused:?}"
        );
        assert!(panicked.load(Ordering::SeqCst));
        // An unknown transaction: the same.
        let (queries, queried) = Reentrant::new(Some(c.clone()), OnDrop::QueryState(txn));
        let unknown = coordinator().begin_transaction().unwrap();
        let refused = c.register_participant(unknown, queries);
        assert!(
            matches!(refused, Err(CoordinatorError::NotFound { .. })),
            "{refused:?}"
        );
        assert!(queried.load(Ordering::SeqCst));
        assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    });
}

fn keep_one_finished() -> TransactionCoordinator {
    TransactionCoordinator::with_config(config().retention_count(1).build().unwrap())
}

// ---- 1. No user code under a coordinator lock --------------------------

#[test]
fn a_participant_whose_drop_queries_the_coordinator_does_not_deadlock_when_forgotten() {
    must_finish(|| async {
        let c = keep_one_finished();
        let first = c.begin_transaction().unwrap();
        let (p, dropped) = Reentrant::new(Some(c.clone()), OnDrop::QueryState(first));
        c.register_participant(first, p).unwrap();
        commit(&c, first).await;
        assert!(!dropped.load(Ordering::SeqCst));
        // Finishing a second transaction forgets the first (retention
        // count 1), dropping its participant, whose Drop queries `first`.
        let second = begin_with(&c, [Mock::new("b").arc()]);
        commit(&c, second).await;
        assert!(dropped.load(Ordering::SeqCst));
        assert!(matches!(
            c.get_transaction_state(first),
            Err(CoordinatorError::NotFound { .. })
        ));
    });
}

#[test]
fn a_participant_holding_the_last_coordinator_handle_is_dropped_by_the_sweeper_without_deadlock() {
    must_finish(|| async {
        let c = TransactionCoordinator::with_config(
            config()
                .retention_period(Duration::from_secs(1))
                .build()
                .unwrap(),
        );
        let txn = c.begin_transaction().unwrap();
        let (p, dropped) = Reentrant::new(Some(c.clone()), OnDrop::ReleaseHandle);
        c.register_participant(txn, p).unwrap();
        commit(&c, txn).await;
        // From now on the participant's handle is the last one.
        drop(c);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The sweeper forgot the transaction: the participant's Drop ran
        // the coordinator's own drop path, which sweeps every shard.
        assert!(dropped.load(Ordering::SeqCst));
    });
}

#[test]
fn a_panicking_participant_drop_does_not_reach_an_unrelated_callers_commit() {
    must_finish(|| async {
        let c = keep_one_finished();
        let first = c.begin_transaction().unwrap();
        let (p, dropped) = Reentrant::new(None, OnDrop::Panic);
        c.register_participant(first, p).unwrap();
        commit(&c, first).await;
        // Committing the second transaction forgets the first; its
        // participant's panic must not surface here.
        let second = begin_with(&c, [Mock::new("b").arc()]);
        commit(&c, second).await;
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(
            c.get_transaction_state(second).unwrap(),
            TransactionState::Committed
        );
    });
}

#[test]
fn a_panicking_participant_drop_does_not_stop_the_sweeper() {
    must_finish(|| async {
        let c = TransactionCoordinator::with_config(
            config()
                .retention_period(Duration::from_secs(1))
                .transaction_deadline(Duration::from_secs(5))
                .build()
                .unwrap(),
        );
        let first = c.begin_transaction().unwrap();
        let (p, dropped) = Reentrant::new(None, OnDrop::Panic);
        c.register_participant(first, p).unwrap();
        commit(&c, first).await;
        let abandoned = begin_with(&c, [Mock::new("b").arc()]);
        // The sweeper forgets `first` (its participant's Drop panics)...
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(dropped.load(Ordering::SeqCst));
        // ...and must still be there to roll back `abandoned` at its
        // deadline. `stats` does not expire anything itself.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(c.stats().unfinished, 0, "the deadline was not enforced");
        assert_eq!(
            c.get_transaction_state(abandoned).unwrap(),
            TransactionState::Aborted
        );
    });
}

/// A participant that calls back into the coordinator from every call.
struct CallsBack {
    coordinator: TransactionCoordinator,
    seen: Mutex<Vec<TransactionState>>,
}

impl CallsBack {
    fn look(&self, txn: TransactionId) {
        let state = self.coordinator.get_transaction_state(txn).unwrap();
        self.coordinator.transaction_report(txn).unwrap();
        self.coordinator.stats();
        self.coordinator.unfinished_transactions();
        // A nested, independent transaction begun from inside a call.
        let nested = self.coordinator.begin_transaction().unwrap();
        self.coordinator
            .register_participant(nested, Mock::new("n").arc())
            .unwrap();
        self.seen.lock().unwrap().push(state);
    }
}

#[async_trait]
impl Participant for CallsBack {
    fn name(&self) -> &str {
        "calls-back"
    }
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.look(txn);
        // Re-entrant registration is refused with a typed error.
        assert!(matches!(
            self.coordinator
                .register_participant(txn, Mock::new("late").arc()),
            Err(CoordinatorError::InvalidState { .. })
        ));
        PreparedResult::Ready
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.look(txn);
        Ok(())
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.look(txn);
        Ok(())
    }
}

#[test]
fn a_participant_may_call_back_into_the_coordinator_from_every_phase() {
    must_finish(|| async {
        let c = coordinator();
        let p = Arc::new(CallsBack {
            coordinator: c.clone(),
            seen: Mutex::default(),
        });
        let txn = c.begin_transaction().unwrap();
        c.register_participant(txn, p.clone()).unwrap();
        commit(&c, txn).await;
        let aborted = c.begin_transaction().unwrap();
        c.register_participant(aborted, p.clone()).unwrap();
        c.rollback_transaction(aborted).await.unwrap();
        assert_eq!(
            *p.seen.lock().unwrap(),
            [
                TransactionState::Preparing,
                TransactionState::Committing,
                TransactionState::Aborting
            ]
        );
    });
}

// ---- 2. A parked caller blocks nobody -----------------------------------

/// Polls `fut` exactly once, then hands it back, still pending, to be held
/// without being polled again.
fn poll_once<F: Future>(mut fut: Pin<Box<F>>) -> Pin<Box<F>> {
    let waker = std::task::Waker::noop();
    let polled = fut.as_mut().poll(&mut Context::from_waker(waker));
    assert!(polled.is_pending(), "the call finished at once");
    fut
}

#[tokio::test(start_paused = true)]
async fn a_parked_prepare_does_not_block_a_second_prepare() {
    let c = coordinator();
    let slow = Mock::new("slow").on_prepare(Step::after(ms(50), Step::Ok));
    let txn = begin_with(&c, [slow.arc(), Mock::new("fast").arc()]);
    let parked = poll_once(Box::pin(c.prepare_transaction(txn)));
    let second = tokio::time::timeout(Duration::from_secs(10), c.prepare_transaction(txn)).await;
    assert_eq!(
        second.expect("the second prepare hung").unwrap(),
        PrepareOutcome::Prepared
    );
    let commit = tokio::time::timeout(Duration::from_secs(10), c.commit_transaction(txn)).await;
    assert!(commit.expect("commit hung").unwrap().hazards.is_empty());
    drop(parked);
}

#[tokio::test(start_paused = true)]
async fn a_parked_prepare_does_not_block_a_rollback_from_another_caller() {
    let c = coordinator();
    let hangs = Mock::new("hangs").on_prepare(Step::Hang).arc();
    let txn = begin_with(&c, [hangs.clone()]);
    let parked = poll_once(Box::pin(c.prepare_transaction(txn)));
    // The rollback waits for the hanging prepare to time out (100 ms),
    // then rolls it back: bounded by the prepare timeout, not by the
    // parked caller.
    let rolled_back =
        tokio::time::timeout(Duration::from_secs(10), c.rollback_transaction(txn)).await;
    rolled_back.expect("rollback hung").unwrap();
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Aborted
    );
    assert_eq!(hangs.count(Kind::Rollback), 1);
    drop(parked);
}

#[tokio::test(start_paused = true)]
async fn a_parked_commit_does_not_stop_phase_two_or_shutdown() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_commit(Step::after(ms(30), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    assert_eq!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
    let parked = poll_once(Box::pin(c.commit_transaction(txn)));
    // Nobody else asks: phase 2 completes on its own, and shutdown (which
    // waits for every transaction to end) returns.
    let shutdown = tokio::time::timeout(Duration::from_secs(10), c.shutdown()).await;
    shutdown.expect("shutdown hung on the parked commit");
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
    assert_eq!(slow.count(Kind::Commit), 1);
    drop(parked);
}

#[tokio::test(start_paused = true)]
async fn a_parked_prepare_with_nobody_else_is_ended_by_the_prepare_timeout_and_frees_its_slot() {
    let c = TransactionCoordinator::with_config(config().max_transactions(1).build().unwrap());
    let txn = begin_with(&c, [Mock::new("hangs").on_prepare(Step::Hang).arc()]);
    let parked = poll_once(Box::pin(c.prepare_transaction(txn)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.stats().unfinished, 0, "the capacity slot is still held");
    c.begin_transaction()
        .expect("the slot of the aborted transaction is free");
    drop(parked);
}

// ---- 3. begin racing shutdown -----------------------------------------

#[test]
fn every_begin_racing_shutdown_is_refused_or_rolled_back_and_shutdown_returns() {
    // Two threads: one begins transactions as fast as it can, the other
    // shuts the coordinator down. Whatever the interleaving, every begun
    // transaction must end Aborted and shutdown must return.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..2000 {
        // Limits out of the way: every begun transaction stays in the
        // table to be checked (no forgetting past a retention count).
        let c = TransactionCoordinator::with_config(
            config()
                .max_transactions(usize::MAX)
                .retention_count(usize::MAX)
                .build()
                .unwrap(),
        );
        let begun = runtime.block_on(async {
            let beginner = {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut begun = Vec::new();
                    loop {
                        match c.begin_transaction() {
                            Ok(id) => begun.push(id),
                            Err(CoordinatorError::ShuttingDown) => return begun,
                            Err(e) => panic!("round {round}: unexpected {e}"),
                        }
                    }
                })
            };
            tokio::task::yield_now().await;
            let shutdown = tokio::time::timeout(Duration::from_secs(60), c.shutdown()).await;
            shutdown.unwrap_or_else(|_| panic!("round {round}: shutdown did not return"));
            beginner.await.unwrap()
        });
        for id in begun {
            assert_eq!(
                c.get_transaction_state(id).unwrap(),
                TransactionState::Aborted,
                "round {round}: {id} was left unresolved by shutdown"
            );
        }
        assert_eq!(c.stats().unfinished, 0);
    }
}

// ---- 4. Extreme settings --------------------------------------------------

/// Runs a commit (with one failed commit attempt, so that a retry is
/// scheduled), a rollback, an abandoned transaction, queries and shutdown.
async fn exercise(config: CoordinatorConfig) {
    let c = TransactionCoordinator::with_config(config);
    let flaky = Mock::new("flaky")
        .on_commit(Step::Fail(ParticipantError::transient("blip")))
        .arc();
    let txn = begin_with(&c, [flaky.clone(), Mock::new("ok").arc()]);
    commit(&c, txn).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
    // Retried once, unless a tiny retry time budget gave up at once.
    let attempts = flaky.count(Kind::Commit);
    let hazards = c.transaction_report(txn).unwrap().participants[0]
        .phase2
        .clone();
    assert!(
        attempts == 2 || (attempts == 1 && matches!(hazards, dtxn::Phase2Status::GaveUp { .. })),
        "{attempts} attempts, {hazards:?}"
    );
    let rolled = begin_with(&c, [Mock::new("r").arc()]);
    c.rollback_transaction(rolled).await.unwrap();
    let abandoned = begin_with(&c, [Mock::new("a").arc()]);
    c.transaction_report(abandoned).unwrap();
    c.unfinished_transactions();
    c.shutdown().await;
    assert_eq!(
        c.get_transaction_state(abandoned).unwrap(),
        TransactionState::Aborted
    );
}

#[tokio::test(start_paused = true)]
async fn every_duration_setting_at_its_extremes_is_refused_or_works_without_panicking() {
    let max = Duration::MAX;
    let tiny = Duration::from_nanos(1);
    let mut accepted = 0;
    for extreme in [max, tiny] {
        let settings: Vec<(&str, dtxn::CoordinatorConfigBuilder)> = vec![
            ("prepare_timeout", config().prepare_timeout(extreme)),
            ("phase2_timeout", config().phase2_timeout(extreme)),
            (
                "transaction_deadline",
                config().transaction_deadline(extreme),
            ),
            ("retention_period", config().retention_period(extreme)),
            ("sweep_interval", config().sweep_interval(extreme)),
            (
                "retry backoff",
                config().retry(RetryPolicy::new(3, extreme, extreme).unwrap()),
            ),
            (
                "retry max_elapsed",
                config().retry(
                    RetryPolicy::new(3, ms(10), ms(40))
                        .unwrap()
                        .with_max_elapsed(extreme)
                        .unwrap(),
                ),
            ),
            (
                "everything at once",
                CoordinatorConfig::builder()
                    .prepare_timeout(extreme)
                    .phase2_timeout(extreme)
                    .transaction_deadline(max)
                    .retention_period(extreme)
                    .sweep_interval(extreme)
                    .retry(
                        RetryPolicy::new(u32::MAX, extreme, extreme)
                            .unwrap()
                            .with_max_elapsed(extreme)
                            .unwrap(),
                    ),
            ),
        ];
        for (name, builder) in settings {
            match builder.build() {
                Ok(config) => {
                    accepted += 1;
                    let run = tokio::spawn(exercise(config));
                    if let Err(e) = run.await {
                        panic!("{name} = {extreme:?} was accepted, then: {e}");
                    }
                }
                Err(e) => {
                    // Refusing is fine, with a typed error that says why.
                    assert!(!e.to_string().is_empty(), "{name}");
                }
            }
        }
    }
    assert!(accepted >= 10, "only {accepted} extreme settings accepted");
}

#[test]
fn a_huge_deadline_does_not_panic_on_begin() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let c = TransactionCoordinator::with_config(
            CoordinatorConfig::builder()
                .transaction_deadline(Duration::MAX)
                .build()
                .unwrap(),
        );
        let txn = c.begin_transaction().unwrap();
        assert_eq!(
            c.get_transaction_state(txn).unwrap(),
            TransactionState::Active
        );
    });
}

// ---- 5. A coordinator that outlives its runtime ------------------------

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

#[test]
fn deadlines_are_enforced_on_a_second_runtime_after_the_first_is_gone() {
    let deadline = Duration::from_secs(10);
    let make = || {
        TransactionCoordinator::with_config(
            config().transaction_deadline(deadline).build().unwrap(),
        )
    };
    let first = paused_runtime();
    let (c, old) = first.block_on(async {
        let c = make();
        let old = begin_with(&c, [Mock::new("old").arc()]);
        (c, old)
    });
    // The runtime that started the sweeper is gone.
    drop(first);
    let rolled_back = Arc::new(AtomicUsize::new(0));
    paused_runtime().block_on(async {
        let new = begin_with(&c, [Mock::new("new").arc()]);
        tokio::time::sleep(deadline * 2).await;
        // `stats` expires nothing itself: only a live sweeper can have
        // rolled both back.
        assert_eq!(c.stats().unfinished, 0, "deadlines were not enforced");
        for txn in [old, new] {
            assert_eq!(
                c.get_transaction_state(txn).unwrap(),
                TransactionState::Aborted
            );
            rolled_back.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(rolled_back.load(Ordering::SeqCst), 2);
}

#[test]
fn a_coordinator_made_outside_any_runtime_enforces_deadlines_once_used_in_one() {
    let c = TransactionCoordinator::with_config(
        config()
            .transaction_deadline(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    paused_runtime().block_on(async {
        c.begin_transaction().unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(c.stats().unfinished, 0);
    });
}

// ---- Phase-2 retries ride out a restart -------------------------------

/// A participant whose phase-2 calls fail fast (connection refused) until
/// `up_at`, like a service being restarted.
struct Restarting {
    up_at: tokio::time::Instant,
    attempts: AtomicUsize,
}

impl Restarting {
    fn answer(&self) -> Result<(), ParticipantError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if tokio::time::Instant::now() < self.up_at {
            Err(ParticipantError::transient("connection refused"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Participant for Restarting {
    fn name(&self) -> &str {
        "restarting"
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.answer()
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.answer()
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_retry_policy_rides_out_a_thirty_second_participant_restart() {
    let c = TransactionCoordinator::new();
    for commit in [true, false] {
        let p = Arc::new(Restarting {
            up_at: tokio::time::Instant::now() + Duration::from_secs(30),
            attempts: AtomicUsize::new(0),
        });
        let txn = c.begin_transaction().unwrap();
        c.register_participant(txn, p.clone()).unwrap();
        let outcome = if commit {
            c.prepare_transaction(txn).await.unwrap();
            c.commit_transaction(txn).await.unwrap()
        } else {
            c.rollback_transaction(txn).await.unwrap()
        };
        assert!(outcome.hazards.is_empty(), "{:?}", outcome.hazards);
        assert!(p.attempts.load(Ordering::SeqCst) > 5);
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_time_budget_bounds_phase_two_whatever_the_attempts_left() {
    let budget = Duration::from_secs(20);
    let c = TransactionCoordinator::with_config(
        CoordinatorConfig::builder()
            .phase2_timeout(Duration::from_secs(1))
            .retry(
                RetryPolicy::new(u32::MAX, ms(100), Duration::from_secs(3600))
                    .unwrap()
                    .with_max_elapsed(budget)
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    let never = Arc::new(Restarting {
        up_at: tokio::time::Instant::now() + Duration::from_secs(1_000_000),
        attempts: AtomicUsize::new(0),
    });
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, never.clone()).unwrap();
    c.prepare_transaction(txn).await.unwrap();
    let started = tokio::time::Instant::now();
    let outcome = c.commit_transaction(txn).await.unwrap();
    // Given up on at the end of the budget (the backoff cap of an hour is
    // cut short by it), plus the last call: at most one timeout more.
    let took = started.elapsed();
    assert_eq!(outcome.hazards.len(), 1);
    assert!(took >= budget, "gave up after {took:?}");
    assert!(
        took <= budget + Duration::from_secs(1),
        "phase 2 ran {took:?}"
    );
}

#[test]
fn calls_dropped_with_their_runtime_are_resumed_on_the_next_one() {
    let c = coordinator();
    let committing = Mock::new("slow-commit")
        .on_commit(Step::after(ms(50), Step::Ok))
        .arc();
    let preparing = Mock::new("slow-prepare")
        .on_prepare(Step::after(ms(50), Step::Ok))
        .arc();
    let first = paused_runtime();
    let (to_commit, to_abort, parked) = first.block_on(async {
        let to_commit = begin_with(&c, [committing.clone()]);
        assert_eq!(
            c.prepare_transaction(to_commit).await.unwrap(),
            PrepareOutcome::Prepared
        );
        let to_abort = begin_with(&c, [preparing.clone()]);
        // Each call is under way in a task of this runtime...
        let parked = (
            poll_once(Box::pin(c.commit_transaction(to_commit))),
            poll_once(Box::pin(c.prepare_transaction(to_abort))),
        );
        (to_commit, to_abort, parked)
    });
    // ...which shuts down with them in flight.
    drop(first);
    drop(parked);
    paused_runtime().block_on(async {
        let committed =
            tokio::time::timeout(Duration::from_secs(10), c.commit_transaction(to_commit)).await;
        let outcome = committed.expect("the commit was left in flight").unwrap();
        assert!(outcome.hazards.is_empty(), "{:?}", outcome.hazards);
        // The abandoned attempt, then the one that got through.
        assert_eq!(committing.count(Kind::Commit), 2);

        // A prepare abandoned mid-call is a failed prepare: Abort, and
        // the participant, whose state is unknown, gets rollback.
        let rolled_back =
            tokio::time::timeout(Duration::from_secs(10), c.rollback_transaction(to_abort)).await;
        rolled_back
            .expect("the prepare was left in flight")
            .unwrap();
        assert_eq!(
            c.get_transaction_state(to_abort).unwrap(),
            TransactionState::Aborted
        );
        assert!(matches!(
            c.transaction_report(to_abort).unwrap().abort_reason,
            Some(dtxn::AbortReason::PrepareFailed {
                failure: dtxn::CallFailure::Abandoned,
                ..
            })
        ));
        assert_eq!(preparing.count(Kind::Rollback), 1);
        assert_eq!(c.stats().unfinished, 0);
    });
}

#[test]
fn two_runners_of_one_transaction_dropped_with_their_runtime_resume_each_call_once() {
    let c = coordinator();
    // A's prepare and B's rollback are both under way, in two tasks, when
    // the runtime goes.
    let a = Mock::new("a")
        .on_prepare(Step::after(ms(50), Step::Ok))
        .arc();
    let b = Mock::new("b")
        .on_rollback(Step::after(ms(50), Step::Ok))
        .arc();
    let first = paused_runtime();
    let (txn, parked) = first.block_on(async {
        let txn = begin_with(&c, [a.clone(), b.clone()]);
        let prepare = poll_once(Box::pin(c.prepare_transaction(txn)));
        // B voted at once; A is still preparing when the client rolls back.
        let rollback = poll_once(Box::pin(c.rollback_transaction(txn)));
        (txn, (prepare, rollback))
    });
    drop(first);
    drop(parked);
    paused_runtime().block_on(async {
        let done = tokio::time::timeout(Duration::from_secs(10), c.rollback_transaction(txn)).await;
        let outcome = done.expect("the rollback was left in flight").unwrap();
        assert!(outcome.hazards.is_empty(), "{:?}", outcome.hazards);
        // A: its abandoned prepare is a failed one, so one rollback.
        // B: the abandoned rollback, then one more; not a third.
        assert_eq!((a.count(Kind::Rollback), b.count(Kind::Rollback)), (1, 2));
        let report = c.transaction_report(txn).unwrap();
        assert_eq!(
            report.participants[1].phase2,
            dtxn::Phase2Status::Acknowledged { attempts: 2 }
        );
    });
}

// ---- calls polled in place --------------------------------------------

/// Panics in `prepare_with` itself, before any future exists (a
/// hand-written method, not an `async fn`), and its futures panic when
/// dropped unfinished.
struct PanicsEarly {
    rolled_back: AtomicUsize,
}

/// A future that never finishes and panics when dropped.
struct HangsThenPanicsOnDrop;

impl Future for HangsThenPanicsOnDrop {
    type Output = Result<(), ParticipantError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> std::task::Poll<Self::Output> {
        std::task::Poll::Pending
    }
}

impl Drop for HangsThenPanicsOnDrop {
    fn drop(&mut self) {
        panic!("a cancelled call's future panics in Drop");
    }
}

#[async_trait]
impl Participant for PanicsEarly {
    fn prepare_with<'a, 'b, 'c>(
        &'a self,
        _cx: &'b dtxn::CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<PreparedResult, ParticipantError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        panic!("prepare_with panics before making its future");
    }
    fn commit_with<'a, 'b, 'c>(
        &'a self,
        _cx: &'b dtxn::CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), ParticipantError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(HangsThenPanicsOnDrop)
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        unreachable!("prepare_with is overridden")
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("commit_with is overridden")
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.rolled_back.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_participant_that_panics_before_making_its_future_is_a_failed_prepare() {
    let c = coordinator();
    let early = Arc::new(PanicsEarly {
        rolled_back: AtomicUsize::new(0),
    });
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, early.clone()).unwrap();
    let outcome = c.prepare_transaction(txn).await.unwrap();
    assert!(
        matches!(
            &outcome,
            PrepareOutcome::Aborted(dtxn::AbortReason::PrepareFailed {
                failure: dtxn::CallFailure::Panicked(message),
                ..
            }) if message.contains("before making its future")
        ),
        "{outcome:?}"
    );
    let rolled_back = c.rollback_transaction(txn).await.unwrap();
    assert!(rolled_back.hazards.is_empty());
    // A failed prepare's participant may hold work: it gets rollback.
    assert_eq!(early.rolled_back.load(Ordering::SeqCst), 1);
}

/// Votes `Ready`; every `commit` hangs, and its future panics when the
/// timeout drops it.
struct CommitHangs;

#[async_trait]
impl Participant for CommitHangs {
    fn commit_with<'a, 'b, 'c>(
        &'a self,
        _cx: &'b dtxn::CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), ParticipantError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(HangsThenPanicsOnDrop)
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("commit_with is overridden")
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_whose_future_panics_when_dropped_is_contained() {
    let c = TransactionCoordinator::with_config(
        config()
            .retry(RetryPolicy::new(2, ms(10), ms(10)).unwrap())
            .build()
            .unwrap(),
    );
    let ready = Mock::new("ready").arc();
    let txn = begin_with(&c, [ready.clone()]);
    c.register_participant(txn, Arc::new(CommitHangs)).unwrap();
    assert_eq!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
    // Both attempts time out; each cancelled future panics in Drop. The
    // caller gets the outcome with the hazard, and nothing else.
    let outcome = c.commit_transaction(txn).await.unwrap();
    assert_eq!(outcome.hazards.len(), 1);
    assert_eq!(outcome.hazards[0].attempts, 2);
    assert_eq!(outcome.hazards[0].last_failure, dtxn::CallFailure::TimedOut);
    assert_eq!(ready.count(Kind::Commit), 1);
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
}

/// Panics the first time it is asked for a `rollback` future; answers at
/// once after that.
struct RollbackPanicsOnce {
    asked: AtomicUsize,
}

#[async_trait]
impl Participant for RollbackPanicsOnce {
    fn rollback_with<'a, 'b, 'c>(
        &'a self,
        _cx: &'b dtxn::CallContext,
    ) -> Pin<Box<dyn Future<Output = Result<(), ParticipantError>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        if self.asked.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("no rollback future this time");
        }
        Box::pin(async { Ok(()) })
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("rollback_with is overridden")
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_fails_to_start_in_the_background_is_retried_to_the_end() {
    // The deadline's rollback is started by the sweeper, outside any
    // client call: the call that fails to start must still be fed to the
    // core (and retried), not lost with the runner that started it.
    let c = coordinator();
    let flaky = Arc::new(RollbackPanicsOnce {
        asked: AtomicUsize::new(0),
    });
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, flaky.clone()).unwrap();
    tokio::time::sleep(c.config().transaction_deadline() + Duration::from_secs(1)).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if c.outcome(txn) == dtxn::OutcomeStatus::Aborted {
                return;
            }
            tokio::time::sleep(ms(10)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "the rollback never ended");
    assert_eq!(flaky.asked.load(Ordering::SeqCst), 2, "retried once");
    let report = c.transaction_report(txn).unwrap();
    assert!(
        report.state == dtxn::TransactionState::Aborted,
        "{report:?}"
    );
}
