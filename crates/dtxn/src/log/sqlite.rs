//! [`SqliteLog`]: the decision log in an embedded SQLite file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture, LoggedParticipant};
use crate::{Payload, TransactionId};

/// The format this version writes and reads.
const FORMAT: u32 = 1;
/// Most requests written in one SQLite transaction (one sync).
const BATCH: usize = 4096;
/// How long end records alone wait for company before they are written.
const END_DELAY: Duration = Duration::from_millis(20);

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
pub struct SqliteLog {
    requests: mpsc::UnboundedSender<Request>,
}

#[derive(Debug)]
enum Request {
    Open {
        incarnation: u64,
        reply: oneshot::Sender<Result<LogContents, LogError>>,
    },
    Commit {
        record: CommitRecord,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
    End(TransactionId),
}

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
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, receiver, location));
        Ok(Self { requests })
    }

    fn send<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Request,
    ) -> LogFuture<T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(request(reply)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(LogError::Closed);
            }
            answer.await.unwrap_or(Err(LogError::Closed))
        })
    }
}

impl DecisionLog for SqliteLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        self.send(|reply| Request::Open { incarnation, reply })
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        self.send(|reply| Request::Commit { record, reply })
    }

    fn log_end(&self, txn: TransactionId) {
        // A closed log loses the end: recovery then delivers `commit` once
        // more, which participants accept.
        let _ = self.requests.send(Request::End(txn));
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

/// The log's one writer: takes every request waiting, writes them in one
/// SQLite transaction, answers them all.
async fn writer(
    mut conn: SqliteConnection,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    location: Arc<str>,
) {
    let mut batch = Vec::new();
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        drain(&mut receiver, &mut batch);
        if batch.iter().all(|r| matches!(r, Request::End(_))) {
            // Ends alone are not urgent: wait for more, or a decision.
            let delay = tokio::time::sleep(END_DELAY);
            tokio::pin!(delay);
            while batch.len() < BATCH {
                tokio::select! {
                    () = &mut delay => break,
                    next = receiver.recv() => match next {
                        Some(request) => {
                            let urgent = !matches!(request, Request::End(_));
                            batch.push(request);
                            if urgent {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            drain(&mut receiver, &mut batch);
        }
        write(&mut conn, &mut batch, &location).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(log = %location, error = %e, "closing the decision log failed");
    }
}

fn drain(receiver: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// Writes `batch`, answering and emptying it.
async fn write(conn: &mut SqliteConnection, batch: &mut Vec<Request>, location: &Arc<str>) {
    let mut commits = Vec::new();
    let mut ends = Vec::new();
    for request in batch.drain(..) {
        match request {
            Request::Open { incarnation, reply } => {
                let _ = reply.send(open(conn, incarnation, location).await);
            }
            Request::Commit { record, reply } => commits.push((record, reply)),
            Request::End(txn) => ends.push(txn),
        }
    }
    if commits.is_empty() && ends.is_empty() {
        return;
    }
    let result = write_all(conn, &commits, &ends)
        .await
        .map_err(|e| error(location, e));
    if let Err(e) = &result {
        tracing::error!(log = %location, error = %e, decisions = commits.len(), "decision log write failed");
    }
    for (_, reply) in commits {
        let _ = reply.send(result.clone());
    }
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

async fn write_all(
    conn: &mut SqliteConnection,
    commits: &[(CommitRecord, oneshot::Sender<Result<(), LogError>>)],
    ends: &[TransactionId],
) -> Result<(), sqlx::Error> {
    let rows: Vec<([u8; 16], Vec<u8>)> = commits
        .iter()
        .map(|(record, _)| {
            (
                record.txn.as_u128().to_be_bytes(),
                encode(&record.participants),
            )
        })
        .collect();
    let ends: Vec<[u8; 16]> = ends.iter().map(|t| t.as_u128().to_be_bytes()).collect();
    let mut tx = conn.begin().await?;
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

async fn open(
    conn: &mut SqliteConnection,
    incarnation: u64,
    location: &Arc<str>,
) -> Result<LogContents, LogError> {
    let sql = |e| error(location, e);
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
        let txn = <[u8; 16]>::try_from(txn.as_slice()).map_err(|_| LogError::Corrupt {
            detail: format!("a transaction id of {} bytes", txn.len()),
        })?;
        let txn = TransactionId::from_u128(u128::from_be_bytes(txn));
        in_doubt.push(CommitRecord {
            txn,
            participants: decode(&participants).map_err(|detail| LogError::Corrupt {
                detail: format!("transaction {txn}: {detail}"),
            })?,
        });
    }
    Ok(LogContents::new(in_doubt, incarnations))
}

/// The participants of a record: a count, then per participant its key
/// and optional payload, each length-prefixed (u32, little endian).
fn encode(participants: &[LoggedParticipant]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend(len(participants.len()));
    for p in participants {
        out.extend(len(p.key.len()));
        out.extend(p.key.as_bytes());
        match &p.payload {
            None => out.push(0),
            Some(payload) => {
                out.push(1);
                out.extend(len(payload.len()));
                out.extend(payload.as_bytes());
            }
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<LoggedParticipant>, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!(
                "truncated: {} bytes left, {n} expected",
                bytes.len()
            ));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    fn len(bytes: &mut &[u8]) -> Result<usize, String> {
        let raw = take(bytes, 4)?;
        let n = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        usize::try_from(n).map_err(|_| format!("length {n} too large"))
    }
    let count = len(&mut bytes)?;
    // Each participant takes at least five bytes: no huge allocation for
    // a damaged count.
    if count > bytes.len() / 5 {
        return Err(format!("{count} participants in {} bytes", bytes.len()));
    }
    let mut participants = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = len(&mut bytes)?;
        let key = std::str::from_utf8(take(&mut bytes, key_len)?)
            .map_err(|_| "a recovery key that is not UTF-8".to_owned())?;
        let payload = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => {
                let n = len(&mut bytes)?;
                Some(Payload::from(take(&mut bytes, n)?))
            }
            other => return Err(format!("payload marker {other}")),
        };
        participants.push(LoggedParticipant {
            key: key.into(),
            payload,
        });
    }
    if !bytes.is_empty() {
        return Err(format!("{} bytes after the last participant", bytes.len()));
    }
    Ok(participants)
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

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::log::LoggedParticipant;
    use crate::Payload;

    #[test]
    fn participants_round_trip_through_the_encoding() {
        let participants = vec![
            LoggedParticipant {
                key: "users".into(),
                payload: None,
            },
            LoggedParticipant {
                key: "http://inventory/dtxn".into(),
                payload: Some(Payload::from(r#"{"sku":"book"}"#)),
            },
        ];
        assert_eq!(decode(&encode(&participants)).unwrap(), participants);
    }

    #[test]
    fn damaged_encodings_are_refused_not_misread() {
        let good = encode(&[LoggedParticipant {
            key: "users".into(),
            payload: Some(Payload::from("x")),
        }]);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
