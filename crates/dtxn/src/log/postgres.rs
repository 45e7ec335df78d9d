//! [`PostgresLog`]: the decision log in PostgreSQL, for shared deployments.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use super::group::{self, GroupCommit, Store, Stored};
use super::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture};
use crate::TransactionId;

/// The format this version writes and reads: 2, a row per group commit
/// (format 1, a row per decision, is upgraded on open).
const FORMAT: i64 = 2;

/// The decision log in a PostgreSQL database, in a schema of its own.
///
/// * **Durable:** each batch is one PostgreSQL transaction committed with
///   `synchronous_commit = on`: on the server's disk before
///   [`log_commit`](DecisionLog::log_commit) completes.
/// * **Group commit:** one connection and one background task write
///   every request that arrived during the previous commit in one
///   transaction, as one row (the layout of `SqliteLog`): one
///   `INSERT … SELECT FROM UNNEST` and at most one `DELETE … = ANY` per
///   write, whatever the batch size.
/// * **Compacted:** a row goes once every decision in it was delivered,
///   and is rewritten with the rest once half were (lazily, batched).
/// * **One coordinator per schema:** the log holds a session advisory lock
///   named after its schema; a second [`open`](Self::open) of the same
///   schema fails with [`LogError::Locked`] while the first connection
///   lives. Several coordinators share one database with one schema each.
///
/// Requires the `postgres` feature.
#[derive(Debug, Clone)]
pub struct PostgresLog(GroupCommit);

impl PostgresLog {
    /// The schema used by [`open`](Self::open).
    pub const DEFAULT_SCHEMA: &'static str = "dtxn";

    /// Opens the log at `url` (`postgres://user:password@host:port/db`) in
    /// the schema `dtxn`, creating its tables if need be.
    ///
    /// # Errors
    ///
    /// As [`open_in_schema`](Self::open_in_schema).
    pub async fn open(url: &str) -> Result<Self, LogError> {
        Self::open_in_schema(url, Self::DEFAULT_SCHEMA).await
    }

    /// Opens the log at `url` in `schema` (created if missing): lowercase
    /// letters, digits and `_`, starting with a letter, at most 63 bytes.
    /// Must be called within a tokio runtime: the log's writer is a task on
    /// it, which stops when every clone of the log is dropped.
    ///
    /// # Errors
    ///
    /// [`LogError::InvalidSchema`] for such a name;
    /// [`LogError::Locked`] when another coordinator holds the schema's
    /// log; [`LogError::NewerFormat`] when a newer dtxn wrote it;
    /// [`LogError::Backend`] when the server cannot be reached or refuses
    /// (the message names host, port and database, never the password).
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self, LogError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(LogError::InvalidSchema {
                schema: schema.chars().take(80).collect(),
            });
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| LogError::Backend {
            // The URL may hold a password: not echoed.
            message: format!("an invalid PostgreSQL URL: {}", redact(&e.to_string(), url)),
        })?;
        let location: Arc<str> = format!(
            "postgres://{}:{}/{} schema {schema}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        )
        .into();
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| error(&location, e))?;
        let locked: bool = sqlx::query("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(format!("dtxn decision log {schema}"))
            .fetch_one(&mut conn)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| error(&location, e))?;
        if !locked {
            return Err(LogError::Locked {
                location: location.to_string(),
            });
        }
        let mut store = PgStore::new(conn, schema, Arc::clone(&location));
        store.schema().await?;
        Ok(Self(GroupCommit::start(store, location)))
    }
}

impl DecisionLog for PostgresLog {
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

struct PgStore {
    conn: PgConnection,
    location: Arc<str>,
    schema: String,
    insert: String,
    delete: String,
}

impl PgStore {
    fn new(conn: PgConnection, schema: &str, location: Arc<str>) -> Self {
        Self {
            conn,
            location,
            schema: schema.to_owned(),
            insert: format!(
                "INSERT INTO {schema}.dtxn_segments (id, records) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET records = EXCLUDED.records"
            ),
            delete: format!("DELETE FROM {schema}.dtxn_segments WHERE id = ANY($1::bigint[])"),
        }
    }

    fn error(&self, e: sqlx::Error) -> LogError {
        error(&self.location, e)
    }

