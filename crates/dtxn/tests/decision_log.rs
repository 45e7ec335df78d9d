//! The decision log (PROTOCOL.md rule 16): what is logged and when, what a
//! failing log does, and recovery after a crash. An in-memory log stands in
//! for the storage here (the SQLite backend has its own tests), so failures
//! can be scripted; every timeout runs on tokio's paused clock.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use common::{config, ms, Kind, Mock, Step};
use dtxn::log::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture, ParticipantRegistry};
use dtxn::{
    async_trait, CoordinatorError, OutcomeStatus, Participant, ParticipantError, PreparedResult,
    TransactionCoordinator, TransactionId, TransactionState,
};

/// What the "disk" holds: it outlives every coordinator using it.
#[derive(Default)]
struct Disk {
    commits: BTreeMap<TransactionId, CommitRecord>,
    incarnations: Vec<u64>,
    /// Every operation, in order: ("commit" | "end", txn).
    journal: Vec<(&'static str, TransactionId)>,
    /// Scripted answers of the next writes (default: durable).
    failures: VecDeque<LogError>,
    /// Writes never complete (the disk stalls): a crash then finds nothing.
    stall: bool,
    /// End records are lost (the crash comes before they are written).
    lose_ends: bool,
}

#[derive(Clone, Default)]
struct MemoryLog(Arc<Mutex<Disk>>);

impl MemoryLog {
    fn fail_next(&self, n: usize) {
        let mut disk = self.0.lock().unwrap();
        for _ in 0..n {
            disk.failures.push_back(LogError::Backend {
                message: "disk unavailable".into(),
            });
        }
    }
    fn logged(&self) -> Vec<TransactionId> {
        self.0.lock().unwrap().commits.keys().copied().collect()
    }
    fn journal(&self) -> Vec<(&'static str, TransactionId)> {
        self.0.lock().unwrap().journal.clone()
    }
}

impl DecisionLog for MemoryLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        let mut disk = self.0.lock().unwrap();
        disk.incarnations.push(incarnation);
        let contents = LogContents::new(
            disk.commits.values().cloned().collect(),
            disk.incarnations.clone(),
        );
        Box::pin(async move { Ok(contents) })
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        let disk = self.0.clone();
        Box::pin(async move {
            // A write takes a little time, as a sync does.
            tokio::time::sleep(ms(1)).await;
            if disk.lock().unwrap().stall {
                std::future::pending::<()>().await;
            }
            let mut disk = disk.lock().unwrap();
            if let Some(e) = disk.failures.pop_front() {
                return Err(e);
            }
            disk.journal.push(("commit", record.txn));
            disk.commits.insert(record.txn, record);
            Ok(())
        })
    }

    fn log_end(&self, txn: TransactionId) {
        let mut disk = self.0.lock().unwrap();
        if disk.lose_ends {
            return;
        }
        disk.journal.push(("end", txn));
        disk.commits.remove(&txn);
    }
}

/// A participant that checks, when asked to commit, that the decision is
/// already in the log.
struct Witness {
    log: MemoryLog,
    logged_at_commit: Mutex<Vec<bool>>,
}

