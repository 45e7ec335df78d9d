//! `Guarded`'s behaviour, written once and instantiated per backend by
//! `guarded_suite!` (tests/guarded.rs, tests/guarded_postgres.rs).
//!
//! The test branch `Orders` appends a row (gid, branch, op, item) to the
//! table `guarded_ledger` each time one of its methods runs, in the
//! guarded transaction, and counts its invocations; so counting rows counts
//! the executions that committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dtxn::TransactionId;

/// The business table; each fixture creates it.
pub const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS guarded_ledger (\
     gid VARCHAR(128) NOT NULL, branch VARCHAR(128) NOT NULL, \
     op VARCHAR(8) NOT NULL, item VARCHAR(64) NOT NULL)";

/// A transaction id no other test (or earlier run against the same
/// database) uses.
pub fn fresh_txn() -> TransactionId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let low = (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed);
    TransactionId::from_u128((u128::from(nanos) << 64) | u128::from(low))
}

macro_rules! guarded_suite {
    ($db:ty, $fixture:path) => {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        use std::sync::Arc;
        use std::time::Duration;

        use dtxn::{
            async_trait, CallContext, CoordinatorConfig, Participant, ParticipantError, Phase,
            PreparedResult, RetryPolicy, TransactionCoordinator, TransactionId,
        };
        use dtxn_participant::{Branch, Guarded, SUSPENDED_REASON};
        use $crate::guarded_suite::fresh_txn;

        type Pool = sqlx::Pool<$db>;
        type Tx = sqlx::Transaction<'static, $db>;

        /// The payload that makes `Orders::prepare` vote no (after writing).
        const REFUSE: &str = "refuse";

        /// The business side under test.
        #[derive(Default)]
        struct Orders {
            /// How many of the next commits fail (after writing).
            fail_commits: AtomicU32,
            prepares: AtomicU32,
            commits: AtomicU32,
            rollbacks: AtomicU32,
        }

        impl Orders {
            fn calls(&self) -> (u32, u32, u32) {
                (self.prepares.load(SeqCst), self.commits.load(SeqCst), self.rollbacks.load(SeqCst))
            }
        }

        fn db_error(e: sqlx::Error) -> ParticipantError {
            ParticipantError::transient(format!("orders database: {e}"))
        }

        async fn append(tx: &mut Tx, cx: &CallContext, op: &str) -> Result<(), ParticipantError> {
            let item = cx.payload().and_then(|p| p.as_str()).unwrap_or("none");
            // Test-only values (no quotes in them), so plain text is fine.
            let sql = format!(
                "INSERT INTO guarded_ledger (gid, branch, op, item) VALUES ('{}', 'orders', '{op}', '{item}')",
                cx.transaction_id()
            );
            sqlx::query(&sql).execute(&mut **tx).await.map_err(db_error)?;
            Ok(())
        }

        #[async_trait]
        impl Branch<$db> for Orders {
            fn name(&self) -> &str {
                "orders"
            }
            async fn prepare(&self, tx: &mut Tx, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
                self.prepares.fetch_add(1, SeqCst);
                append(tx, cx, "prepare").await?;
                if cx.payload().and_then(|p| p.as_str()) == Some(REFUSE) {
                    return Ok(PreparedResult::Aborted("refused".into()));
                }
                Ok(PreparedResult::Ready)
            }
            async fn commit(&self, tx: &mut Tx, cx: &CallContext) -> Result<(), ParticipantError> {
                self.commits.fetch_add(1, SeqCst);
                append(tx, cx, "commit").await?;
                if self.fail_commits.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                    return Err(ParticipantError::transient("injected commit failure"));
                }
                Ok(())
            }
            async fn rollback(&self, tx: &mut Tx, cx: &CallContext) -> Result<(), ParticipantError> {
                self.rollbacks.fetch_add(1, SeqCst);
                append(tx, cx, "rollback").await
            }
        }

        /// A participant that always votes no.
        struct Refuser;

        #[async_trait]
        impl Participant for Refuser {
            fn name(&self) -> &str {
                "refuser"
            }
            async fn prepare(&self, _: TransactionId) -> PreparedResult {
                PreparedResult::Aborted("no".into())
            }
            async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
                Ok(())
            }
            async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
                Ok(())
            }
        }

        async fn setup() -> (Arc<Guarded<$db, Orders>>, Pool, impl Sized) {
            let (pool, guard) = $fixture().await;
            let guarded = Guarded::with_table(pool.clone(), Orders::default()).await.expect("barrier table");
            (Arc::new(guarded), pool, guard)
        }

        /// Phase-2 retries without real waiting to speak of.
        fn coordinator() -> TransactionCoordinator {
            let retry = RetryPolicy::new(5, Duration::from_millis(1), Duration::from_millis(1)).expect("policy");
            TransactionCoordinator::with_config(CoordinatorConfig::builder().retry(retry).build().expect("config"))
        }

        fn cx(txn: TransactionId, phase: Phase, payload: &str) -> CallContext {
            CallContext::new(txn, phase).with_payload(Some(payload.into()))
        }

        /// How many `op` rows the branch committed for `txn`.
        async fn ledger(pool: &Pool, txn: TransactionId, op: &str) -> i64 {
            let sql = format!("SELECT COUNT(*) FROM guarded_ledger WHERE gid = '{txn}' AND op = '{op}'");
            let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.expect("count ledger");
            n
        }

        async fn ledger_items(pool: &Pool, txn: TransactionId) -> Vec<String> {
            let sql = format!("SELECT item FROM guarded_ledger WHERE gid = '{txn}'");
            let rows: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(pool).await.expect("items");
            rows.into_iter().map(|(item,)| item).collect()
        }

        /// The barrier's rows for `txn`, as `op:reason`, sorted.
        async fn barrier(pool: &Pool, txn: TransactionId) -> Vec<String> {
            let sql = format!("SELECT op, reason FROM dtxn_barrier WHERE gid = '{txn}' AND branch = 'orders' ORDER BY op");
            let rows: Vec<(String, String)> = sqlx::query_as(&sql).fetch_all(pool).await.expect("barrier rows");
            rows.into_iter().map(|(op, reason)| format!("{op}:{reason}")).collect()
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn coordinator_commit_reaches_branch_with_payload_and_duplicate_commit_writes_once() {
            let (guarded, pool, _guard) = setup().await;
            assert_eq!(guarded.name(), "orders");
            let coordinator = coordinator();
            let txn = coordinator.begin_transaction().expect("begin");
            coordinator.register_participant_with_payload(txn, guarded.clone(), "book").expect("register");
            assert!(coordinator.prepare_transaction(txn).await.expect("prepare").is_prepared());
            let outcome = coordinator.commit_transaction(txn).await.expect("commit");
            assert!(outcome.is_committed() && !outcome.has_hazards(), "{outcome:?}");
            assert_eq!(ledger_items(&pool, txn).await, ["book", "book"]);

            // The commit is delivered again (a lost acknowledgement).
            guarded.commit_with(&cx(txn, Phase::Commit, "book").with_attempt(2)).await.expect("duplicate commit");
            guarded.commit(txn).await.expect("duplicate commit without context");
            assert_eq!(ledger(&pool, txn, "commit").await, 1);
            assert_eq!(ledger(&pool, txn, "prepare").await, 1);
            assert_eq!(guarded.branch().calls(), (1, 1, 0));
            assert_eq!(barrier(&pool, txn).await, ["commit:commit", "prepare:prepare"]);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_prepare_votes_ready_without_executing_again() {
            let (guarded, pool, _guard) = setup().await;
            let txn = fresh_txn();
            for _ in 0..3 {
                let vote = guarded.prepare_with(&cx(txn, Phase::Prepare, "pen")).await.expect("prepare");
                assert_eq!(vote, PreparedResult::Ready);
            }
            assert_eq!(guarded.try_prepare(txn).await, Ok(PreparedResult::Ready));
            assert_eq!(ledger(&pool, txn, "prepare").await, 1);
            assert_eq!(guarded.branch().calls(), (1, 0, 0));
            // Then rolled back: the rollback runs once.
            guarded.rollback_with(&cx(txn, Phase::Rollback, "pen")).await.expect("rollback");
            guarded.rollback(txn).await.expect("duplicate rollback");
            assert_eq!(ledger(&pool, txn, "rollback").await, 1);
            assert_eq!(guarded.branch().calls(), (1, 0, 1));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rollback_before_prepare_is_empty_and_the_late_prepare_votes_aborted() {
            let (guarded, pool, _guard) = setup().await;
            let txn = fresh_txn();
            guarded.rollback_with(&cx(txn, Phase::Rollback, "pen")).await.expect("empty rollback");
            guarded.rollback_with(&cx(txn, Phase::Rollback, "pen")).await.expect("duplicate empty rollback");
            assert_eq!(barrier(&pool, txn).await, ["prepare:rollback", "rollback:rollback"]);
            for _ in 0..2 {
                let vote = guarded.prepare_with(&cx(txn, Phase::Prepare, "pen")).await.expect("late prepare");
                assert_eq!(vote, PreparedResult::Aborted(SUSPENDED_REASON.into()));
            }
            assert_eq!(guarded.prepare(txn).await, PreparedResult::Aborted(SUSPENDED_REASON.into()));
            assert_eq!(ledger_items(&pool, txn).await, Vec::<String>::new());
            assert_eq!(guarded.branch().calls(), (0, 0, 0));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn aborted_vote_keeps_no_rows_and_a_retried_prepare_executes() {
            let (guarded, pool, _guard) = setup().await;
            // Through the coordinator: the no vote aborts, and no rollback
            // is sent to the voter.
            let coordinator = coordinator();
            let txn = coordinator.begin_transaction().expect("begin");
            coordinator.register_participant_with_payload(txn, guarded.clone(), REFUSE).expect("register");
            assert!(!coordinator.prepare_transaction(txn).await.expect("prepare").is_prepared());
            let outcome = coordinator.rollback_transaction(txn).await.expect("outcome");
            assert!(!outcome.is_committed());
            assert_eq!(guarded.branch().calls(), (1, 0, 0));
            assert_eq!(barrier(&pool, txn).await, Vec::<String>::new());
            assert_eq!(ledger_items(&pool, txn).await, Vec::<String>::new());

            // Directly: the same id, retried, executes and votes again.
            let vote = guarded.prepare_with(&cx(txn, Phase::Prepare, REFUSE)).await.expect("prepare");
            assert_eq!(vote, PreparedResult::Aborted("refused".into()));
            assert_eq!(barrier(&pool, txn).await, Vec::<String>::new());
            let vote = guarded.prepare_with(&cx(txn, Phase::Prepare, "pen")).await.expect("retry");
            assert_eq!(vote, PreparedResult::Ready);
            assert_eq!(ledger_items(&pool, txn).await, ["pen"]);
            assert_eq!(barrier(&pool, txn).await, ["prepare:prepare"]);
            assert_eq!(guarded.branch().calls(), (3, 0, 0));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn abort_decision_rolls_back_the_prepared_branch_once() {
            let (guarded, pool, _guard) = setup().await;
            let coordinator = coordinator();
            let txn = coordinator.begin_transaction().expect("begin");
            coordinator.register_participant_with_payload(txn, guarded.clone(), "cup").expect("register");
            coordinator.register_participant(txn, Arc::new(Refuser)).expect("register");
            assert!(!coordinator.prepare_transaction(txn).await.expect("prepare").is_prepared());
            let outcome = coordinator.rollback_transaction(txn).await.expect("rollback");
            assert!(!outcome.is_committed() && !outcome.has_hazards(), "{outcome:?}");
            // Registered first, the branch's prepare is started before the
            // refusal is seen; the coordinator waits for it to end before
            // sending its rollback: both ran, once each.
            let (prepares, commits, rollbacks) = guarded.branch().calls();
            assert_eq!((prepares, commits, rollbacks), (1, 0, 1));
            assert_eq!(ledger(&pool, txn, "prepare").await, i64::from(prepares));
            assert_eq!(ledger(&pool, txn, "rollback").await, i64::from(rollbacks));
            // A redelivered rollback changes nothing.
            guarded.rollback_with(&cx(txn, Phase::Rollback, "cup").with_attempt(2)).await.expect("rollback");
            assert_eq!(ledger(&pool, txn, "rollback").await, i64::from(rollbacks));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn failed_branch_commit_keeps_nothing_and_the_retry_executes_once() {
            let (guarded, pool, _guard) = setup().await;
            let txn = fresh_txn();
            let vote = guarded.prepare_with(&cx(txn, Phase::Prepare, "mug")).await.expect("prepare");
            assert_eq!(vote, PreparedResult::Ready);
            guarded.branch().fail_commits.store(1, SeqCst);
            let err = guarded.commit_with(&cx(txn, Phase::Commit, "mug")).await.expect_err("injected");
            assert_eq!(err, ParticipantError::transient("injected commit failure"));
            // Atomic: neither the barrier row nor the business write.
            assert_eq!(barrier(&pool, txn).await, ["prepare:prepare"]);
            assert_eq!(ledger(&pool, txn, "commit").await, 0);
            for attempt in 2..4 {
                guarded.commit_with(&cx(txn, Phase::Commit, "mug").with_attempt(attempt)).await.expect("retry");
            }
            assert_eq!(ledger(&pool, txn, "commit").await, 1);
            assert_eq!(barrier(&pool, txn).await, ["commit:commit", "prepare:prepare"]);
            assert_eq!(guarded.branch().calls(), (1, 2, 0));

            // Through the coordinator, which retries the failed commit.
            let coordinator = coordinator();
            let txn = coordinator.begin_transaction().expect("begin");
            coordinator.register_participant_with_payload(txn, guarded.clone(), "mug").expect("register");
            assert!(coordinator.prepare_transaction(txn).await.expect("prepare").is_prepared());
            guarded.branch().fail_commits.store(2, SeqCst);
            let outcome = coordinator.commit_transaction(txn).await.expect("commit");
            assert!(outcome.is_committed() && !outcome.has_hazards(), "{outcome:?}");
            assert_eq!(ledger(&pool, txn, "commit").await, 1);
            assert_eq!(guarded.branch().calls(), (2, 5, 0));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn closed_pool_is_a_transient_error_naming_the_step() {
            let (guarded, pool, _guard) = setup().await;
            let txn = fresh_txn();
            pool.close().await;
            let err = guarded.prepare_with(&cx(txn, Phase::Prepare, "pen")).await.expect_err("closed");
            assert!(!err.is_permanent(), "{err}");
            assert!(err.message().starts_with("prepare: database error during begin"), "{err}");
            assert!(!err.message().contains("pen"), "no payload in errors: {err}");
            for (phase, err) in [
                ("commit", guarded.commit_with(&cx(txn, Phase::Commit, "pen")).await),
                ("rollback", guarded.rollback_with(&cx(txn, Phase::Rollback, "pen")).await),
            ] {
                let err = err.expect_err("closed");
                assert!(!err.is_permanent(), "{err}");
                assert!(err.message().starts_with(&format!("{phase}: database error during begin")), "{err}");
            }
            // Through the coordinator: the failed prepare aborts.
            let coordinator = coordinator();
            let txn = coordinator.begin_transaction().expect("begin");
            coordinator.register_participant_with_payload(txn, guarded.clone(), "pen").expect("register");
            assert!(!coordinator.prepare_transaction(txn).await.expect("prepare").is_prepared());
            assert_eq!(guarded.branch().calls(), (0, 0, 0));
        }
    };
}
