//! [`SqliteLog`]: the decision log in an embedded SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};

use super::group::{self, GroupCommit, Store, Stored};
use super::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture};
use crate::TransactionId;

/// The format this version writes and reads: 2, a row per group commit
/// (format 1, a row per decision, is upgraded on open).
const FORMAT: u32 = 2;

/// The decision log in an SQLite file: no server, one file (with its
/// write-ahead log beside it), created on first use.
///
/// * **Durable:** the file is in WAL mode with `synchronous = FULL`, so a
///   Commit decision is on disk (fsync) before
///   [`log_commit`](DecisionLog::log_commit) completes.
/// * **Group commit:** one background task writes every request that
///   arrived while the previous write was syncing in one SQLite
///   transaction, so concurrent decisions share one fsync.
/// * **One row per group commit:** the decisions of a write are stored
///   together, so a write costs one insert however many it carries; a row
///   is deleted once every decision in it was delivered, and rewritten
///   with the rest once half were (so the file holds at most twice the
///   decisions still being delivered). This work rides along with the next
///   write, or goes alone after 20 ms.
/// * **One coordinator at a time:** the file is held with an exclusive
///   lock while open; a second [`open`](Self::open) of it fails with
///   [`LogError::Locked`].
///
/// Requires the `sqlite` feature.
#[derive(Debug, Clone)]
pub struct SqliteLog(GroupCommit);

impl SqliteLog {
    /// Opens (creating if need be) the log at `path` and takes its lock.
    /// Must be called within a tokio runtime: the log's writer is a task on
    /// it, which stops when every clone of the log is dropped.
    ///
    /// # Errors
    ///
    /// [`LogError::Locked`] when another coordinator holds the file;
    /// [`LogError::NewerFormat`] when a newer dtxn wrote it;
    /// [`LogError::Backend`] when it cannot be created, read or written
    /// (a read-only file, a missing directory, not an SQLite file).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        let path = path.as_ref();
        let location: Arc<str> = path.display().to_string().into();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .locking_mode(SqliteLockingMode::Exclusive)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::ZERO);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| error(&location, e))?;
        schema(&mut conn).await.map_err(|e| match e {
            SchemaError::Sql(e) => error(&location, e),
            SchemaError::Newer(found) => LogError::NewerFormat {
                found,
                supported: FORMAT,
            },
            SchemaError::Log(e) => e,
        })?;
        let store = SqliteStore {
            conn,
            location: Arc::clone(&location),
        };
        Ok(Self(GroupCommit::start(store, location)))
    }
}

impl DecisionLog for SqliteLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        self.0.open(incarnation)
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        self.0.log_commit(record)
    }

    fn log_end(&self, txn: TransactionId) {
        self.0.log_end(txn);
    }
}

enum SchemaError {
    Sql(sqlx::Error),
    Newer(u32),
    Log(LogError),
}

impl From<sqlx::Error> for SchemaError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

/// Creates the tables (taking the exclusive lock with the first write) and
/// checks the format, upgrading a format-1 log (a row per decision) to
/// segments.
async fn schema(conn: &mut SqliteConnection) -> Result<(), SchemaError> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS dtxn_log_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT OR IGNORE INTO dtxn_log_meta (key, value) VALUES ('format', ?)")
        .bind(i64::from(FORMAT))
        .execute(&mut *tx)
        .await?;
    let found: i64 = sqlx::query("SELECT value FROM dtxn_log_meta WHERE key = 'format'")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if found > i64::from(FORMAT) {
        return Err(SchemaError::Newer(u32::try_from(found).unwrap_or(u32::MAX)));
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS dtxn_incarnations (nonce INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS dtxn_segments (id INTEGER PRIMARY KEY, records BLOB NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    if found < i64::from(FORMAT) {
        let rows = sqlx::query("SELECT txn, participants FROM dtxn_commits ORDER BY txn")
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error>>()?;
        if !rows.is_empty() {
            let segment = group::segment_of_rows(rows).map_err(SchemaError::Log)?;
            sqlx::query("INSERT INTO dtxn_segments (id, records) VALUES (0, ?)")
                .bind(segment)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DROP TABLE dtxn_commits")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE dtxn_log_meta SET value = ? WHERE key = 'format'")
            .bind(i64::from(FORMAT))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

struct SqliteStore {
    conn: SqliteConnection,
    location: Arc<str>,
}

impl SqliteStore {
    async fn write_all(&mut self, put: &[(u64, &[u8])], delete: &[u64]) -> Result<(), sqlx::Error> {
        let mut tx = self.conn.begin().await?;
        // A group commit is one segment: a statement or two per write.
        for (id, records) in put {
            sqlx::query("INSERT OR REPLACE INTO dtxn_segments (id, records) VALUES (?, ?)")
                .bind(*id as i64)
                .bind(*records)
                .execute(&mut *tx)
                .await?;
        }
        for id in delete {
            sqlx::query("DELETE FROM dtxn_segments WHERE id = ?")
                .bind(*id as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn read(&mut self, incarnation: u64) -> Result<Stored, sqlx::Error> {
        let conn = &mut self.conn;
        // SQLite integers are signed: the nonce is stored bit for bit.
        sqlx::query("INSERT OR IGNORE INTO dtxn_incarnations (nonce) VALUES (?)")
            .bind(incarnation as i64)
            .execute(&mut *conn)
            .await?;
        let incarnations = sqlx::query("SELECT nonce FROM dtxn_incarnations")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0).map(|n| n as u64))
            .collect::<Result<Vec<_>, _>>()?;
        let segments = sqlx::query("SELECT id, records FROM dtxn_segments")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)? as u64, row.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Stored {
            segments,
            incarnations,
        })
    }
}

impl Store for SqliteStore {
    async fn open(&mut self, incarnation: u64) -> Result<Stored, LogError> {
        let location = Arc::clone(&self.location);
        self.read(incarnation)
            .await
            .map_err(|e| error(&location, e))
    }

    async fn write(&mut self, put: &[(u64, &[u8])], delete: &[u64]) -> Result<(), LogError> {
        let location = Arc::clone(&self.location);
        self.write_all(put, delete)
            .await
            .map_err(|e| error(&location, e))
    }

    async fn close(self) {
        if let Err(e) = self.conn.close().await {
            tracing::warn!(log = %self.location, error = %e, "closing the decision log failed");
        }
    }
}

/// The log error for an SQLite error: a lock held by another connection
/// is [`LogError::Locked`].
fn error(location: &Arc<str>, e: sqlx::Error) -> LogError {
    let mut hint = "";
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        match code & 0xff {
            // SQLITE_BUSY and SQLITE_LOCKED, with extended codes.
            5 | 6 => {
                return LogError::Locked {
                    location: location.to_string(),
                }
            }
            // SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, and
            // SQLITE_IOERR_LOCK (the shared-memory file of a read-only
            // database): what a file or directory without write access
            // gives.
            3 | 8 | 14 => hint = WRITABLE,
            _ if code == 3850 => hint = WRITABLE,
            _ => {}
        }
    }
    LogError::Backend {
        message: format!("{location}: {e}{hint}"),
    }
}

const WRITABLE: &str = " (the log's file and its directory must be writable: SQLite creates \
                        its -wal and -shm files beside it)";