    /// Creates the schema and tables if missing and checks the format.
    async fn schema(&mut self) -> Result<(), LogError> {
        let s = self.schema.clone();
        let statements = [
            format!("CREATE SCHEMA IF NOT EXISTS {s}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s}.dtxn_log_meta (key text PRIMARY KEY, value bigint NOT NULL)"
            ),
            format!(
                "INSERT INTO {s}.dtxn_log_meta (key, value) VALUES ('format', {FORMAT}) ON CONFLICT (key) DO NOTHING"
            ),
            format!("CREATE TABLE IF NOT EXISTS {s}.dtxn_incarnations (nonce bigint PRIMARY KEY)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {s}.dtxn_segments (id bigint PRIMARY KEY, records bytea NOT NULL)"
            ),
            "SET synchronous_commit = on".to_owned(),
        ];
        for statement in &statements {
            sqlx::query(statement)
                .execute(&mut self.conn)
                .await
                .map_err(|e| self.error(e))?;
        }
        let found: i64 = sqlx::query(&format!(
            "SELECT value FROM {s}.dtxn_log_meta WHERE key = 'format'"
        ))
        .fetch_one(&mut self.conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| self.error(e))?;
        if found > FORMAT {
            return Err(LogError::NewerFormat {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT as u32,
            });
        }
        if found < FORMAT {
            self.upgrade().await?;
        }
        Ok(())
    }

    /// Moves the decisions of a format-1 log (a row per decision) into
    /// one segment, in one transaction.
    async fn upgrade(&mut self) -> Result<(), LogError> {
        let s = self.schema.clone();
        let location = Arc::clone(&self.location);
        let sql = |e| error(&location, e);
        let mut tx = self.conn.begin().await.map_err(sql)?;
        let rows = sqlx::query(&format!(
            "SELECT txn, participants FROM {s}.dtxn_commits ORDER BY txn"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql)?
        .into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error>>()
        .map_err(sql)?;
        if !rows.is_empty() {
            let segment = group::segment_of_rows(rows)?;
            sqlx::query(&format!(
                "INSERT INTO {s}.dtxn_segments (id, records) VALUES (0, $1)"
            ))
            .bind(segment)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        }
        for statement in [
            format!("DROP TABLE {s}.dtxn_commits"),
            format!("UPDATE {s}.dtxn_log_meta SET value = {FORMAT} WHERE key = 'format'"),
        ] {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(sql)?;
        }
        tx.commit().await.map_err(sql)
    }

    async fn write_all(&mut self, put: &[(u64, &[u8])], delete: &[u64]) -> Result<(), sqlx::Error> {
        let mut tx = self.conn.begin().await?;
        if !put.is_empty() {
            // bigint is signed: ids are stored bit for bit.
            let ids: Vec<i64> = put.iter().map(|(id, _)| *id as i64).collect();
            let records: Vec<&[u8]> = put.iter().map(|(_, records)| *records).collect();
            sqlx::query(&self.insert)
                .bind(ids)
                .bind(records)
                .execute(&mut *tx)
                .await?;
        }
        if !delete.is_empty() {
            let ids: Vec<i64> = delete.iter().map(|id| *id as i64).collect();
            sqlx::query(&self.delete)
                .bind(ids)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn read(&mut self, incarnation: u64) -> Result<Stored, LogError> {
        let s = self.schema.clone();
        // bigint is signed: the nonce is stored bit for bit.
        sqlx::query(&format!(
            "INSERT INTO {s}.dtxn_incarnations (nonce) VALUES ($1) ON CONFLICT DO NOTHING"
        ))
        .bind(incarnation as i64)
        .execute(&mut self.conn)
        .await
        .map_err(|e| self.error(e))?;
        let incarnations = sqlx::query(&format!("SELECT nonce FROM {s}.dtxn_incarnations"))
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.error(e))?
            .iter()
            .map(|row| row.try_get::<i64, _>(0).map(|n| n as u64))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))?;
        let segments = sqlx::query(&format!("SELECT id, records FROM {s}.dtxn_segments"))
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.error(e))?
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)? as u64, row.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.error(e))?;
        Ok(Stored {
            segments,
            incarnations,
        })
    }
}

impl Store for PgStore {
    async fn open(&mut self, incarnation: u64) -> Result<Stored, LogError> {
        self.read(incarnation).await
    }

    async fn write(&mut self, put: &[(u64, &[u8])], delete: &[u64]) -> Result<(), LogError> {
        let result = self.write_all(put, delete).await;
        result.map_err(|e| self.error(e))
    }

    async fn close(self) {
        if let Err(e) = self.conn.close().await {
            tracing::warn!(log = %self.location, error = %e, "closing the decision log failed");
        }
    }
}

fn error(location: &Arc<str>, e: sqlx::Error) -> LogError {
    LogError::Backend {
        message: format!("{location}: {e}"),
    }
}

/// `message` with any password of `url` blanked out.
fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => message.replace(p, "***"),
        None => message.to_owned(),
    }
}
