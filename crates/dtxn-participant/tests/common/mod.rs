//! The barrier's behaviour, written once and instantiated per backend by
//! `barrier_suite!` (tests/sqlite.rs, tests/postgres.rs).
//!
//! The "business" is a `ledger` table: every executed operation appends a
//! row (gid, branch, op), so counting rows counts executions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The business table; each fixture creates it.
pub const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS ledger (gid VARCHAR(128) NOT NULL, \
     branch VARCHAR(128) NOT NULL, op VARCHAR(8) NOT NULL)";

/// A transaction id no other test (or earlier run against the same
/// database) uses.
pub fn unique_txn(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

macro_rules! barrier_suite {
    ($db:ty, $fixture:path) => {
        use dtxn_participant::{Barrier, BarrierError, Decision, Op, Outcome, RunError};
        use $crate::common::unique_txn;

        type Pool = sqlx::Pool<$db>;
        const BARRIER: Barrier<$db> = Barrier::new();

        /// One participant call: begin, enter the barrier, append to the
        /// ledger only on Execute, commit.
        async fn call(pool: &Pool, txn: &str, branch: &str, op: Op) -> Decision {
            let mut tx = pool.begin().await.expect("begin");
            let decision = BARRIER.enter(&mut tx, txn, branch, op).await.expect("enter");
            if decision == Decision::Execute {
                append(&mut tx, txn, branch, op).await;
            }
            tx.commit().await.expect("commit");
            decision
        }

        async fn append(tx: &mut sqlx::Transaction<'static, $db>, txn: &str, branch: &str, op: Op) {
            // Test-only values (no quotes in them), so plain text is fine.
            let sql = format!("INSERT INTO ledger (gid, branch, op) VALUES ('{txn}', '{branch}', '{op}')");
            sqlx::query(&sql).execute(&mut **tx).await.expect("business write");
        }

        /// How many times `op` ran for (txn, branch).
        async fn executed(pool: &Pool, txn: &str, branch: &str, op: Op) -> i64 {
            let sql = format!(
                "SELECT COUNT(*) FROM ledger WHERE gid = '{txn}' AND branch = '{branch}' AND op = '{op}'"
            );
            let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.expect("count");
            n
        }

        async fn barrier_rows(pool: &Pool, txn: &str) -> i64 {
            let sql = format!("SELECT COUNT(*) FROM dtxn_barrier WHERE gid = '{txn}'");
            let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(pool).await.expect("count");
            n
        }

        async fn pool() -> (Pool, impl Sized) {
            let (pool, guard) = $fixture().await;
            BARRIER.create_table(&pool).await.expect("create barrier table");
            // Idempotent: a service may call it on every start.
            BARRIER.create_table(&pool).await.expect("create barrier table again");
            (pool, guard)
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_prepare_is_skipped() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("dup-prepare");
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Execute);
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Duplicate);
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Duplicate);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_commit_is_skipped() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("dup-commit");
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Execute);
            assert_eq!(call(&pool, &txn, "inventory", Op::Commit).await, Decision::Execute);
            assert_eq!(call(&pool, &txn, "inventory", Op::Commit).await, Decision::Duplicate);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Commit).await, 1);
            // A prepare retried after the commit is a duplicate too.
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Duplicate);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_rollback_is_skipped() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("dup-rollback");
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Execute);
            assert_eq!(call(&pool, &txn, "inventory", Op::Rollback).await, Decision::Execute);
            assert_eq!(call(&pool, &txn, "inventory", Op::Rollback).await, Decision::Duplicate);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Rollback).await, 1);
            // The prepare really ran, so its retry is a duplicate, not suspended.
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Duplicate);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rollback_before_prepare_is_an_empty_rollback() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("empty-rollback");
            assert_eq!(call(&pool, &txn, "inventory", Op::Rollback).await, Decision::EmptyRollback);
            assert_eq!(call(&pool, &txn, "inventory", Op::Rollback).await, Decision::Duplicate);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Rollback).await, 0);
            // Recorded: the prepare row (reason rollback) and the rollback row.
            assert_eq!(barrier_rows(&pool, &txn).await, 2);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn prepare_after_rollback_is_suspended() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("suspended");
            assert_eq!(call(&pool, &txn, "inventory", Op::Rollback).await, Decision::EmptyRollback);
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Suspended);
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Suspended);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 0);
            // Another branch of the same transaction is not affected.
            assert_eq!(call(&pool, &txn, "payments", Op::Prepare).await, Decision::Execute);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn branches_and_transactions_are_independent() {
            let (pool, _guard) = pool().await;
            let (a, b) = (unique_txn("indep-a"), unique_txn("indep-b"));
            for txn in [&a, &b] {
                for branch in ["inventory", "payments"] {
                    assert_eq!(call(&pool, txn, branch, Op::Prepare).await, Decision::Execute);
                    assert_eq!(call(&pool, txn, branch, Op::Commit).await, Decision::Execute);
                }
            }
            assert_eq!(barrier_rows(&pool, &a).await, 4);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_duplicates_execute_exactly_once() {
            let (pool, _guard) = pool().await;
            for op in [Op::Prepare, Op::Commit] {
                let txn = unique_txn("concurrent");
                if op == Op::Commit {
                    call(&pool, &txn, "inventory", Op::Prepare).await;
                }
                let calls: Vec<_> = (0..16)
                    .map(|_| {
                        let (pool, txn) = (pool.clone(), txn.clone());
                        tokio::spawn(async move { call(&pool, &txn, "inventory", op).await })
                    })
                    .collect();
                let mut decisions = Vec::new();
                for c in calls {
                    decisions.push(c.await.expect("call task"));
                }
                let runs = decisions.iter().filter(|d| **d == Decision::Execute).count();
                assert_eq!(runs, 1, "{op}: {decisions:?}");
                assert!(decisions
                    .iter()
                    .all(|d| matches!(d, Decision::Execute | Decision::Duplicate)));
                assert_eq!(executed(&pool, &txn, "inventory", op).await, 1);
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn racing_prepare_and_rollback_agree() {
            let (pool, _guard) = pool().await;
            for round in 0..8 {
                let txn = unique_txn(&format!("race{round}"));
                let (p, r) = {
                    let (pool1, txn1) = (pool.clone(), txn.clone());
                    let (pool2, txn2) = (pool.clone(), txn.clone());
                    tokio::join!(
                        tokio::spawn(async move { call(&pool1, &txn1, "inventory", Op::Prepare).await }),
                        tokio::spawn(async move { call(&pool2, &txn2, "inventory", Op::Rollback).await }),
                    )
                };
                let (p, r) = (p.expect("prepare task"), r.expect("rollback task"));
                // Either the prepare ran and the rollback undid it, or the
                // rollback came first and the prepare was refused.
                assert!(
                    matches!(
                        (p, r),
                        (Decision::Execute, Decision::Execute)
                            | (Decision::Suspended, Decision::EmptyRollback)
                    ),
                    "prepare {p:?}, rollback {r:?}"
                );
                let prepared = executed(&pool, &txn, "inventory", Op::Prepare).await;
                let undone = executed(&pool, &txn, "inventory", Op::Rollback).await;
                assert_eq!(prepared, undone, "every executed prepare is rolled back");
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn crash_between_business_write_and_commit_leaves_nothing() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("crash");
            for crash in ["rollback", "drop"] {
                let mut tx = pool.begin().await.expect("begin");
                let decision = BARRIER.enter(&mut tx, &txn, "inventory", Op::Prepare).await.expect("enter");
                assert_eq!(decision, Decision::Execute);
                append(&mut tx, &txn, "inventory", Op::Prepare).await;
                // The process dies before COMMIT.
                match crash {
                    "rollback" => tx.rollback().await.expect("rollback"),
                    _ => drop(tx),
                }
                assert_eq!(barrier_rows(&pool, &txn).await, 0, "{crash}: barrier row survived");
                assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 0, "{crash}: business write survived");
            }
            // The coordinator's retry executes.
            assert_eq!(call(&pool, &txn, "inventory", Op::Prepare).await, Decision::Execute);
            assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 1);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn run_executes_once_and_rolls_back_business_failures() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("run");
            let failed = BARRIER
                .run(&pool, &txn, "inventory", Op::Prepare, async |tx| {
                    append(tx, &txn, "inventory", Op::Prepare).await;
                    Err::<(), _>("out of stock")
                })
                .await;
            assert!(matches!(failed, Err(RunError::Business("out of stock"))), "{failed:?}");
            assert_eq!(barrier_rows(&pool, &txn).await, 0, "a failed business op leaves no barrier row");
            assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 0);

            for expected in [Outcome::Executed(7), Outcome::Skipped(Decision::Duplicate)] {
                let outcome = BARRIER
                    .run(&pool, &txn, "inventory", Op::Prepare, async |tx| {
                        append(tx, &txn, "inventory", Op::Prepare).await;
                        Ok::<_, std::convert::Infallible>(7)
                    })
                    .await
                    .expect("run");
                assert_eq!(outcome, expected);
            }
            assert_eq!(executed(&pool, &txn, "inventory", Op::Prepare).await, 1);

            // A skipped empty rollback is still committed, so the late
            // prepare is refused.
            let other = unique_txn("run-empty");
            let outcome = BARRIER
                .run(&pool, &other, "inventory", Op::Rollback, async |_tx| Ok::<_, std::convert::Infallible>(()))
                .await
                .expect("run");
            assert_eq!(outcome, Outcome::Skipped(Decision::EmptyRollback));
            assert_eq!(call(&pool, &other, "inventory", Op::Prepare).await, Decision::Suspended);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unknown_reason_on_a_prepare_row_is_an_error() {
            let (pool, _guard) = pool().await;
            let txn = unique_txn("corrupt");
            let sql = format!(
                "INSERT INTO dtxn_barrier (gid, branch, op, reason) VALUES ('{txn}', 'inventory', 'prepare', 'manual')"
            );
            sqlx::query(&sql).execute(&pool).await.expect("plant row");
            let mut tx = pool.begin().await.expect("begin");
            let err = BARRIER.enter(&mut tx, &txn, "inventory", Op::Prepare).await.expect_err("corrupt");
            assert!(
                matches!(&err, BarrierError::CorruptRow { reason, branch, .. } if reason == "manual" && branch == "inventory"),
                "{err}"
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn empty_or_oversized_keys_are_refused() {
            let (pool, _guard) = pool().await;
            let mut tx = pool.begin().await.expect("begin");
            let long = "x".repeat(dtxn_participant::MAX_KEY_LEN + 1);
            let fits = "x".repeat(dtxn_participant::MAX_KEY_LEN);
            for (txn, branch, field) in [("", "b", "transaction id"), (&long[..], "b", "transaction id"), ("t", "", "branch"), ("t", &long[..], "branch")] {
                let err = BARRIER.enter(&mut tx, txn, branch, Op::Prepare).await.expect_err("refused");
                assert!(matches!(err, BarrierError::InvalidKey { field: f, .. } if f == field), "{err}");
            }
            let txn = unique_txn("long");
            let decision = BARRIER.enter(&mut tx, &txn, &fits, Op::Prepare).await.expect("max length fits");
            assert_eq!(decision, Decision::Execute);
        }
    };
}