#[async_trait]
impl Participant for Witness {
    fn recovery_key(&self) -> Option<&str> {
        Some("witness")
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        let logged = self.log.logged().contains(&txn);
        self.logged_at_commit.lock().unwrap().push(logged);
        Ok(())
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

async fn durable(log: &MemoryLog, registry: &ParticipantRegistry) -> TransactionCoordinator {
    let (c, recovery) =
        TransactionCoordinator::recover(config().build().unwrap(), Arc::new(log.clone()), registry)
            .await
            .unwrap();
    assert!(recovery.unresolved.is_empty());
    c
}

fn register(c: &TransactionCoordinator, txn: TransactionId, ps: &[Arc<Mock>]) {
    for p in ps {
        c.register_participant(txn, p.clone() as Arc<dyn Participant>)
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_commit_decision_is_durable_before_any_commit_call() {
    let log = MemoryLog::default();
    let c = durable(&log, &ParticipantRegistry::new()).await;
    let witness = Arc::new(Witness {
        log: log.clone(),
        logged_at_commit: Mutex::default(),
    });
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, witness.clone()).unwrap();
    register(&c, txn, &[Mock::new("b").arc()]);
    c.prepare_transaction(txn).await.unwrap();
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    assert_eq!(*witness.logged_at_commit.lock().unwrap(), [true]);
    // Every participant acknowledged: the end record followed.
    assert_eq!(log.journal(), [("commit", txn), ("end", txn)]);
    assert!(log.logged().is_empty());
}

#[tokio::test(start_paused = true)]
async fn abort_decisions_and_read_only_commits_are_not_logged() {
    let log = MemoryLog::default();
    let c = durable(&log, &ParticipantRegistry::new()).await;
    let aborted = c.begin_transaction().unwrap();
    register(
        &c,
        aborted,
        &[Mock::new("no").on_prepare(Step::aborted("no stock")).arc()],
    );
    assert!(!c.prepare_transaction(aborted).await.unwrap().is_prepared());
    let read_only = c.begin_transaction().unwrap();
    register(
        &c,
        read_only,
        &[Mock::new("ro")
            .on_prepare(Step::Vote(PreparedResult::ReadOnly))
            .arc()],
    );
    c.prepare_transaction(read_only).await.unwrap();
    assert!(c
        .commit_transaction(read_only)
        .await
        .unwrap()
        .is_committed());
    assert!(log.journal().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_log_delays_the_commit_calls_until_a_write_is_durable() {
    let log = MemoryLog::default();
    let c = durable(&log, &ParticipantRegistry::new()).await;
    let p = Mock::new("p").arc();
    let txn = c.begin_transaction().unwrap();
    register(&c, txn, std::slice::from_ref(&p));
    c.prepare_transaction(txn).await.unwrap();
    log.fail_next(2);
    let commit = tokio::spawn({
        let c = c.clone();
        async move { c.commit_transaction(txn).await }
    });
    // The first write fails, the second (after 10 ms of backoff) too.
    tokio::time::sleep(ms(5)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committing
    );
    assert_eq!(c.outcome(txn), OutcomeStatus::Pending, "not durable yet");
    assert_eq!(p.count(Kind::Commit), 0);
    let outcome = commit.await.unwrap().unwrap();
    assert!(outcome.is_committed());
    assert_eq!(p.calls(), [Kind::Prepare, Kind::Commit]);
    assert_eq!(log.journal(), [("commit", txn), ("end", txn)]);
}

/// A current-thread runtime on a paused clock. Dropping it while tasks are
/// pending is the crash: every call of the coordinator on it stops there.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Runs a coordinator on `log` until its Commit decision for a
/// transaction of `participants` is durable and `a` acknowledged, then
/// crashes it (its runtime is dropped with the other calls pending).
fn crash_during_phase_2(log: &MemoryLog, participants: &[Arc<Mock>]) -> TransactionId {
    let runtime = paused_runtime();
    let txn = runtime.block_on(async {
        let first = durable(log, &ParticipantRegistry::new()).await;
        let txn = first.begin_transaction().unwrap();
        register(&first, txn, participants);
        first.prepare_transaction(txn).await.unwrap();
        tokio::spawn({
            let first = first.clone();
            async move { first.commit_transaction(txn).await }
        });
        tokio::time::sleep(ms(20)).await;
        txn
    });
    drop(runtime);
    txn
}

/// Restarts on `log` with `participants` registered again; returns the
/// new coordinator's recovery.
async fn restart(
    log: &MemoryLog,
    participants: &[Arc<Mock>],
) -> (TransactionCoordinator, dtxn::log::Recovery) {
    let mut registry = ParticipantRegistry::new();
    for p in participants {
        registry.insert(p.clone()).unwrap();
    }
    TransactionCoordinator::recover(config().build().unwrap(), Arc::new(log.clone()), &registry)
        .await
        .unwrap()
}

#[test]
fn a_crash_before_the_decision_is_durable_leaves_it_presumed_aborted() {
    let log = MemoryLog::default();
    log.0.lock().unwrap().stall = true;
    let (a, b) = (Mock::new("a").arc(), Mock::new("b").arc());
    let txn = crash_during_phase_2(&log, &[a.clone(), b.clone()]);
    assert_eq!(
        a.count(Kind::Commit) + b.count(Kind::Commit),
        0,
        "nobody told commit"
    );
    assert!(log.logged().is_empty());
    paused_runtime().block_on(async {
        let (second, recovery) = restart(&log, &[a.clone(), b.clone()]).await;
        assert!(recovery.redelivering.is_empty());
        assert_eq!(second.outcome(txn), OutcomeStatus::Aborted);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(a.count(Kind::Commit) + b.count(Kind::Commit), 0);
    });
}

#[test]
fn a_crash_after_every_acknowledgement_but_before_the_end_record_delivers_commit_once_more() {
    let log = MemoryLog::default();
    log.0.lock().unwrap().lose_ends = true;
    let (a, b) = (Mock::new("a").arc(), Mock::new("b").arc());
    let txn = crash_during_phase_2(&log, &[a.clone(), b.clone()]);
    assert_eq!((a.count(Kind::Commit), b.count(Kind::Commit)), (1, 1));
    assert_eq!(log.logged(), [txn], "the end record was lost");
    log.0.lock().unwrap().lose_ends = false;
    paused_runtime().block_on(async {
        let (second, recovery) = restart(&log, &[a.clone(), b.clone()]).await;
        assert_eq!(recovery.redelivering, [txn]);
        let outcome = second.commit_transaction(txn).await.unwrap();
        assert!(outcome.is_committed() && outcome.hazards.is_empty());
        assert_eq!((a.count(Kind::Commit), b.count(Kind::Commit)), (2, 2));
        tokio::time::sleep(ms(100)).await;
        assert!(log.logged().is_empty());
    });
}

#[test]
fn recovery_delivers_a_logged_commit_again_after_a_crash() {
    let log = MemoryLog::default();
    let a = Mock::new("a").arc();
    // `b` never answers the first coordinator's commit: it dies meanwhile.
    let b = Mock::new("b").on_commit(Step::Hang).arc();
    let txn = crash_during_phase_2(&log, &[a.clone(), b.clone()]);
    assert_eq!(a.count(Kind::Commit), 1);
    assert_eq!(b.count(Kind::Commit), 1);
    assert_eq!(log.logged(), [txn]);

    paused_runtime().block_on(async {
        let mut registry = ParticipantRegistry::new();
        registry.insert(a.clone()).unwrap();
        registry.insert(b.clone()).unwrap();
        let (second, recovery) = TransactionCoordinator::recover(
            config().build().unwrap(),
            Arc::new(log.clone()),
            &registry,
        )
        .await
        .unwrap();
        assert_eq!(recovery.redelivering, [txn]);
        let outcome = second.commit_transaction(txn).await.unwrap();
        assert!(outcome.is_committed() && outcome.hazards.is_empty());
        assert_eq!(
            a.count(Kind::Commit),
            2,
            "delivered again: commit is idempotent"
        );
        assert_eq!(b.count(Kind::Commit), 2);
        assert_eq!(second.outcome(txn), OutcomeStatus::Committed);
        tokio::time::sleep(ms(100)).await;
        assert!(log.logged().is_empty(), "the end record followed");
    });
}

#[tokio::test(start_paused = true)]
async fn with_a_log_unknown_ids_of_this_log_are_presumed_aborted() {
    let log = MemoryLog::default();
    let first = durable(&log, &ParticipantRegistry::new()).await;
    // Prepared, then the coordinator died before deciding.
    let p = Mock::new("p").arc();
    let in_doubt = first.begin_transaction().unwrap();
    register(&first, in_doubt, &[p]);
    first.prepare_transaction(in_doubt).await.unwrap();
    std::mem::forget(first);

    let second = durable(&log, &ParticipantRegistry::new()).await;
    assert_eq!(second.outcome(in_doubt), OutcomeStatus::Aborted);
    let own = second.begin_transaction().unwrap();
    assert_eq!(second.outcome(own), OutcomeStatus::Pending);
    let foreign: TransactionId = "00000000000000010000000000000001".parse().unwrap();
    assert_eq!(second.outcome(foreign), OutcomeStatus::Unknown);
    // Without a log, never presumed: unknown.
    let memory = TransactionCoordinator::with_config(config().build().unwrap());
    assert_eq!(memory.outcome(in_doubt), OutcomeStatus::Unknown);
}

struct Keyless;

#[async_trait]
impl Participant for Keyless {
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn with_a_log_a_participant_without_recovery_key_is_refused() {
    let log = MemoryLog::default();
    let c = durable(&log, &ParticipantRegistry::new()).await;
    let txn = c.begin_transaction().unwrap();
    let refused = c.register_participant(txn, Arc::new(Keyless));
    assert!(matches!(
        refused,
        Err(CoordinatorError::NotRecoverable { txn: t, .. }) if t == txn
    ));
    // The transaction is unharmed.
    register(&c, txn, &[Mock::new("p").arc()]);
    c.prepare_transaction(txn).await.unwrap();
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    // Without a log it is welcome.
    let memory = TransactionCoordinator::with_config(config().build().unwrap());
    let txn = memory.begin_transaction().unwrap();
    memory.register_participant(txn, Arc::new(Keyless)).unwrap();
}

#[test]
fn an_unresolved_participant_is_a_hazard_and_its_decision_stays_logged() {
    let log = MemoryLog::default();
    let a = Mock::new("a").on_commit(Step::Hang).arc();
    let gone = Mock::new("gone").on_commit(Step::Hang).arc();
    let txn = crash_during_phase_2(&log, &[a.clone(), gone]);
    paused_runtime().block_on(async {
        // Only `a` is registered again.
        let mut registry = ParticipantRegistry::new();
        registry.insert(a.clone()).unwrap();
        let (second, recovery) = TransactionCoordinator::recover(
            config().build().unwrap(),
            Arc::new(log.clone()),
            &registry,
        )
        .await
        .unwrap();
        assert_eq!(recovery.unresolved, [(txn, "gone".to_owned())]);
        let outcome = second.commit_transaction(txn).await.unwrap();
        assert!(outcome.is_committed());
        assert_eq!(outcome.hazards.len(), 1);
        assert_eq!(outcome.hazards[0].participant, "gone");
        assert_eq!(a.count(Kind::Commit), 2);
        tokio::time::sleep(ms(100)).await;
        assert_eq!(log.logged(), [txn], "kept for the next start");
        assert_eq!(second.outcome(txn), OutcomeStatus::Committed);
    });
}

#[tokio::test(start_paused = true)]
async fn an_operator_lists_logged_decisions_retries_now_and_resolves_hazards() {
    let log = MemoryLog::default();
    let slow_retries = config()
        .retry(dtxn::RetryPolicy::new(5, ms(10_000), ms(10_000)).unwrap())
        .build()
        .unwrap();
    let (c, _) = TransactionCoordinator::recover(
        slow_retries,
        Arc::new(log.clone()),
        &ParticipantRegistry::new(),
    )
    .await
    .unwrap();
    assert!(c.logged_decisions().is_empty());

    // One participant fails its first commit: the retry waits 5-10 s.
    let flaky = Mock::new("flaky")
        .on_commit(Step::Fail(ParticipantError::transient("busy")))
        .arc();
    let txn = c.begin_transaction().unwrap();
    register(&c, txn, std::slice::from_ref(&flaky));
    c.prepare_transaction(txn).await.unwrap();
    let commit = tokio::spawn({
        let c = c.clone();
        async move { c.commit_transaction(txn).await }
    });
    tokio::time::sleep(ms(10)).await;
    let listed = c.logged_decisions();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].txn, listed[0].state),
        (txn, TransactionState::Committing)
    );
    assert_eq!(flaky.count(Kind::Commit), 1);
    // Retry now: no waiting out the backoff.
    c.retry_now(txn).unwrap();
    let outcome = tokio::time::timeout(ms(100), commit)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(outcome.is_committed() && outcome.hazards.is_empty());
    assert_eq!(flaky.count(Kind::Commit), 2);
    assert!(c.logged_decisions().is_empty());

    // A participant that fails for good: a hazard, kept until resolved.
    let gone = Mock::new("gone")
        .on_commit(Step::Fail(ParticipantError::permanent("gone")))
        .arc();
    let txn = c.begin_transaction().unwrap();
    register(&c, txn, &[gone]);
    c.prepare_transaction(txn).await.unwrap();
    assert_eq!(c.commit_transaction(txn).await.unwrap().hazards.len(), 1);
    let listed = c.logged_decisions();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, TransactionState::Committed);
    assert_eq!(listed[0].hazards, ["gone"]);
    assert_eq!(log.logged(), [txn]);
    c.resolve_hazard(txn).unwrap();
    assert!(c.logged_decisions().is_empty());
    assert!(log.logged().is_empty(), "the decision left the log");
    assert!(matches!(
        c.resolve_hazard(txn),
        Err(CoordinatorError::NoLoggedHazard { .. })
    ));
}
