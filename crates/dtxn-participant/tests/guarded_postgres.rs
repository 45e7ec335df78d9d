//! `Guarded` against a real PostgreSQL at `DTXN_TEST_POSTGRES_URL`
//! (`.ci/run` starts one on loopback with `.ci/postgres-up`). Without the
//! variable these tests fail: they are never skipped.

#[macro_use]
mod guarded_suite;

use sqlx::postgres::PgPoolOptions;

async fn fixture() -> (sqlx::PgPool, ()) {
    let url = std::env::var("DTXN_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "DTXN_TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server. \
             Start one with `export DTXN_TEST_POSTGRES_URL=$(.ci/postgres-up)` \
             (as .ci/run does), or point it at your own."
        )
    });
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DTXN_TEST_POSTGRES_URL: {e}"));
    // Tests run in parallel, and concurrent CREATE TABLE IF NOT EXISTS of
    // one table can fail in PostgreSQL: serialise it.
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dtxn_test_guarded_ledger'))")
        .execute(&mut *tx)
        .await
        .expect("lock");
    sqlx::query(guarded_suite::LEDGER_DDL)
        .execute(&mut *tx)
        .await
        .expect("create ledger");
    tx.commit().await.expect("commit");
    (pool, ())
}

guarded_suite!(sqlx::Postgres, fixture);
