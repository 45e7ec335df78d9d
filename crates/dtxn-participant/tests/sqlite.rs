//! The barrier against SQLite: a fresh database file per test.

#[macro_use]
mod common;

mod fixtures;

use sqlx::sqlite::SqlitePoolOptions;

async fn fixture() -> (sqlx::SqlitePool, tempfile::TempDir) {
    fixtures::sqlite(common::LEDGER_DDL).await
}

barrier_suite!(sqlx::Sqlite, fixture);

#[tokio::test]
async fn in_memory_database_works_with_one_connection() {
    // `sqlite::memory:` gives each connection its own database: one
    // connection keeps the table and the rows together.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("open");
    BARRIER.create_table(&pool).await.expect("table");
    let mut tx = pool.begin().await.expect("begin");
    assert_eq!(
        BARRIER
            .enter(&mut tx, "t", "b", Op::Commit)
            .await
            .expect("enter"),
        Decision::Execute
    );
    tx.commit().await.expect("commit");
    let mut tx = pool.begin().await.expect("begin");
    assert_eq!(
        BARRIER
            .enter(&mut tx, "t", "b", Op::Commit)
            .await
            .expect("enter"),
        Decision::Duplicate
    );
}
