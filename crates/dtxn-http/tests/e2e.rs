//! End to end over loopback: a real [`TransactionCoordinator`] calls
//! participant services through [`HttpParticipant`]s, each service a real
//! axum server.
//!
//! Real sockets need real time, so timeouts are short and every assertion
//! holds whatever the timing: a service that must not answer waits
//! forever, a killed service is gone for good, and the few things that
//! happen "eventually" are polled with a bound.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use dtxn::{
    async_trait, AbortReason, CallFailure, CoordinatorConfig, Decision, Participant,
    ParticipantError, PrepareOutcome, PreparedResult, RetryPolicy, TransactionCoordinator,
    TransactionId, TransactionOutcome,
};
use dtxn_http::wire::ErrorBody;
use dtxn_http::HttpParticipant;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The coordinator's prepare timeout in these tests.
const PREPARE_TIMEOUT: Duration = Duration::from_millis(300);
/// Attempts per phase-2 call, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// The HTTP client's own per-call limit: longer than the coordinator's
/// timeouts, so those are the ones that fire.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A coordinator with short timeouts and a short retry policy.
fn coordinator(phase2_timeout: Duration) -> TransactionCoordinator {
    let config = CoordinatorConfig::builder()
        .prepare_timeout(PREPARE_TIMEOUT)
        .phase2_timeout(phase2_timeout)
        .retry(
            RetryPolicy::new(
                MAX_ATTEMPTS,
                Duration::from_millis(10),
                Duration::from_millis(40),
            )
            .unwrap(),
        )
        .transaction_deadline(Duration::from_secs(30))
        .build()
        .unwrap();
    TransactionCoordinator::with_config(config)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Prepare,
    Commit,
    Rollback,
}

/// How a scripted participant answers a phase-2 call.
enum Phase2 {
    /// These results first, then `Ok`.
    Script(Mutex<VecDeque<Result<(), ParticipantError>>>),
    /// Reports each call on the channel, then never answers.
    NeverAnswer(mpsc::UnboundedSender<TransactionId>),
}

/// A participant that answers as scripted and logs every call it gets.
struct Scripted {
    vote: Option<PreparedResult>,
    commit: Phase2,
    rollback: Phase2,
    log: Mutex<Vec<(Op, TransactionId)>>,
}

impl Scripted {
    /// Votes `vote`; commit and rollback succeed.
    fn voting(vote: PreparedResult) -> Self {
        Self {
            vote: Some(vote),
            commit: Phase2::Script(Mutex::default()),
            rollback: Phase2::Script(Mutex::default()),
            log: Mutex::default(),
        }
    }

    fn ready() -> Self {
        Self::voting(PreparedResult::Ready)
    }

    /// Commit answers `results` in turn, then `Ok`.
    fn commit_answers(mut self, results: Vec<Result<(), ParticipantError>>) -> Self {
        self.commit = Phase2::Script(Mutex::new(results.into()));
        self
    }

    /// Commit reports its arrival on `arrived`, then never answers.
    fn commit_never_answers(mut self, arrived: mpsc::UnboundedSender<TransactionId>) -> Self {
        self.commit = Phase2::NeverAnswer(arrived);
        self
    }

    /// Neither prepare nor rollback ever answers (rollback calls still
    /// reach the log).
    fn never_answers(mut self) -> Self {
        self.vote = None;
        self.rollback = Phase2::NeverAnswer(mpsc::unbounded_channel().0);
        self
    }

    fn calls(&self, op: Op, txn: TransactionId) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|&&call| call == (op, txn)).count()
    }

    fn record(&self, op: Op, txn: TransactionId) {
        self.log.lock().unwrap().push((op, txn));
    }

    async fn phase2(&self, phase2: &Phase2, txn: TransactionId) -> Result<(), ParticipantError> {
        match phase2 {
            Phase2::Script(results) => {
                let next = results.lock().unwrap().pop_front();
                next.unwrap_or(Ok(()))
            }
            Phase2::NeverAnswer(arrived) => {
                let _ = arrived.send(txn);
                std::future::pending().await
            }
        }
    }
}

#[async_trait]
impl Participant for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.record(Op::Prepare, txn);
        match &self.vote {
            Some(vote) => vote.clone(),
            None => std::future::pending().await,
        }
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record(Op::Commit, txn);
        self.phase2(&self.commit, txn).await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record(Op::Rollback, txn);
        self.phase2(&self.rollback, txn).await
    }
}

