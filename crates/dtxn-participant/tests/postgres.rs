//! The barrier against a real PostgreSQL at `DTXN_TEST_POSTGRES_URL`
//! (`.ci/run` starts one on loopback with `.ci/postgres-up`). Without the
//! variable these tests fail: they are never skipped.

#[macro_use]
mod common;

mod fixtures;

async fn fixture() -> (sqlx::PgPool, ()) {
    fixtures::postgres(common::LEDGER_DDL, "dtxn_test_ledger").await
}

barrier_suite!(sqlx::Postgres, fixture);
