//! Scripted mock participants shared by the integration tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};

/// What a mock does on one call.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer `Ok(())` (phase 2) or `Ready` (prepare).
    Ok,
    /// Vote (prepare only).
    Vote(PreparedResult),
    /// Return an error (phase 2 only).
    Fail(ParticipantError),
    /// Panic.
    Panic,
    /// Never answer.
    Hang,
    /// Wait, then do the inner step.
    After(Duration, Box<Step>),
}

impl Step {
    pub fn after(d: Duration, step: Step) -> Self {
        Step::After(d, Box::new(step))
    }
    pub fn aborted(reason: &str) -> Self {
        Step::Vote(PreparedResult::Aborted(reason.into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prepare,
    Commit,
    Rollback,
}

/// A participant that answers each call from a per-kind script (then a
/// default), and records every call it receives.
pub struct Mock {
    name: String,
    prepare: Mutex<VecDeque<Step>>,
    commit: Mutex<VecDeque<Step>>,
    rollback: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<(Kind, TransactionId)>>,
}

impl Mock {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            prepare: Mutex::default(),
            commit: Mutex::default(),
            rollback: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    pub fn on_prepare(self, step: Step) -> Self {
        self.prepare.lock().unwrap().push_back(step);
        self
    }
    pub fn on_commit(self, step: Step) -> Self {
        self.commit.lock().unwrap().push_back(step);
        self
    }
    pub fn on_rollback(self, step: Step) -> Self {
        self.rollback.lock().unwrap().push_back(step);
        self
    }

    pub fn arc(self) -> Arc<Self> {
        Arc::new(self)
    }

    pub fn calls(&self) -> Vec<Kind> {
        self.calls.lock().unwrap().iter().map(|(k, _)| *k).collect()
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.calls().into_iter().filter(|k| *k == kind).count()
    }

    fn next(&self, kind: Kind, txn: TransactionId) -> Step {
        self.calls.lock().unwrap().push((kind, txn));
        let queue = match kind {
            Kind::Prepare => &self.prepare,
            Kind::Commit => &self.commit,
            Kind::Rollback => &self.rollback,
        };
        queue.lock().unwrap().pop_front().unwrap_or(Step::Ok)
    }
}

async fn run(step: Step) -> Result<PreparedResult, ParticipantError> {
    let mut step = step;
    loop {
        match step {
            Step::Ok => return Ok(PreparedResult::Ready),
            Step::Vote(v) => return Ok(v),
            Step::Fail(e) => return Err(e),
            Step::Panic => panic!("scripted panic"),
            Step::Hang => std::future::pending::<()>().await,
            Step::After(d, inner) => {
                tokio::time::sleep(d).await;
                step = *inner;
            }
        }
    }
}

#[async_trait]
impl Participant for Mock {
    fn name(&self) -> &str {
        &self.name
    }

    fn recovery_key(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        run(self.next(Kind::Prepare, txn))
            .await
            .expect("prepare scripts vote, they do not fail")
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        run(self.next(Kind::Commit, txn)).await.map(drop)
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        run(self.next(Kind::Rollback, txn)).await.map(drop)
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config with short, test-friendly timeouts and a fast retry policy.
pub fn config() -> dtxn::CoordinatorConfigBuilder {
    dtxn::CoordinatorConfig::builder()
        .prepare_timeout(ms(100))
        .phase2_timeout(ms(100))
        .retry(dtxn::RetryPolicy::new(3, ms(10), ms(40)).unwrap())
        .transaction_deadline(Duration::from_secs(10))
        .sweep_interval(ms(50))
}

pub fn coordinator() -> dtxn::TransactionCoordinator {
    dtxn::TransactionCoordinator::with_config(config().build().unwrap())
}

/// Begins a transaction with the given participants registered.
pub fn begin_with(
    c: &dtxn::TransactionCoordinator,
    participants: impl IntoIterator<Item = Arc<Mock>>,
) -> TransactionId {
    let txn = c.begin_transaction().unwrap();
    for p in participants {
        c.register_participant(txn, p as Arc<dyn Participant>)
            .unwrap();
    }
    txn
}

/// A coordinator on the log `open(false)` opens crashes during phase 2
/// (its runtime is dropped while `b`'s commit hangs, after `a`
/// acknowledged); a new one on the log `open(true)` opens again must
/// deliver the decision once more and answer `committed`.
pub fn crash_during_phase_2_is_recovered<F, Fut>(open: F)
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn dtxn::log::DecisionLog>>,
{
    use dtxn::log::ParticipantRegistry;
    use dtxn::{OutcomeStatus, TransactionCoordinator};

    let a = Mock::new("a").arc();
    let b = Mock::new("b").on_commit(Step::Hang).arc();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let txn = first.block_on(async {
        let (c, _) = TransactionCoordinator::recover(
            config().build().unwrap(),
            open(false).await,
            &ParticipantRegistry::new(),
        )
        .await
        .unwrap();
        let txn = c.begin_transaction().unwrap();
        for p in [&a, &b] {
            c.register_participant(txn, p.clone() as Arc<dyn Participant>)
                .unwrap();
        }
        c.prepare_transaction(txn).await.unwrap();
        tokio::spawn({
            let c = c.clone();
            async move { c.commit_transaction(txn).await }
        });
        while a.count(Kind::Commit) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        txn
    });
    // The crash: every task of the first coordinator (and its log's
    // writer) stops where it is.
    drop(first);
    assert_eq!(b.count(Kind::Commit), 1);

    runtime().block_on(async {
        let mut registry = ParticipantRegistry::new();
        registry.insert(a.clone()).unwrap();
        registry.insert(b.clone()).unwrap();
        let (c, recovery) =
            TransactionCoordinator::recover(config().build().unwrap(), open(true).await, &registry)
                .await
                .unwrap();
        assert_eq!(recovery.redelivering, [txn]);
        let outcome = c.commit_transaction(txn).await.unwrap();
        assert!(outcome.is_committed() && outcome.hazards.is_empty());
        assert_eq!(b.count(Kind::Commit), 2);
        assert_eq!(c.outcome(txn), OutcomeStatus::Committed);
    });
}
