//! `Guarded` against a real PostgreSQL at `DTXN_TEST_POSTGRES_URL`
//! (`.ci/run` starts one on loopback with `.ci/postgres-up`). Without the
//! variable these tests fail: they are never skipped.

#[macro_use]
mod guarded_suite;

mod fixtures;

async fn fixture() -> (sqlx::PgPool, ()) {
    fixtures::postgres(guarded_suite::LEDGER_DDL, "dtxn_test_guarded_ledger").await
}

guarded_suite!(sqlx::Postgres, fixture);
