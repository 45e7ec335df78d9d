//! Ownership on a shared decision log (PROTOCOL.md rule 17): a coordinator
//! whose lease lapsed sends no call and writes no decision, and one that
//! takes over a dead coordinator delivers its decisions and answers for
//! its ids. A scripted in-memory log stands in for PostgreSQL (which has
//! its own tests in `postgres_log.rs` and the three-process tests of
//! `dtxn-cli`); every timeout runs on tokio's paused clock.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, ms, Kind, Mock, Step};
use dtxn::log::{
    CommitRecord, DecisionLog, Lease, LogContents, LogError, LogFuture, LoggedParticipant,
    ParticipantRegistry, ParticipantResolver, Takeover,
};
use dtxn::{
    CoordinatorError, OutcomeStatus, Participant, ParticipantError, TransactionCoordinator,
    TransactionId, TransactionState,
};

const LEASE: Duration = Duration::from_secs(4);

/// One node's part of a shared log, with a lease the test controls: it is
/// renewed by every write and every takeover check while `reachable`.
struct ClusterLog(Arc<Part>);

struct Part {
    lease: Lease,
    reachable: AtomicBool,
    /// Whether takeover checks run (a paused process runs none).
    checking: AtomicBool,
    /// The store hangs: takeover checks never answer.
    frozen: AtomicBool,
    commits: Mutex<BTreeMap<TransactionId, CommitRecord>>,
    /// What the next takeover checks find (then nothing).
    dead: Mutex<VecDeque<Takeover>>,
    checks: AtomicUsize,
}

impl Part {
    fn new() -> Arc<Self> {
        Arc::new(Part {
            lease: Lease::new(LEASE),
            reachable: AtomicBool::new(true),
            checking: AtomicBool::new(true),
            frozen: AtomicBool::new(false),
            commits: Mutex::default(),
            dead: Mutex::default(),
            checks: AtomicUsize::new(0),
        })
    }

    /// A renewal, as a storage transaction run now would make it.
    fn renew(&self) -> Result<(), LogError> {
        if self.lease.is_lost() {
            return Err(LogError::Fenced {
                node: "a".to_owned(),
            });
        }
        if !self.reachable.load(Ordering::Acquire) {
            return Err(LogError::Backend {
                message: "the database is unreachable".to_owned(),
            });
        }
        self.lease.renewed(tokio::time::Instant::now());
        Ok(())
    }
}

impl DecisionLog for ClusterLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        let opened = self
            .0
            .renew()
            .map(|()| LogContents::new(Vec::new(), vec![incarnation]));
        Box::pin(std::future::ready(opened))
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        let written = self.0.renew().map(|()| {
            self.0.commits.lock().unwrap().insert(record.txn, record);
        });
        Box::pin(std::future::ready(written))
    }

    fn log_end(&self, txn: TransactionId) {
        self.0.commits.lock().unwrap().remove(&txn);
    }

    fn lease(&self) -> Option<Lease> {
        Some(self.0.lease.clone())
    }

    fn take_over(&self) -> LogFuture<Option<Takeover>> {
        self.0.checks.fetch_add(1, Ordering::Relaxed);
        if !self.0.checking.load(Ordering::Acquire) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        if self.0.frozen.load(Ordering::Acquire) {
            return Box::pin(std::future::pending());
        }
        let taken = self
            .0
            .renew()
            .map(|()| self.0.dead.lock().unwrap().pop_front());
        Box::pin(std::future::ready(taken))
    }
}

async fn member(
    log: &Arc<Part>,
    participants: Arc<dyn ParticipantResolver>,
) -> TransactionCoordinator {
    let (c, recovery) = TransactionCoordinator::join_cluster(
        config().build().unwrap(),
        Arc::new(ClusterLog(Arc::clone(log))),
        participants,
    )
    .await
    .unwrap();
    assert!(recovery.redelivering.is_empty());
    c
}

