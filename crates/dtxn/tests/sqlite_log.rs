//! The SQLite decision log on real files: durability across reopening,
//! compaction, the exclusive lock, refusals, and a coordinator crash
//! recovered from the file.

#![cfg(feature = "sqlite")]

mod common;

use std::sync::Arc;

use dtxn::log::{CommitRecord, DecisionLog, LogError, LoggedParticipant, SqliteLog};
use dtxn::{Payload, TransactionId};

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

/// A decision logged twice at once (both requests in one group commit) is
/// stored once: its end leaves nothing behind.
#[tokio::test]
async fn a_decision_logged_twice_at_once_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    {
        let log = SqliteLog::open(&path).await.unwrap();
        // Both requests are queued before the writer runs.
        let (first, second) = (log.log_commit(record(1)), log.log_commit(record(1)));
        first.await.unwrap();
        second.await.unwrap();
        log.log_end(TransactionId::from_u128(1));
        log.log_commit(record(2)).await.unwrap();
    }
    let log = reopen(&path).await;
    assert_eq!(log.open(1).await.unwrap().in_doubt, [record(2)]);
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
    sqlx::query("UPDATE dtxn_log_meta SET value = 3 WHERE key = 'format'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let refused = SqliteLog::open(&path).await;
    assert!(
        matches!(
            refused,
            Err(LogError::NewerFormat {
                found: 3,
                supported: 2
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
    common::crash_during_phase_2_is_recovered(|again| {
        let path = path.clone();
        async move {
            let log = if again {
                reopen(&path).await
            } else {
                SqliteLog::open(&path).await.unwrap()
            };
            Arc::new(log) as Arc<dyn DecisionLog>
        }
    });
}

/// A log of format 1 (a row per decision, before group commits were
/// stored as one row) is upgraded on open, its decisions kept.
#[tokio::test]
async fn a_format_1_log_is_upgraded_with_its_decisions() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
    for statement in [
        "CREATE TABLE dtxn_log_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO dtxn_log_meta (key, value) VALUES ('format', 1)",
        "CREATE TABLE dtxn_incarnations (nonce INTEGER PRIMARY KEY)",
        "INSERT INTO dtxn_incarnations (nonce) VALUES (5)",
        "CREATE TABLE dtxn_commits (txn BLOB PRIMARY KEY, participants BLOB NOT NULL) WITHOUT ROWID",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    // Format 1's participants: a count, then each key (length-prefixed,
    // little endian) and a payload marker (0: none).
    let mut participants = 1u32.to_le_bytes().to_vec();
    participants.extend(5u32.to_le_bytes());
    participants.extend(b"users");
    participants.push(0);
    sqlx::query("INSERT INTO dtxn_commits (txn, participants) VALUES (?, ?)")
        .bind(&9u128.to_be_bytes()[..])
        .bind(participants)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let log = SqliteLog::open(&path).await.unwrap();
    let contents = log.open(6).await.unwrap();
    let expected = CommitRecord {
        txn: TransactionId::from_u128(9),
        participants: vec![LoggedParticipant {
            key: "users".into(),
            payload: None,
        }],
    };
    assert_eq!(contents.in_doubt, [expected]);
    let mut incarnations = contents.incarnations;
    incarnations.sort_unstable();
    assert_eq!(incarnations, [5, 6]);
    // Delivered: the upgraded decision ends like any other.
    log.log_end(TransactionId::from_u128(9));
    log.log_commit(record(10)).await.unwrap();
    drop(log);
    let log = reopen(&path).await;
    assert_eq!(log.open(7).await.unwrap().in_doubt, [record(10)]);
}

// Damaged and unwritable files. Every test below goes through the public
// API only (and, to plant damage, through SQL that discovers the tables),
// so it holds whatever table layout the log uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The write-ahead log beside the database at `db`.
fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

/// The decisions the log at `db` holds, read by a new coordinator.
async fn in_doubt(db: &Path) -> Vec<CommitRecord> {
    let log = SqliteLog::open(db).await.expect("the log opens");
    log.open(8).await.expect("the log reads").in_doubt
}

/// Waits until no connection holds the SQLite file at `path` (a dropped
/// log closes its connection from its writer task), with a connection of
/// our own that waits for the lock, takes it once and closes; SQLite then
/// checkpoints the write-ahead log into the file.
async fn wait_until_closed(path: &Path) {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("a connection of our own");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("the log let go of its lock");
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The page size of the SQLite write-ahead log `wal` and the start of its
/// last frame, checking that it holds whole frames.
fn last_frame(wal: &[u8]) -> (usize, usize) {
    // A 32-byte header (page size at bytes 8..12, big endian), then frames
    // of a 24-byte header and a page.
    const HEADER: usize = 32;
    const FRAME_HEADER: usize = 24;
    assert!(wal.len() > HEADER, "the write-ahead log holds no frame");
    let page = u32::from_be_bytes([wal[8], wal[9], wal[10], wal[11]]) as usize;
    assert!(page.is_power_of_two() && page >= 512, "page size {page}");
    let frames = wal.len() - HEADER;
    assert_eq!(frames % (FRAME_HEADER + page), 0, "whole frames");
    (page, wal.len() - (FRAME_HEADER + page))
}

/// Logs decisions 1 to 3, each acknowledged, then decision 4 in a
/// `log_commit` of its own, and copies the open log's files into
/// `dir/image`: the database and its `-wal`, what a `kill -9` leaves. (In
/// exclusive locking mode there is no `-shm`; SQLite rebuilds it from the
/// write-ahead log anyway.) Returns the copy of the database.
///
/// Checks that the test means something: the decisions are in the
/// write-ahead log, not yet checkpointed into the database file (which,
/// alone, holds none of them), and the last write is at its end.
async fn crash_image(dir: &Path) -> PathBuf {
    let live = dir.join("live");
    std::fs::create_dir(&live).unwrap();
    let path = live.join("decisions.db");
    let log = SqliteLog::open(&path).await.unwrap();
    log.open(7).await.unwrap();
    for n in 1..=3 {
        log.log_commit(record(n)).await.unwrap();
    }
    log.log_commit(record(4)).await.unwrap();

    let image = dir.join("image");
    std::fs::create_dir(&image).unwrap();
    let copy = image.join("decisions.db");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(wal_of(&path), wal_of(&copy)).unwrap();
    drop(log);

    let wal = std::fs::read(wal_of(&copy)).unwrap();
    last_frame(&wal); // non-empty, whole frames
    let alone = dir.join("file-alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&copy, alone.join("decisions.db")).unwrap();
    assert_eq!(
        in_doubt(&alone.join("decisions.db")).await,
        [],
        "the decisions must still be in the write-ahead log only"
    );
    copy
}

#[tokio::test]
async fn a_crash_image_of_an_open_log_holds_every_acknowledged_decision() {
    let dir = tempfile::tempdir().unwrap();
    let image = crash_image(dir.path()).await;
    assert_eq!(
        in_doubt(&image).await,
        [record(1), record(2), record(3), record(4)]
    );
}

/// The last write torn by the crash (its last frame cut short): the
/// decision it carried is gone whole, the ones acknowledged before stay.
#[tokio::test]
async fn a_torn_last_write_loses_only_the_decision_it_carried() {
    let dir = tempfile::tempdir().unwrap();
    let image = crash_image(dir.path()).await;
    let wal = std::fs::OpenOptions::new()
        .write(true)
        .open(wal_of(&image))
        .unwrap();
    let len = wal.metadata().unwrap().len();
    wal.set_len(len - 7).unwrap();
    drop(wal);
    assert_eq!(in_doubt(&image).await, [record(1), record(2), record(3)]);
}

/// Bytes in the middle of the last frame overwritten (a write that
/// reached the disk only in part): its checksum fails, so the decision
/// it carried is gone whole, never read damaged.
#[tokio::test]
async fn a_damaged_last_frame_loses_only_the_decision_it_carried() {
    let dir = tempfile::tempdir().unwrap();
    let image = crash_image(dir.path()).await;
    let mut wal = std::fs::read(wal_of(&image)).unwrap();
    let (page, start) = last_frame(&wal);
    let middle = start + 24 + page / 2;
    for byte in &mut wal[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(wal_of(&image), &wal).unwrap();
    assert_eq!(in_doubt(&image).await, [record(1), record(2), record(3)]);
}

/// Real corruption, not a torn write: every BLOB the log stores for its
/// decisions (in any `dtxn_` table but the format and incarnation ones)
/// overwritten with garbage, through SQL, while the log is closed. Reading
/// the log must fail as `Corrupt`, not drop the records it cannot read.
#[tokio::test]
async fn garbage_in_the_stored_decisions_is_reported_as_corrupt() {
    use sqlx::{ConnectOptions, Connection, Row};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.db");
    {
        let log = SqliteLog::open(&path).await.unwrap();
        log.open(7).await.unwrap();
        log.log_commit(record(1)).await.unwrap();
        log.log_commit(record(2)).await.unwrap();
    }
    wait_until_closed(&path).await;

    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .foreign_keys(false)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query(
        r"SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'dtxn\_%' ESCAPE '\'
          AND name NOT IN ('dtxn_log_meta', 'dtxn_incarnations')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert!(
        !tables.is_empty(),
        "the log keeps its decisions in a dtxn_ table"
    );
    let mut overwritten = 0;
    for table in &tables {
        let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?)")
            .bind(table)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        for column in &columns {
            // Four 0xff bytes, then the value's hex digits: garbage, and
            // still distinct per row (a BLOB may be a key).
            let sql = format!(
                r#"UPDATE "{table}" SET "{column}" = CAST(X'FFFFFFFF' || hex("{column}") AS BLOB)
                   WHERE typeof("{column}") = 'blob'"#
            );
            overwritten += sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected();
        }
    }
    assert!(
        overwritten > 0,
        "no BLOB to damage in the tables {tables:?}: the test would prove nothing"
    );
    conn.close().await.unwrap();

    let refused = match SqliteLog::open(&path).await {
        Ok(log) => log.open(8).await,
        Err(e) => Err(e),
    };
    assert!(
        matches!(refused, Err(LogError::Corrupt { .. })),
        "{refused:?}"
    );
}

/// Set in the child process that runs a permission test again without
/// `CAP_DAC_OVERRIDE` (see [`with_permissions_enforced`]).
const WITHOUT_OVERRIDE: &str = "DTXN_TEST_WITHOUT_DAC_OVERRIDE";

/// Whether this process is refused writing a file whose mode forbids it.
/// Root is not (its `CAP_DAC_OVERRIDE` ignores file modes).
fn permissions_apply() -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"probe").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&probe)
        .is_err()
}

/// Runs `case(true)` where file permissions are enforced: in this process
/// when they are for it; when it is root, by running the test `name` again
/// in a child process whose capabilities lack `CAP_DAC_OVERRIDE` (with
/// util-linux's `setpriv`), which makes root obey file modes. Where that
/// cannot be done, runs `case(false)`: with permissions ignored, the log
/// must accept the file and keep what it acknowledged.
fn with_permissions_enforced<F, Fut>(name: &str, case: F)
where
    F: FnOnce(bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use std::process::{Command, Stdio};
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    if permissions_apply() {
        return runtime().block_on(case(true));
    }
    assert!(
        std::env::var_os(WITHOUT_OVERRIDE).is_none(),
        "file modes are still ignored without CAP_DAC_OVERRIDE"
    );
    let drop_override = ["--bounding-set=-dac_override", "--"];
    let can_drop = Command::new("setpriv")
        .args(drop_override)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_drop {
        eprintln!(
            "{name}: file modes do not apply to this process and setpriv cannot drop \
             CAP_DAC_OVERRIDE: checking only that the log keeps what it acknowledges"
        );
        return runtime().block_on(case(false));
    }
    let output = Command::new("setpriv")
        .args(drop_override)
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(WITHOUT_OVERRIDE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} without CAP_DAC_OVERRIDE: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `refused` must be the log's clear refusal of the file at `path`: a
/// backend error naming it.
fn assert_refused_naming(refused: Result<(), LogError>, path: &Path) {
    let Err(LogError::Backend { message }) = &refused else {
        panic!("{refused:?}: a log that cannot be written must be refused");
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("must be writable"), "{message}");
}

/// Opens the log at `path` and writes a decision: the first error, if any.
async fn open_and_write(path: &Path, n: u128) -> Result<(), LogError> {
    let log = SqliteLog::open(path).await?;
    log.open(9).await?;
    log.log_commit(record(n)).await
}

/// A log file made read-only is refused at the latest at the first
/// `log_commit`, naming the file, never accepted with writes lost.
#[test]
fn a_read_only_log_file_is_refused() {
    with_permissions_enforced("a_read_only_log_file_is_refused", |enforced| async move {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.db");
        open_and_write(&path, 1).await.unwrap();
        wait_until_closed(&path).await;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let result = open_and_write(&path, 2).await;
        // Writable again before anything else opens it: a connection on the
        // read-only file would create its -wal and -shm read-only too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        wait_until_closed(&path).await;
        if enforced {
            assert_refused_naming(result, &path);
            assert_eq!(in_doubt(&path).await, [record(1)]);
        } else {
            result.unwrap();
            assert_eq!(in_doubt(&path).await, [record(1), record(2)]);
        }
    });
}

/// A log in a read-only directory, where its `-wal` cannot be created, is
/// refused at the latest at the first `log_commit`, naming the file.
#[test]
fn a_log_in_a_read_only_directory_is_refused() {
    with_permissions_enforced(
        "a_log_in_a_read_only_directory_is_refused",
        |enforced| async move {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let logs = dir.path().join("logs");
            std::fs::create_dir(&logs).unwrap();
            let path = logs.join("decisions.db");
            open_and_write(&path, 1).await.unwrap();
            wait_until_closed(&path).await;
            assert!(!wal_of(&path).exists(), "closed: no -wal left");
            std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o555)).unwrap();
            let result = open_and_write(&path, 2).await;
            let wal_created = wal_of(&path).exists();
            std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
            wait_until_closed(&path).await;
            if enforced {
                assert!(!wal_created);
                assert_refused_naming(result, &path);
                assert_eq!(in_doubt(&path).await, [record(1)]);
            } else {
                result.unwrap();
                assert_eq!(in_doubt(&path).await, [record(1), record(2)]);
            }
        },
    );
}
