//! The brief's load shape: 1000 concurrent transactions × 100 participants,
//! some aborting, all ending consistent, with nothing left in the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dtxn::{
    async_trait, CoordinatorConfig, Decision, Participant, ParticipantError, PreparedResult,
    TransactionCoordinator, TransactionId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Prepare,
    Commit,
    Rollback,
}

/// Votes no in the transactions whose sequence is a multiple of 7 (when it
/// is the "refuser"), yields to the scheduler to interleave, and logs every
/// call per transaction.
struct Recorder {
    refuser: bool,
    log: Mutex<HashMap<TransactionId, Vec<Got>>>,
}

impl Recorder {
    fn record(&self, txn: TransactionId, got: Got) {
        self.log.lock().unwrap().entry(txn).or_default().push(got);
    }
}

#[async_trait]
impl Participant for Recorder {
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.record(txn, Got::Prepare);
        tokio::task::yield_now().await;
        if self.refuser && txn.as_u128().is_multiple_of(7) {
            PreparedResult::Aborted("refused".into())
        } else {
            PreparedResult::Ready
        }
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record(txn, Got::Commit);
        Ok(())
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record(txn, Got::Rollback);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_transactions_of_hundred_participants_all_end_consistent() {
    const TXNS: usize = 1000;
    const PARTICIPANTS: usize = 100;
    let c = TransactionCoordinator::with_config(
        CoordinatorConfig::builder()
            .retention_count(TXNS)
            .build()
            .unwrap(),
    );
    let participants: Vec<Arc<Recorder>> = (0..PARTICIPANTS)
        .map(|i| {
            Arc::new(Recorder {
                refuser: i == PARTICIPANTS / 2,
                log: Mutex::default(),
            })
        })
        .collect();
    // Begin all first so that all 1000 are in flight at once.
    let ids: Vec<_> = (0..TXNS).map(|_| c.begin_transaction().unwrap()).collect();
    assert!(
        c.begin_transaction().is_err(),
        "the 1001st exceeds the default capacity"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for &txn in &ids {
        let c = c.clone();
        let participants = participants.clone();
        tasks.spawn(async move {
            for p in participants {
                c.register_participant(txn, p).unwrap();
            }
            let decision = if c.prepare_transaction(txn).await.unwrap().is_prepared() {
                c.commit_transaction(txn).await.unwrap().decision
            } else {
                c.rollback_transaction(txn).await.unwrap().decision
            };
            (txn, decision)
        });
    }
    let mut decisions = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (txn, decision) = done.unwrap();
        decisions.insert(txn, decision);
    }
    assert_eq!(decisions.len(), TXNS);
    let aborted = decisions
        .values()
        .filter(|d| **d == Decision::Abort)
        .count();
    assert!(
        aborted > 0 && aborted < TXNS,
        "a mix of outcomes: {aborted} aborted"
    );

    for (txn, decision) in &decisions {
        let refused = txn.as_u128() % 7 == 0;
        assert_eq!(*decision == Decision::Abort, refused, "{txn}");
        for p in &participants {
            let log = p.log.lock().unwrap();
            let calls = log.get(txn).map(Vec::as_slice).unwrap_or_default();
            let commits = calls.iter().filter(|g| **g == Got::Commit).count();
            let rollbacks = calls.iter().filter(|g| **g == Got::Rollback).count();
            assert!(calls.iter().filter(|g| **g == Got::Prepare).count() <= 1);
            match decision {
                Decision::Commit => assert_eq!((commits, rollbacks), (1, 0), "{txn}"),
                Decision::Abort => {
                    assert_eq!(commits, 0, "{txn}");
                    // The refuser undid its own work; everyone else that may
                    // hold work is rolled back exactly once.
                    let expected = usize::from(!(p.refuser && refused));
                    assert_eq!(rollbacks, expected, "{txn}");
                }
            }
        }
    }
    assert_eq!(c.stats().unfinished, 0, "no transaction left unfinished");
    assert!(c.begin_transaction().is_ok(), "capacity is free again");
}