fn registry(mocks: &[&Arc<Mock>]) -> Arc<dyn ParticipantResolver> {
    let mut registry = ParticipantRegistry::new();
    for mock in mocks {
        registry
            .insert(Arc::clone(mock) as Arc<dyn Participant>)
            .unwrap();
    }
    Arc::new(registry)
}

fn begin(c: &TransactionCoordinator, mocks: &[&Arc<Mock>]) -> TransactionId {
    let txn = c.begin_transaction().unwrap();
    for mock in mocks {
        c.register_participant(txn, Arc::clone(mock) as Arc<dyn Participant>)
            .unwrap();
    }
    txn
}

#[tokio::test(start_paused = true)]
async fn a_member_keeps_its_lease_through_its_takeover_checks_while_idle() {
    let log = Part::new();
    let a = Mock::new("a").arc();
    let c = member(&log, registry(&[&a])).await;
    // Ten leases long, nothing but the takeover checks renew it.
    tokio::time::sleep(LEASE * 10).await;
    assert!(log.checks.load(Ordering::Relaxed) >= 19);
    let ownership = c.ownership().unwrap();
    assert!(ownership.lease_held && !ownership.fenced);
    let txn = begin(&c, &[&a]);
    c.prepare_transaction(txn).await.unwrap();
    let outcome = c.commit_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, dtxn::Decision::Commit);
    assert_eq!(a.calls(), [Kind::Prepare, Kind::Commit]);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_whose_lease_lapsed_neither_logs_nor_commits_and_says_fenced() {
    let log = Part::new();
    let (a, b) = (Mock::new("a").arc(), Mock::new("b").arc());
    let c = member(&log, registry(&[&a, &b])).await;
    let txn = begin(&c, &[&a, &b]);
    c.prepare_transaction(txn).await.unwrap();
    // Paused for longer than the lease (its checks did not renew it); the
    // database would still take a write, as nobody took over yet.
    log.checking.store(false, Ordering::Release);
    tokio::time::advance(LEASE).await;
    assert_eq!(
        c.commit_transaction(txn).await.unwrap_err(),
        CoordinatorError::Fenced
    );
    // Prepared is all anyone heard: no decision was logged, no commit
    // and no rollback was sent.
    assert!(log.commits.lock().unwrap().is_empty());
    assert_eq!(a.calls(), [Kind::Prepare]);
    assert_eq!(b.calls(), [Kind::Prepare]);
    c.fenced().await;
    assert!(log.lease.is_lost());
    assert_eq!(c.begin_transaction(), Err(CoordinatorError::Fenced));
    let ownership = c.ownership().unwrap();
    assert!(ownership.fenced && !ownership.lease_held);
    // Even its deadline rolls nothing back: the new owner presumes abort.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(a.calls(), [Kind::Prepare]);
    // Its ids are another coordinator's business now.
    let other = TransactionId::from_u128(txn.as_u128() + 1);
    assert_eq!(c.outcome(other), OutcomeStatus::Unknown);
    // Shutting down does not wait for transactions it will never end.
    c.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_cut_off_from_the_database_fences_itself_when_its_lease_lapses() {
    let log = Part::new();
    let a = Mock::new("a").arc();
    let c = member(&log, registry(&[&a])).await;
    let txn = begin(&c, &[&a]);
    c.prepare_transaction(txn).await.unwrap();
    let cut_off = tokio::time::Instant::now();
    log.reachable.store(false, Ordering::Release);
    // No call comes: its own checks find the lease lapsed, within a lease.
    c.fenced().await;
    assert!(cut_off.elapsed() <= LEASE, "{:?}", cut_off.elapsed());
    assert_eq!(
        c.commit_transaction(txn).await.unwrap_err(),
        CoordinatorError::Fenced
    );
    assert_eq!(a.calls(), [Kind::Prepare]);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_whose_store_hangs_fences_itself_when_its_lease_lapses() {
    let log = Part::new();
    let a = Mock::new("a").arc();
    let c = member(&log, registry(&[&a])).await;
    let frozen = tokio::time::Instant::now();
    log.frozen.store(true, Ordering::Release);
    // Idle, its takeover check hanging: the lease is still watched.
    tokio::time::timeout(LEASE * 2, c.fenced())
        .await
        .expect("fenced within two leases of the store hanging");
    assert!(
        frozen.elapsed() <= LEASE + LEASE / 2,
        "{:?}",
        frozen.elapsed()
    );
    assert!(c.ownership().unwrap().fenced);
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_during_phase_2_stops_the_retries() {
    let log = Part::new();
    let a = Mock::new("a")
        .on_commit(Step::Fail(ParticipantError::transient("busy")))
        .arc();
    let c = member(&log, registry(&[&a])).await;
    let txn = begin(&c, &[&a]);
    c.prepare_transaction(txn).await.unwrap();
    let commit = {
        let c = c.clone();
        tokio::spawn(async move { c.commit_transaction(txn).await })
    };
    // The first commit failed; the takeover, at the next check, finds
    // this coordinator fenced out.
    tokio::task::yield_now().await;
    log.lease.lose();
    assert_eq!(commit.await.unwrap().unwrap_err(), CoordinatorError::Fenced);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(a.calls(), [Kind::Prepare, Kind::Commit]);
    // The decision stays in the log for the new owner.
    assert!(log.commits.lock().unwrap().contains_key(&txn));
}

#[tokio::test(start_paused = true)]
async fn a_survivor_delivers_the_decisions_it_takes_over_and_answers_for_their_ids() {
    let log = Part::new();
    let (a, b) = (Mock::new("a").arc(), Mock::new("b").arc());
    let dead_incarnation = 0xdead_u64;
    let id = |incarnation: u64, sequence: u64| {
        TransactionId::from_u128(u128::from(incarnation) << 64 | u128::from(sequence))
    };
    let (logged, undecided, stranger) = (
        id(dead_incarnation, 7),
        id(dead_incarnation, 8),
        id(0xbeef, 1),
    );
    let key = |name: &str| LoggedParticipant {
        key: Arc::from(name),
        payload: None,
    };
    log.dead.lock().unwrap().push_back(Takeover::new(
        "node2".to_owned(),
        vec![CommitRecord {
            txn: logged,
            participants: vec![key("a"), key("b")],
        }],
        vec![dead_incarnation],
    ));
    let c = member(&log, registry(&[&a, &b])).await;
    assert_eq!(c.outcome(undecided), OutcomeStatus::Unknown);
    // The first check, half a lease after joining, takes node2 over.
    tokio::time::sleep(LEASE / 2 + ms(1)).await;
    while c.get_transaction_state(logged) != Ok(TransactionState::Committed) {
        tokio::time::sleep(ms(1)).await;
    }
    assert_eq!(a.calls(), [Kind::Commit]);
    assert_eq!(b.calls(), [Kind::Commit]);
    let ownership = c.ownership().unwrap();
    assert_eq!((ownership.takeovers, ownership.adopted_decisions), (1, 1));
    assert_eq!(ownership.incarnations, 2);
    // The dead node's ids are answered here now: presumed abort for one
    // that was never logged; a stranger's stay unknown.
    assert_eq!(c.outcome(undecided), OutcomeStatus::Aborted);
    assert_eq!(c.outcome(logged), OutcomeStatus::Committed);
    assert_eq!(c.outcome(stranger), OutcomeStatus::Unknown);
    // Delivered: the decision left this node's part of the log.
    tokio::task::yield_now().await;
    assert!(log.commits.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_without_a_shared_log_has_no_ownership_and_is_never_fenced() {
    let c = common::coordinator();
    assert_eq!(c.ownership(), None);
    let fenced = tokio::time::timeout(Duration::from_secs(3600), c.fenced()).await;
    assert!(fenced.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_lease_of_any_length_is_counted_without_overflow() {
    for (duration, held) in [(Duration::ZERO, false), (Duration::MAX, true)] {
        let lease = Lease::new(duration);
        lease.renewed(tokio::time::Instant::now());
        assert_eq!(lease.is_held(), held, "{duration:?}");
        assert!(lease.remaining() <= duration);
    }
}
