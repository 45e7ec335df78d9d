//! The PostgreSQL decision log against a real server: the one at
//! `DTXN_TEST_POSTGRES_URL` (`.ci/run` starts one on loopback with
//! `.ci/postgres-up`), with the feature `postgres-tests`
//! (`cargo test -p dtxn --features postgres-tests`). Without the server they
//! fail: they are never skipped.
//! Each test works in a schema of its own.

#![cfg(feature = "postgres-tests")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use dtxn::log::{CommitRecord, DecisionLog, LogError, LoggedParticipant, PostgresLog};
use dtxn::{Payload, TransactionId};

fn url() -> String {
    std::env::var("DTXN_TEST_POSTGRES_URL")
        .expect("DTXN_TEST_POSTGRES_URL must name a PostgreSQL server (see .ci/postgres-up)")
}

/// A schema no other test (or earlier run) uses.
fn schema() -> String {
    format!("dtxn_test_{:016x}", fastrand::u64(..))
}

fn record(n: u128) -> CommitRecord {
    CommitRecord {
        txn: TransactionId::from_u128(n),
        participants: vec![
            LoggedParticipant {
                key: "users".into(),
                payload: Some(Payload::from(r#"{"name":"ada"}"#)),
            },
            LoggedParticipant {
                key: "http://inventory.local/dtxn".into(),
                payload: None,
            },
        ],
    }
}

/// Opens the log once its previous holder's connection is gone.
async fn reopen(schema: &str) -> PostgresLog {
    for _ in 0..400 {
        match PostgresLog::open_in_schema(&url(), schema).await {
            Ok(log) => return log,
            Err(LogError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the log was never released");
}

#[tokio::test]
async fn decisions_incarnations_and_ends_survive_reopening() {
    let schema = schema();
    {
        let log = PostgresLog::open_in_schema(&url(), &schema).await.unwrap();
        let contents = log.open(7).await.unwrap();
        assert!(contents.in_doubt.is_empty());
        assert_eq!(contents.incarnations, [7]);
        log.log_commit(record(1)).await.unwrap();
        log.log_commit(record(2)).await.unwrap();
        log.log_commit(record(2)).await.unwrap(); // again: harmless
        log.log_end(TransactionId::from_u128(1));
        log.log_commit(record(3)).await.unwrap(); // carries the end with it
    }
    let log = reopen(&schema).await;
    let contents = log.open(u64::MAX).await.unwrap();
    assert_eq!(contents.in_doubt, [record(2), record(3)]);
    let mut incarnations = contents.incarnations;
    incarnations.sort_unstable();
    assert_eq!(incarnations, [7, u64::MAX], "nonces round-trip bit for bit");
}

#[tokio::test]
async fn a_schema_in_use_is_refused_and_another_is_not() {
    let schema = schema();
    let first = PostgresLog::open_in_schema(&url(), &schema).await.unwrap();
    let second = PostgresLog::open_in_schema(&url(), &schema).await;
    assert!(matches!(second, Err(LogError::Locked { .. })), "{second:?}");
    let other = PostgresLog::open_in_schema(&url(), &self::schema()).await;
    assert!(other.is_ok(), "{other:?}");
    first.log_commit(record(1)).await.unwrap();
}

#[tokio::test]
async fn bad_settings_are_refused_clearly_without_echoing_the_password() {
    for bad in [
        "",
        "Upper",
        "1st",
        "with-dash",
        "a;drop table x",
        &"x".repeat(64),
    ] {
        let refused = PostgresLog::open_in_schema(&url(), bad).await;
        assert!(
            matches!(refused, Err(LogError::InvalidSchema { .. })),
            "{bad:?}: {refused:?}"
        );
    }
    let wrong = url().replacen("dtxn:dtxn@", "dtxn:s3cr3t-wrong@", 1);
    assert_ne!(wrong, url(), "the test URL has the expected credentials");
    let refused = PostgresLog::open_in_schema(&wrong, &schema()).await;
    let Err(LogError::Backend { message }) = refused else {
        panic!("{refused:?}");
    };
    assert!(!message.contains("s3cr3t"), "{message}");
}

/// A coordinator crashes during phase 2 (its runtime is dropped); a new
/// one on the same schema delivers the decision.
#[test]
fn a_coordinator_crash_is_recovered_from_postgres() {
    let schema = schema();
    common::crash_during_phase_2_is_recovered(|again| {
        let schema = schema.clone();
        async move {
            let log = if again {
                reopen(&schema).await
            } else {
                PostgresLog::open_in_schema(&url(), &schema).await.unwrap()
            };
            Arc::new(log) as Arc<dyn DecisionLog>
        }
    });
}
