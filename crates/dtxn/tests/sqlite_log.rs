//! The SQLite decision log on real files: durability across reopening,
//! compaction, the exclusive lock, refusals, and a coordinator crash
//! recovered from the file.

#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use common::{config, Kind, Mock, Step};
use dtxn::log::{
    CommitRecord, DecisionLog, LogError, LoggedParticipant, ParticipantRegistry, SqliteLog,
};
use dtxn::{OutcomeStatus, Participant, Payload, TransactionCoordinator, TransactionId};

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

#[tokio::test]
async fn decisions_and_incarnations_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    {
        let log = SqliteLog::open(&path).await.unwrap();
        let contents = log.open(7).await.unwrap();
        assert!(contents.in_doubt.is_empty());
        assert_eq!(contents.incarnations, [7]);
        log.log_commit(record(1)).await.unwrap();
        log.log_commit(record(2)).await.unwrap();
        log.log_commit(record(2)).await.unwrap(); // again: harmless
    }
    // Dropping the log closes it (its writer ends with the last clone).
    let log = reopen(&path).await;
    let contents = log.open(8).await.unwrap();
    assert_eq!(contents.in_doubt, [record(1), record(2)]);
    let mut incarnations = contents.incarnations;
    incarnations.sort_unstable();
    assert_eq!(incarnations, [7, 8]);
}

/// Opens `path` again once the previous holder's writer has let it go.
async fn reopen(path: &std::path::Path) -> SqliteLog {
    for _ in 0..200 {
        match SqliteLog::open(path).await {
            Ok(log) => return log,
            Err(LogError::Locked { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the log was never released");
}

#[tokio::test]
async fn an_end_record_removes_its_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    {
        let log = SqliteLog::open(&path).await.unwrap();
        log.log_commit(record(1)).await.unwrap();
        log.log_commit(record(2)).await.unwrap();
        log.log_end(TransactionId::from_u128(1));
        // Ends are lazy: a later decision carries it with it.
        log.log_commit(record(3)).await.unwrap();
    }
    let log = reopen(&path).await;
    let contents = log.open(1).await.unwrap();
    assert_eq!(contents.in_doubt, [record(2), record(3)]);
}

#[tokio::test]
async fn a_second_coordinator_cannot_open_a_log_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let first = SqliteLog::open(&path).await.unwrap();
    first.log_commit(record(1)).await.unwrap();
    let second = SqliteLog::open(&path).await;
    assert!(matches!(second, Err(LogError::Locked { .. })), "{second:?}");
    // The holder is unaffected.
    first.log_commit(record(2)).await.unwrap();
}

#[tokio::test]
async fn a_log_written_by_a_newer_version_is_refused() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    drop(SqliteLog::open(&path).await.unwrap());
    let _ = reopen(&path).await; // released
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE dtxn_log_meta SET value = 2 WHERE key = 'format'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let refused = SqliteLog::open(&path).await;
    assert!(
        matches!(
            refused,
            Err(LogError::NewerFormat {
                found: 2,
                supported: 1
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn unusable_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/decisions.db");
    let refused = SqliteLog::open(&missing_dir).await;
    assert!(
        matches!(refused, Err(LogError::Backend { .. })),
        "{refused:?}"
    );
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let refused = SqliteLog::open(&garbage).await;
    let Err(LogError::Backend { message }) = refused else {
        panic!("{refused:?}");
    };
    assert!(message.contains("garbage.db"), "{message}");
}

/// A coordinator on the file crashes during phase 2 (its runtime is
/// dropped); a new one on the same file delivers the decision.
#[test]
fn a_coordinator_crash_is_recovered_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
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
        let log = Arc::new(SqliteLog::open(&path).await.unwrap());
        let (c, _) = TransactionCoordinator::recover(
            config().build().unwrap(),
            log,
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
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        txn
    });
    // The crash: every task of the first coordinator (and its log's
    // writer) stops where it is.
    drop(first);
    assert_eq!(b.count(Kind::Commit), 1);

    runtime().block_on(async {
        let log = Arc::new(reopen(&path).await);
        let mut registry = ParticipantRegistry::new();
        registry.insert(a.clone()).unwrap();
        registry.insert(b.clone()).unwrap();
        let (c, recovery) =
            TransactionCoordinator::recover(config().build().unwrap(), log, &registry)
                .await
                .unwrap();
        assert_eq!(recovery.redelivering, [txn]);
        let outcome = c.commit_transaction(txn).await.unwrap();
        assert!(outcome.is_committed() && outcome.hazards.is_empty());
        assert_eq!(b.count(Kind::Commit), 2);
        assert_eq!(c.outcome(txn), OutcomeStatus::Committed);
    });
}
