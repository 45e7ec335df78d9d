//! [`SqliteLog`]: the decision log in an embedded SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};

use super::group::{self, GroupCommit, Store};
use super::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture};
use crate::TransactionId;

/// The format this version writes and reads.
const FORMAT: u32 = 1;

/// The decision log in an SQLite file: no server, one file (with its
/// write-ahead log beside it), created on first use.
///
/// * **Durable:** the file is in WAL mode with `synchronous = FULL`, so a
///   Commit decision is on disk (fsync) before
///   [`log_commit`](DecisionLog::log_commit) completes.
/// * **Group commit:** one background task writes every request that
///   arrived while the previous write was syncing in one SQLite
///   transaction, so concurrent decisions share one fsync.
/// * **Compacted:** an end record deletes its decision; ends are written
///   lazily, with the next decisions or after 20 ms.
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
}

impl From<sqlx::Error> for SchemaError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

/// Creates the tables (taking the exclusive lock with the first write) and
/// checks the format.
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
        "CREATE TABLE IF NOT EXISTS dtxn_commits (txn BLOB PRIMARY KEY, participants BLOB NOT NULL) WITHOUT ROWID",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

struct SqliteStore {
    conn: SqliteConnection,
    location: Arc<str>,
}

/// Rows per statement, largest first: a batch is written in as few
/// statements as these sizes allow (each size's statement is prepared once
/// and cached by the connection), since every statement is a round trip to
/// SQLite's thread.
const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// `head` followed by `rows` groups of `group`, comma-separated.
fn statement(head: &str, group: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (group.len() + 1));
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(group);
    }
    sql
}

impl SqliteStore {
    async fn write_all(
        &mut self,
        commits: &[&CommitRecord],
        ends: &[TransactionId],
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<([u8; 16], Vec<u8>)> = commits
            .iter()
            .map(|record| {
                (
                    record.txn.as_u128().to_be_bytes(),
                    group::encode(&record.participants),
                )
            })
            .collect();
        let ends: Vec<[u8; 16]> = ends.iter().map(|t| t.as_u128().to_be_bytes()).collect();
        let mut tx = self.conn.begin().await?;
        let mut rest = &rows[..];
        for size in CHUNKS {
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                let sql = statement(
                    "INSERT OR REPLACE INTO dtxn_commits (txn, participants) VALUES ",
                    "(?, ?)",
                    size,
                );
                let mut query = sqlx::query(&sql);
                for (txn, participants) in chunk {
                    query = query.bind(&txn[..]).bind(&participants[..]);
                }
                query.execute(&mut *tx).await?;
                rest = tail;
            }
        }
        let mut rest = &ends[..];
        for size in CHUNKS {
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                let mut sql = statement("DELETE FROM dtxn_commits WHERE txn IN (", "?", size);
                sql.push(')');
                let mut query = sqlx::query(&sql);
                for txn in chunk {
                    query = query.bind(&txn[..]);
                }
                query.execute(&mut *tx).await?;
                rest = tail;
            }
        }
        tx.commit().await
    }

    async fn read(&mut self, incarnation: u64) -> Result<LogContents, LogError> {
        let location = Arc::clone(&self.location);
        let sql = |e| error(&location, e);
        let conn = &mut self.conn;
        // SQLite integers are signed: the nonce is stored bit for bit.
        sqlx::query("INSERT OR IGNORE INTO dtxn_incarnations (nonce) VALUES (?)")
            .bind(incarnation as i64)
            .execute(&mut *conn)
            .await
            .map_err(sql)?;
        let incarnations = sqlx::query("SELECT nonce FROM dtxn_incarnations")
            .fetch_all(&mut *conn)
            .await
            .map_err(sql)?
            .iter()
            .map(|row| row.try_get::<i64, _>(0).map(|n| n as u64))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?;
        let rows = sqlx::query("SELECT txn, participants FROM dtxn_commits ORDER BY txn")
            .fetch_all(&mut *conn)
            .await
            .map_err(sql)?;
        let mut in_doubt = Vec::with_capacity(rows.len());
        for row in rows {
            let txn: Vec<u8> = row.try_get(0).map_err(sql)?;
            let participants: Vec<u8> = row.try_get(1).map_err(sql)?;
            in_doubt.push(group::record(&txn, &participants)?);
        }
        Ok(LogContents::new(in_doubt, incarnations))
    }
}

impl Store for SqliteStore {
    async fn open(&mut self, incarnation: u64) -> Result<LogContents, LogError> {
        self.read(incarnation).await
    }

    async fn write(
        &mut self,
        commits: &[&CommitRecord],
        ends: &[TransactionId],
    ) -> Result<(), LogError> {
        let location = Arc::clone(&self.location);
        self.write_all(commits, ends)
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
    if let sqlx::Error::Database(db) = &e {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with extended codes.
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
        if matches!(code & 0xff, 5 | 6) {
            return LogError::Locked {
                location: location.to_string(),
            };
        }
    }
    LogError::Backend {
        message: format!("{location}: {e}"),
    }
}
