//! `Guarded` on SQLite: a fresh database file per test, driven directly
//! and through a `dtxn::TransactionCoordinator`.

#[macro_use]
mod guarded_suite;

mod fixtures;

use sqlx::sqlite::SqlitePoolOptions;

async fn fixture() -> (sqlx::SqlitePool, tempfile::TempDir) {
    fixtures::sqlite(guarded_suite::LEDGER_DDL).await
}

guarded_suite!(sqlx::Sqlite, fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_business_table_fails_the_call_and_keeps_no_barrier_row() {
    let (guarded, pool, _guard) = setup().await;
    sqlx::query("DROP TABLE guarded_ledger")
        .execute(&pool)
        .await
        .expect("drop");
    let txn = fresh_txn();
    let err = guarded
        .prepare_with(&cx(txn, Phase::Prepare, "pen"))
        .await
        .expect_err("no table");
    assert!(!err.is_permanent(), "{err}");
    assert!(err.message().contains("no such table"), "{err}");
    assert_eq!(barrier(&pool, txn).await, Vec::<String>::new());
    // The coordinator then sends rollback: an empty rollback.
    guarded
        .rollback_with(&cx(txn, Phase::Rollback, "pen"))
        .await
        .expect("empty rollback");
    assert_eq!(
        barrier(&pool, txn).await,
        ["prepare:rollback", "rollback:rollback"]
    );
    assert_eq!(guarded.branch().calls(), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_barrier_table_is_a_transient_barrier_error() {
    let (guarded, pool, _guard) = setup().await;
    sqlx::query("DROP TABLE dtxn_barrier")
        .execute(&pool)
        .await
        .expect("drop");
    let txn = fresh_txn();
    let err = guarded
        .commit_with(&cx(txn, Phase::Commit, "pen"))
        .await
        .expect_err("no table");
    assert!(!err.is_permanent(), "{err}");
    assert!(
        err.message()
            .starts_with("commit: barrier: barrier database error during insert"),
        "{err}"
    );
    assert_eq!(guarded.branch().calls(), (0, 0, 0));
    assert_eq!(ledger(&pool, txn, "commit").await, 0);
}

#[tokio::test]
async fn in_memory_database_with_one_connection() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("open");
    sqlx::query(guarded_suite::LEDGER_DDL)
        .execute(&pool)
        .await
        .expect("ledger");
    let guarded = Guarded::with_table(pool.clone(), Orders::default())
        .await
        .expect("barrier table");
    let txn = fresh_txn();
    for _ in 0..2 {
        assert_eq!(
            guarded
                .prepare_with(&cx(txn, Phase::Prepare, "pen"))
                .await
                .expect("prepare"),
            PreparedResult::Ready
        );
        guarded
            .commit_with(&cx(txn, Phase::Commit, "pen"))
            .await
            .expect("commit");
    }
    assert_eq!(ledger_items(&pool, txn).await, ["pen", "pen"]);
    assert_eq!(guarded.branch().calls(), (1, 1, 0));
}