/// A service running in a tokio runtime of its own on a thread of its
/// own, so that it can be killed like a process: shutting the runtime down
/// drops its listener and every connection at once.
struct ServiceThread {
    addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServiceThread {
    fn start(app: Router) -> Self {
        let (bound, addr) = std::sync::mpsc::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the service");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                bound.send(listener.local_addr().unwrap()).unwrap();
                tokio::spawn(async move { axum::serve(listener, app).await });
                // A dropped sender kills too.
                let _ = killed.await;
            });
            runtime.shutdown_background();
        });
        let addr = addr.recv().expect("the service binds");
        Self {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// Serves `participant` under the wire contract.
    fn serving(participant: &Arc<Scripted>) -> Self {
        Self::start(dtxn_http::participant_router(participant.clone()))
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Kills the service and waits until its runtime is gone.
    fn kill(&mut self) {
        self.kill.take();
        if let Some(thread) = self.thread.take() {
            tokio::task::block_in_place(|| thread.join().expect("the service thread exits"));
        }
    }
}

impl Drop for ServiceThread {
    fn drop(&mut self) {
        // Dropping the sender stops the runtime; the thread is not joined
        // (a panicking test must not block here).
        self.kill.take();
    }
}

/// An [`HttpParticipant`] named `name` for the service at `url`.
fn http(name: &str, url: &str, client: &reqwest::Client) -> Arc<dyn Participant> {
    Arc::new(
        HttpParticipant::builder(name, url)
            .client(client.clone())
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("a valid participant URL"),
    )
}

/// Begins a transaction with `participants`.
fn begin(
    coordinator: &TransactionCoordinator,
    participants: &[&Arc<dyn Participant>],
) -> TransactionId {
    let txn = coordinator.begin_transaction().unwrap();
    for participant in participants {
        coordinator
            .register_participant(txn, Arc::clone(participant))
            .unwrap();
    }
    txn
}

/// Prepares `txn`, expecting every vote to be Ready or ReadOnly.
async fn prepare(coordinator: &TransactionCoordinator, txn: TransactionId) {
    assert_eq!(
        coordinator.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
}

/// The reason of an Aborted prepare.
async fn prepare_aborts(coordinator: &TransactionCoordinator, txn: TransactionId) -> AbortReason {
    match coordinator.prepare_transaction(txn).await.unwrap() {
        PrepareOutcome::Aborted(reason) => reason,
        PrepareOutcome::Prepared => panic!("{txn} prepared, expected an abort"),
    }
}

/// The one hazard of `outcome`.
fn only_hazard(outcome: &TransactionOutcome) -> &dtxn::Hazard {
    assert_eq!(outcome.hazards.len(), 1, "{outcome:?}");
    &outcome.hazards[0]
}

/// A failed call's error, which must be transient.
fn transient_error(failure: &CallFailure) -> &ParticipantError {
    match failure {
        CallFailure::Error(e) if !e.is_permanent() => e,
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// Waits (at most 5 s) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_service_killed_mid_commit_ends_with_a_hazard_and_others_are_unaffected() {
    let (arrived, mut commit_arrived) = mpsc::unbounded_channel();
    let inventory = Arc::new(Scripted::ready());
    let orders = Arc::new(Scripted::ready());
    let payments = Arc::new(Scripted::ready().commit_never_answers(arrived));
    let inventory_service = ServiceThread::serving(&inventory);
    let orders_service = ServiceThread::serving(&orders);
    let mut payments_service = ServiceThread::serving(&payments);

    // The first commit attempt must end by the kill, not by its timeout.
    let coordinator = coordinator(Duration::from_secs(3));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &inventory_service.url(), &client);
    let orders_p = http("orders", &orders_service.url(), &client);
    let payments_p = http("payments", &payments_service.url(), &client);

    let txn = begin(&coordinator, &[&inventory_p, &orders_p, &payments_p]);
    prepare(&coordinator, txn).await;
    // A second transaction, with the healthy services only, prepared
    // before the kill and committed after it: in flight throughout.
    let other = begin(&coordinator, &[&inventory_p, &orders_p]);
    prepare(&coordinator, other).await;

    let committing = tokio::spawn({
        let coordinator = coordinator.clone();
        async move { coordinator.commit_transaction(txn).await }
    });
    assert_eq!(commit_arrived.recv().await, Some(txn));
    payments_service.kill();

    let other_outcome = coordinator.commit_transaction(other).await.unwrap();
    assert_eq!(other_outcome.decision, Decision::Commit);
    assert!(!other_outcome.has_hazards(), "{other_outcome:?}");

    let outcome = committing.await.unwrap().unwrap();
    assert_eq!(outcome.decision, Decision::Commit);
    let hazard = only_hazard(&outcome);
    assert_eq!(hazard.participant, "payments");
    assert_eq!(hazard.decision, Decision::Commit);
    assert_eq!(hazard.attempts, MAX_ATTEMPTS);
    // The retries after the kill find nobody listening.
    let last = transient_error(&hazard.last_failure)
        .message()
        .to_lowercase();
    assert!(
        last.contains("connection failed") && last.contains("refused"),
        "{last}"
    );
    assert!(last.contains(&payments_service.url()), "{last}");

    for (service, name) in [(&inventory, "inventory"), (&orders, "orders")] {
        assert_eq!(service.calls(Op::Commit, txn), 1, "{name} commits {txn}");
        assert_eq!(
            service.calls(Op::Commit, other),
            1,
            "{name} commits {other}"
        );
        assert_eq!(service.calls(Op::Rollback, txn), 0, "{name}");
    }
    assert!(payments.calls(Op::Commit, txn) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_answers_aborts_the_transaction_and_gets_rollback_attempts() {
    let inventory = Arc::new(Scripted::ready());
    let orders = Arc::new(Scripted::ready());
    let ledger = Arc::new(Scripted::ready().never_answers());
    let services = [&inventory, &orders, &ledger].map(ServiceThread::serving);
    let phase2_timeout = Duration::from_millis(200);
    let coordinator = coordinator(phase2_timeout);
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &services[0].url(), &client);
    let orders_p = http("orders", &services[1].url(), &client);
    let ledger_p = http("ledger", &services[2].url(), &client);

    let txn = begin(&coordinator, &[&inventory_p, &orders_p, &ledger_p]);
    let started = Instant::now();
    let reason = prepare_aborts(&coordinator, txn).await;
    assert!(started.elapsed() >= PREPARE_TIMEOUT);
    assert_eq!(
        reason,
        AbortReason::PrepareFailed {
            participant: "ledger".to_owned(),
            index: 2,
            failure: CallFailure::TimedOut,
        }
    );

    let outcome = coordinator.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    // The silent service may hold work, so it is sent rollback until the
    // attempts run out.
    let hazard = only_hazard(&outcome);
    assert_eq!(hazard.participant, "ledger");
    assert_eq!(hazard.decision, Decision::Abort);
    assert_eq!(hazard.attempts, MAX_ATTEMPTS);
    assert_eq!(hazard.last_failure, CallFailure::TimedOut);
    eventually("every rollback attempt reaches the silent service", || {
        ledger.calls(Op::Rollback, txn) == MAX_ATTEMPTS as usize
    })
    .await;
    for (service, name) in [(&inventory, "inventory"), (&orders, "orders")] {
        assert_eq!(service.calls(Op::Rollback, txn), 1, "{name}");
        assert_eq!(service.calls(Op::Commit, txn), 0, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_read_only_and_aborted_votes_travel_over_http() {
    let inventory = Arc::new(Scripted::ready());
    let catalog = Arc::new(Scripted::voting(PreparedResult::ReadOnly));
    let stock = Arc::new(Scripted::voting(PreparedResult::Aborted(
        "out of stock".to_owned(),
    )));
    let services = [&inventory, &catalog, &stock].map(ServiceThread::serving);
    let coordinator = coordinator(Duration::from_millis(500));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &services[0].url(), &client);
    let catalog_p = http("catalog", &services[1].url(), &client);
    let stock_p = http("stock", &services[2].url(), &client);

    let committed = begin(&coordinator, &[&inventory_p, &catalog_p]);
    prepare(&coordinator, committed).await;
    let outcome = coordinator.commit_transaction(committed).await.unwrap();
    assert_eq!(outcome.decision, Decision::Commit);
    assert!(!outcome.has_hazards(), "{outcome:?}");
    assert_eq!(inventory.calls(Op::Commit, committed), 1);
    // A read-only voter gets no phase 2.
    assert_eq!(catalog.calls(Op::Prepare, committed), 1);
    assert_eq!(catalog.calls(Op::Commit, committed), 0);
    assert_eq!(catalog.calls(Op::Rollback, committed), 0);

    let aborted = begin(&coordinator, &[&inventory_p, &stock_p]);
    assert_eq!(
        prepare_aborts(&coordinator, aborted).await,
        AbortReason::Voted {
            participant: "stock".to_owned(),
            index: 1,
            reason: "out of stock".to_owned(),
        }
    );
    let outcome = coordinator.rollback_transaction(aborted).await.unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    assert!(!outcome.has_hazards(), "{outcome:?}");
    assert_eq!(inventory.calls(Op::Rollback, aborted), 1);
    // An aborted vote has already undone its work: no rollback.
    assert_eq!(stock.calls(Op::Rollback, aborted), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_refusal_aborts_with_the_services_reason_and_gets_no_rollback() {
    // A service written by hand, not with participant_router.
    let rollbacks = Arc::new(AtomicUsize::new(0));
    let refusing = Router::new()
        .route(
            "/prepare",
            post(|| async {
                (
                    StatusCode::CONFLICT,
                    Json(ErrorBody::new("conflict", "insufficient funds")),
                )
            }),
        )
        .route(
            "/rollback",
            post({
                let rollbacks = Arc::clone(&rollbacks);
                move || async move {
                    rollbacks.fetch_add(1, Ordering::SeqCst);
                    StatusCode::NO_CONTENT
                }
            }),
        );
    let inventory = Arc::new(Scripted::ready());
    let refusing_service = ServiceThread::start(refusing);
    let inventory_service = ServiceThread::serving(&inventory);
    let coordinator = coordinator(Duration::from_millis(500));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &inventory_service.url(), &client);
    let wallet_p = http("wallet", &refusing_service.url(), &client);

    let txn = begin(&coordinator, &[&inventory_p, &wallet_p]);
    assert_eq!(
        prepare_aborts(&coordinator, txn).await,
        AbortReason::Voted {
            participant: "wallet".to_owned(),
            index: 1,
            reason: "insufficient funds".to_owned(),
        }
    );
    let outcome = coordinator.rollback_transaction(txn).await.unwrap();
    assert!(!outcome.has_hazards(), "{outcome:?}");
    assert_eq!(inventory.calls(Op::Rollback, txn), 1);
    assert_eq!(rollbacks.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_on_commit_is_retried_until_it_succeeds() {
    let inventory = Arc::new(Scripted::ready().commit_answers(vec![
        Err(ParticipantError::transient("busy")),
        Err(ParticipantError::transient("still busy")),
    ]));
    let orders = Arc::new(Scripted::ready());
    let services = [&inventory, &orders].map(ServiceThread::serving);
    let coordinator = coordinator(Duration::from_millis(500));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &services[0].url(), &client);
    let orders_p = http("orders", &services[1].url(), &client);

    let txn = begin(&coordinator, &[&inventory_p, &orders_p]);
    prepare(&coordinator, txn).await;
    let outcome = coordinator.commit_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Commit);
    assert!(!outcome.has_hazards(), "{outcome:?}");
    assert_eq!(inventory.calls(Op::Commit, txn), 3);
    assert_eq!(orders.calls(Op::Commit, txn), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_on_commit_is_given_up_at_once_as_a_hazard() {
    let inventory = Arc::new(
        Scripted::ready().commit_answers(vec![Err(ParticipantError::permanent("account closed"))]),
    );
    let orders = Arc::new(Scripted::ready());
    let services = [&inventory, &orders].map(ServiceThread::serving);
    let coordinator = coordinator(Duration::from_millis(500));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &services[0].url(), &client);
    let orders_p = http("orders", &services[1].url(), &client);

    let txn = begin(&coordinator, &[&inventory_p, &orders_p]);
    prepare(&coordinator, txn).await;
    let outcome = coordinator.commit_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Commit);
    let hazard = only_hazard(&outcome);
    assert_eq!(hazard.participant, "inventory");
    assert_eq!(hazard.attempts, 1);
    match &hazard.last_failure {
        CallFailure::Error(e) if e.is_permanent() => {
            assert!(e.message().contains("422"), "{e:?}");
            assert!(e.message().contains("account closed"), "{e:?}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert_eq!(inventory.calls(Op::Commit, txn), 1);
    assert_eq!(orders.calls(Op::Commit, txn), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_on_prepare_fails_the_call_and_aborts() {
    // A port that was just free: nothing listens there.
    let vacant = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let inventory = Arc::new(Scripted::ready());
    let inventory_service = ServiceThread::serving(&inventory);
    let coordinator = coordinator(Duration::from_millis(500));
    let client = HttpParticipant::default_client().unwrap();
    let inventory_p = http("inventory", &inventory_service.url(), &client);
    let gone_p = http("gone", &format!("http://{vacant}/"), &client);

    let txn = begin(&coordinator, &[&inventory_p, &gone_p]);
    match prepare_aborts(&coordinator, txn).await {
        AbortReason::PrepareFailed {
            participant,
            failure,
            ..
        } => {
            assert_eq!(participant, "gone");
            let message = transient_error(&failure).message().to_lowercase();
            assert!(message.contains("connection failed"), "{message}");
        }
        other => panic!("expected PrepareFailed, got {other:?}"),
    }
    let outcome = coordinator.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    assert_eq!(inventory.calls(Op::Rollback, txn), 1);
    // A failed prepare may have left work behind, so the unreachable
    // service is sent rollback too, and given up on.
    let hazard = only_hazard(&outcome);
    assert_eq!(hazard.participant, "gone");
    assert_eq!(hazard.attempts, MAX_ATTEMPTS);
}
