//! [`PostgresLog`]: the decision log in PostgreSQL, for shared deployments.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Row};
use tokio::time::Instant;

use super::group::{self, GroupCommit, Store, Stored, Taken};
use super::{CommitRecord, DecisionLog, Lease, LogContents, LogError, LogFuture, Takeover};
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
/// Several coordinators can also share **one** schema as a cluster, each
/// with its own part of the log, a lease, and takeover of the parts whose
/// lease expired: see [`join_cluster`](Self::join_cluster).
///
/// Requires the `postgres` feature.
#[derive(Debug, Clone)]
pub struct PostgresLog {
    writer: GroupCommit,
    cluster: Option<ClusterView>,
}

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
        if !valid_name(schema, 63) {
            return Err(LogError::InvalidSchema {
                schema: schema.chars().take(80).collect(),
            });
        }
        let options = connect_options(url)?;
        let location = location_of(&options, schema);
        let mut store = PgStore::connect(options, schema, location.clone(), None).await?;
        store.schema().await?;
        Ok(Self {
            writer: GroupCommit::start(store, location),
            cluster: None,
        })
    }

    /// Joins the cluster of coordinators sharing the database at `url`
    /// (PROTOCOL.md rule 17): this coordinator, node `options.node_id`,
    /// keeps its decisions in a schema of its own (`{schema}_{node_id}`)
    /// and registers in the cluster's tables (in `options.schema`) with its
    /// address, a lease and an epoch.
    ///
    /// * **Lease.** Every write of the log renews the node's lease in the
    ///   same PostgreSQL transaction, and the writer renews it when idle
    ///   (every quarter of the lease). A write whose node was fenced out
    ///   (its epoch moved on) changes nothing and fails with
    ///   [`LogError::Fenced`]. [`lease`](DecisionLog::lease) tells the
    ///   coordinator whether it may act.
    /// * **Takeover.** [`take_over`](DecisionLog::take_over) picks one node
    ///   whose lease expired with `SELECT … FOR UPDATE SKIP LOCKED` and, in
    ///   the same transaction, moves its undelivered decisions into this
    ///   node's schema, makes its transaction ids this node's, and bumps
    ///   its epoch: exactly one survivor gets each dead node, and the dead
    ///   node, should it come back, can write nothing more.
    /// * **Rejoining.** A node id that joins again (a restarted process)
    ///   bumps its epoch, which fences out any older process of that id,
    ///   and finds whatever of its part was not taken over.
    /// * **One process per node id:** a session advisory lock, as for
    ///   [`open`](Self::open).
    ///
    /// [`cluster`](Self::cluster) answers who owns which transaction and
    /// lists the nodes. A coordinator uses this log through
    /// [`TransactionCoordinator::join_cluster`](crate::TransactionCoordinator::join_cluster).
    ///
    /// # Errors
    ///
    /// As [`open_in_schema`](Self::open_in_schema), and
    /// [`LogError::InvalidNodeId`] for a node id that is not a plain
    /// lowercase identifier short enough to name its schema;
    /// [`LogError::InvalidLease`] for a lease under 200 ms or over an hour.
    pub async fn join_cluster(url: &str, options: ClusterOptions) -> Result<Self, LogError> {
        let cluster = options.schema.as_str();
        let node_schema = format!("{cluster}_{}", options.node_id);
        if !valid_name(cluster, 40) {
            return Err(LogError::InvalidSchema {
                schema: cluster.chars().take(80).collect(),
            });
        }
        if !valid_name(&options.node_id, 63) || node_schema.len() > 63 {
            return Err(LogError::InvalidNodeId {
                node: options.node_id.chars().take(80).collect(),
                max: 63 - cluster.len() - 1,
            });
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&options.lease) {
            return Err(LogError::InvalidLease {
                lease: options.lease,
                min: MIN_LEASE,
                max: MAX_LEASE,
            });
        }
        let connect = connect_options(url)?;
        let location = location_of(&connect, &node_schema);
        let lease = Lease::new(options.lease);
        let member = Member {
            cluster: cluster.to_owned(),
            node: options.node_id.clone(),
            address: options.address.clone(),
            epoch: 0,
            lease: lease.clone(),
        };
        let mut store = PgStore::connect(
            connect.clone(),
            &node_schema,
            location.clone(),
            Some(member),
        )
        .await?;
        store.schema().await?;
        store.join().await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(connect);
        let view = ClusterView(Arc::new(ViewInner {
            pool,
            location: location.clone(),
            node: options.node_id,
            lease,
            nodes_sql: format!(
                "SELECT node, address, state = 'live', epoch, \
                 GREATEST(EXTRACT(EPOCH FROM lease_expires - now()), 0)::float8 \
                 FROM {cluster}.dtxn_nodes ORDER BY node"
            ),
            owner_sql: format!(
                "SELECT n.node, n.address, n.state = 'live', n.epoch, \
                 GREATEST(EXTRACT(EPOCH FROM n.lease_expires - now()), 0)::float8 \
                 FROM {cluster}.dtxn_owners o JOIN {cluster}.dtxn_nodes n ON n.node = o.node \
                 WHERE o.nonce = $1"
            ),
            owners_sql: format!(
                "SELECT n.node, n.address, n.state = 'live', n.epoch, \
                 GREATEST(EXTRACT(EPOCH FROM n.lease_expires - now()), 0)::float8, o.nonce \
                 FROM {cluster}.dtxn_owners o JOIN {cluster}.dtxn_nodes n ON n.node = o.node"
            ),
        }));
        Ok(Self {
            writer: GroupCommit::start(store, location),
            cluster: Some(view),
        })
    }

    /// The cluster this log is part of (see
    /// [`join_cluster`](Self::join_cluster)); `None` for a log of one
    /// coordinator.
    pub fn cluster(&self) -> Option<&ClusterView> {
        self.cluster.as_ref()
    }
}

/// The least lease time [`PostgresLog::join_cluster`] accepts.
const MIN_LEASE: Duration = Duration::from_millis(200);
/// The longest: a dead node's decisions wait this long for a survivor.
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// How a coordinator joins a cluster on a shared PostgreSQL database
/// ([`PostgresLog::join_cluster`]).
///
/// ```
/// use std::time::Duration;
/// use dtxn::log::ClusterOptions;
///
/// let options = ClusterOptions::new("node1", "http://10.0.0.1:7000")
///     .lease(Duration::from_secs(5));
/// assert_eq!(options.schema, "dtxn");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// This node's id, unique in the cluster and stable across restarts:
    /// lowercase letters, digits and `_`, starting with a letter.
    pub node_id: String,
    /// Where the other nodes reach this one (its base URL), to forward
    /// requests about its transactions.
    pub address: String,
    /// How long the node owns its transactions without renewing its lease;
    /// a dead node's decisions are taken over this long (plus a takeover
    /// check interval) after its last renewal. Default
    /// [`DEFAULT_LEASE`](Self::DEFAULT_LEASE); from 200 ms to an hour.
    pub lease: Duration,
    /// The schema of the cluster's own tables (nodes and transaction id
    /// owners); each node's decisions go in `{schema}_{node_id}`. Default
    /// `dtxn`; at most 40 bytes.
    pub schema: String,
}

impl ClusterOptions {
    /// The default lease time: 10 s.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

    /// Node `node_id`, reached at `address`, with the default lease and
    /// schema.
    pub fn new(node_id: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            address: address.into(),
            lease: Self::DEFAULT_LEASE,
            schema: PostgresLog::DEFAULT_SCHEMA.to_owned(),
        }
    }

    /// Sets the lease time.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the cluster's schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

/// A node of a cluster, as the shared database knows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Its node id.
    pub node_id: String,
    /// Its base URL.
    pub address: String,
    /// Whether it is a member (joined, not taken over since).
    pub live: bool,
    /// Its epoch: bumped when it joins and when it is taken over.
    pub epoch: i64,
    /// How long its lease has left, by the database's clock (zero once
    /// expired).
    pub lease_left: Duration,
}

/// Read-only questions to a cluster's tables, on connections of their own
/// (not the log writer's): who owns a transaction, which nodes there are.
/// Clones share the connections.
#[derive(Clone)]
pub struct ClusterView(Arc<ViewInner>);

struct ViewInner {
    pool: PgPool,
    location: Arc<str>,
    node: String,
    lease: Lease,
    nodes_sql: String,
    owner_sql: String,
    owners_sql: String,
}

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterView")
            .field("node", &self.0.node)
            .field("lease", &self.0.lease)
            .finish_non_exhaustive()
    }
}

impl ClusterView {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.0.node
    }

    /// This node's lease.
    pub fn lease(&self) -> &Lease {
        &self.0.lease
    }

    /// The node that owns `txn` (the one whose incarnation issued it, or
    /// took that one over); `None` when no node of the cluster does.
    ///
    /// # Errors
    ///
    /// [`LogError::Backend`] when the database cannot be asked.
    pub async fn owner_of(&self, txn: TransactionId) -> Result<Option<NodeInfo>, LogError> {
        // bigint is signed: the nonce is stored bit for bit.
        let nonce = (txn.as_u128() >> 64) as u64 as i64;
        sqlx::query(&self.0.owner_sql)
            .bind(nonce)
            .fetch_optional(&self.0.pool)
            .await
            .map_err(|e| error(&self.0.location, e))?
            .map(|row| node_info(&row))
            .transpose()
            .map_err(|e| error(&self.0.location, e))
    }

    /// Every incarnation (the upper 64 bits of the transaction ids it
    /// issued) with the node that owns it now: one query for the whole
    /// table, which has a row per process start, for a cache.
    ///
    /// # Errors
    ///
    /// [`LogError::Backend`] when the database cannot be asked.
    pub async fn owners(&self) -> Result<Vec<(u64, NodeInfo)>, LogError> {
        sqlx::query(&self.0.owners_sql)
            .fetch_all(&self.0.pool)
            .await
            .map_err(|e| error(&self.0.location, e))?
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(5)? as u64, node_info(row)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| error(&self.0.location, e))
    }

    /// Every node the cluster has known, by node id.
    ///
    /// # Errors
    ///
    /// [`LogError::Backend`] when the database cannot be asked.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, LogError> {
        sqlx::query(&self.0.nodes_sql)
            .fetch_all(&self.0.pool)
            .await
            .map_err(|e| error(&self.0.location, e))?
            .iter()
            .map(node_info)
            .collect::<Result<_, _>>()
            .map_err(|e| error(&self.0.location, e))
    }
}

fn node_info(row: &sqlx::postgres::PgRow) -> Result<NodeInfo, sqlx::Error> {
    let left: f64 = row.try_get(4)?;
    Ok(NodeInfo {
        node_id: row.try_get(0)?,
        address: row.try_get(1)?,
        live: row.try_get(2)?,
        epoch: row.try_get(3)?,
        lease_left: Duration::try_from_secs_f64(left).unwrap_or_default(),
    })
}

impl DecisionLog for PostgresLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        self.writer.open(incarnation)
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        self.writer.log_commit(record)
    }

    fn log_end(&self, txn: TransactionId) {
        self.writer.log_end(txn);
    }

    fn lease(&self) -> Option<Lease> {
        self.cluster.as_ref().map(|view| view.lease().clone())
    }

    fn take_over(&self) -> LogFuture<Option<Takeover>> {
        if self.cluster.is_none() {
            return Box::pin(std::future::ready(Ok(None)));
        }
        self.writer.take_over()
    }
}

/// Whether `name` is a plain lowercase identifier of at most `max` bytes
/// (safe to put in SQL as a schema name, or part of one).
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn connect_options(url: &str) -> Result<PgConnectOptions, LogError> {
    PgConnectOptions::from_str(url).map_err(|e| LogError::Backend {
        // The URL may hold a password: not echoed.
        message: format!("an invalid PostgreSQL URL: {}", redact(&e.to_string(), url)),
    })
}

fn location_of(options: &PgConnectOptions, schema: &str) -> Arc<str> {
    format!(
        "postgres://{}:{}/{} schema {schema}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
    .into()
}

/// This coordinator's membership of a cluster.
struct Member {
    /// The cluster's schema.
    cluster: String,
    node: String,
    address: String,
    /// The epoch this process joined with; a write finding another one
    /// was fenced out.
    epoch: i64,
    lease: Lease,
}

impl Member {
    /// `UPDATE` renewing the lease, matching no row once fenced out.
    fn renew_sql(&self) -> String {
        format!(
            "UPDATE {}.dtxn_nodes SET lease_expires = now() + make_interval(secs => $3) \
             WHERE node = $1 AND epoch = $2 AND state = 'live'",
            self.cluster
        )
    }

    fn fenced(&self) -> LogError {
        self.lease.lose();
        LogError::Fenced {
            node: self.node.clone(),
        }
    }
}

struct PgStore {
    /// `None` after the connection broke, until the next operation opens
    /// another.
    conn: Option<PgConnection>,
    options: PgConnectOptions,
    location: Arc<str>,
    schema: String,
    insert: String,
    delete: String,
    member: Option<Member>,
}

/// The value of an error that says the connection is unusable.
fn broken(e: &sqlx::Error) -> bool {
    !matches!(
        e,
        sqlx::Error::Database(_) | sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. }
    )
}

impl PgStore {
    /// Connects and takes the schema's advisory lock.
    async fn connect(
        options: PgConnectOptions,
        schema: &str,
        location: Arc<str>,
        member: Option<Member>,
    ) -> Result<Self, LogError> {
        let mut store = Self {
            conn: None,
            options,
            location,
            schema: schema.to_owned(),
            insert: format!(
                "INSERT INTO {schema}.dtxn_segments (id, records) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET records = EXCLUDED.records"
            ),
            delete: format!("DELETE FROM {schema}.dtxn_segments WHERE id = ANY($1::bigint[])"),
            member,
        };
        store.conn().await?;
        Ok(store)
    }

    /// The connection, opened again (with the advisory lock) if it broke:
    /// a PostgreSQL restart is ridden out.
    async fn conn(&mut self) -> Result<&mut PgConnection, LogError> {
        if self.conn.is_none() {
            let mut conn = PgConnection::connect_with(&self.options)
                .await
                .map_err(|e| error(&self.location, e))?;
            let locked: bool = sqlx::query("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(format!("dtxn decision log {}", self.schema))
                .fetch_one(&mut conn)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| error(&self.location, e))?;
            if !locked {
                return Err(LogError::Locked {
                    location: self.location.to_string(),
                });
            }
            sqlx::query("SET synchronous_commit = on")
                .execute(&mut conn)
                .await
                .map_err(|e| error(&self.location, e))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(LogError::Closed)
    }

    /// `e` as a log error; forgets a broken connection.
    fn error(&mut self, e: sqlx::Error) -> LogError {
        if broken(&e) {
            self.conn = None;
        }
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
        ];
        for statement in &statements {
            let conn = self.conn().await?;
            let result = sqlx::query(statement).execute(conn).await;
            result.map_err(|e| self.error(e))?;
        }
        let conn = self.conn().await?;
        let found: Result<i64, _> = sqlx::query(&format!(
            "SELECT value FROM {s}.dtxn_log_meta WHERE key = 'format'"
        ))
        .fetch_one(conn)
        .await
        .and_then(|row| row.try_get(0));
        let found = found.map_err(|e| self.error(e))?;
        if found > FORMAT {
            return Err(LogError::NewerFormat {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT as u32,
            });
        }
        if found < FORMAT {
            let upgraded = self.upgrade().await;
            upgraded.map_err(|e| self.error(e))??;
        }
        Ok(())
    }

    /// Moves the decisions of a format-1 log (a row per decision) into
    /// one segment, in one transaction.
    async fn upgrade(&mut self) -> Result<Result<(), LogError>, sqlx::Error> {
        let s = self.schema.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT txn, participants FROM {s}.dtxn_commits ORDER BY txn"
        ))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(Vec<u8>, Vec<u8>)>, sqlx::Error>>()?;
        if !rows.is_empty() {
            let segment = match group::segment_of_rows(rows) {
                Ok(segment) => segment,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query(&format!(
                "INSERT INTO {s}.dtxn_segments (id, records) VALUES (0, $1)"
            ))
            .bind(segment)
            .execute(&mut *tx)
            .await?;
        }
        for statement in [
            format!("DROP TABLE {s}.dtxn_commits"),
            format!("UPDATE {s}.dtxn_log_meta SET value = {FORMAT} WHERE key = 'format'"),
        ] {
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        tx.commit().await.map(Ok)
    }

    /// Registers this node in its cluster (creating the cluster's tables
    /// if need be) with a new epoch and a fresh lease.
    async fn join(&mut self) -> Result<(), LogError> {
        let Some(member) = &self.member else {
            return Ok(());
        };
        let c = member.cluster.clone();
        let (node, address) = (member.node.clone(), member.address.clone());
        let lease = member.lease.clone();
        let conn = self.conn().await?;
        let sent = Instant::now();
        let joined = async {
            let mut tx = conn.begin().await?;
            // Nodes joining at once must not race to create the tables.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("dtxn cluster {c}"))
                .execute(&mut *tx)
                .await?;
            for statement in [
                format!("CREATE SCHEMA IF NOT EXISTS {c}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {c}.dtxn_nodes (node text PRIMARY KEY, \
                     address text NOT NULL, epoch bigint NOT NULL, state text NOT NULL, \
                     lease_expires timestamptz NOT NULL, taken_by text)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {c}.dtxn_owners (nonce bigint PRIMARY KEY, node text NOT NULL)"
                ),
                format!("CREATE INDEX IF NOT EXISTS dtxn_owners_node ON {c}.dtxn_owners (node)"),
            ] {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            let epoch: i64 = sqlx::query(&format!(
                "INSERT INTO {c}.dtxn_nodes AS n (node, address, epoch, state, lease_expires) \
                 VALUES ($1, $2, 1, 'live', now() + make_interval(secs => $3)) \
                 ON CONFLICT (node) DO UPDATE SET address = EXCLUDED.address, \
                 epoch = n.epoch + 1, state = 'live', lease_expires = EXCLUDED.lease_expires, \
                 taken_by = NULL RETURNING epoch"
            ))
            .bind(&node)
            .bind(&address)
            .bind(lease.duration().as_secs_f64())
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
            Ok::<_, sqlx::Error>(epoch)
        }
        .await;
        let epoch = joined.map_err(|e| self.error(e))?;
        lease.renewed(sent);
        if let Some(member) = &mut self.member {
            member.epoch = epoch;
        }
        tracing::info!(node = %node, epoch, "joined the cluster");
        Ok(())
    }

    /// Renews the lease in `tx` (this node's row, if its epoch is still
    /// this process's); `false` when fenced out.
    async fn renew_in(
        member: &Member,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(&member.renew_sql())
            .bind(&member.node)
            .bind(member.epoch)
            .bind(member.lease.duration().as_secs_f64())
            .execute(&mut **tx)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn write_all(
        &mut self,
        put: &[(u64, &[u8])],
        delete: &[u64],
    ) -> Result<Result<(), LogError>, sqlx::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let sent = Instant::now();
        let mut tx = conn.begin().await?;
        if let Some(member) = &self.member {
            if member.lease.is_lost() || !Self::renew_in(member, &mut tx).await? {
                return Ok(Err(member.fenced()));
            }
        }
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
        tx.commit().await?;
        if let Some(member) = &self.member {
            member.lease.renewed(sent);
        }
        Ok(Ok(()))
    }

    async fn read(&mut self, incarnation: u64) -> Result<Stored, sqlx::Error> {
        let s = self.schema.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        // bigint is signed: the nonce is stored bit for bit.
        let incarnations = match &self.member {
            // In a cluster, the ids a node answers for are in the
            // cluster's table of owners (its own, and those it took over).
            Some(member) => {
                let c = &member.cluster;
                sqlx::query(&format!(
                    "INSERT INTO {c}.dtxn_owners (nonce, node) VALUES ($1, $2) \
                     ON CONFLICT (nonce) DO NOTHING"
                ))
                .bind(incarnation as i64)
                .bind(&member.node)
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!(
                    "SELECT nonce FROM {c}.dtxn_owners WHERE node = $1"
                ))
                .bind(&member.node)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "INSERT INTO {s}.dtxn_incarnations (nonce) VALUES ($1) ON CONFLICT DO NOTHING"
                ))
                .bind(incarnation as i64)
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!("SELECT nonce FROM {s}.dtxn_incarnations"))
                    .fetch_all(&mut *conn)
                    .await?
            }
        }
        .iter()
        .map(|row| row.try_get::<i64, _>(0).map(|n| n as u64))
        .collect::<Result<Vec<_>, _>>()?;
        let segments = sqlx::query(&format!("SELECT id, records FROM {s}.dtxn_segments"))
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

    /// See [`Store::take_over`].
    async fn take_over_in<F>(
        &mut self,
        adopt: F,
    ) -> Result<Result<Option<Taken>, LogError>, sqlx::Error>
    where
        F: FnOnce(Vec<(u64, Vec<u8>)>) -> Result<Option<(u64, Vec<u8>)>, LogError> + Send,
    {
        let Some(member) = &self.member else {
            return Ok(Ok(None));
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let c = &member.cluster;
        let sent = Instant::now();
        let mut tx = conn.begin().await?;
        if member.lease.is_lost() || !Self::renew_in(member, &mut tx).await? {
            return Ok(Err(member.fenced()));
        }
        let dead: Option<String> = sqlx::query(&format!(
            "SELECT node FROM {c}.dtxn_nodes WHERE state = 'live' AND node <> $1 \
             AND lease_expires < now() ORDER BY lease_expires LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(&member.node)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
        let Some(dead) = dead else {
            tx.commit().await?;
            member.lease.renewed(sent);
            return Ok(Ok(None));
        };
        // The name comes from the database: checked before it is put in SQL.
        let theirs = format!("{c}_{dead}");
        if !valid_name(&dead, 63) || theirs.len() > 63 {
            return Ok(Err(LogError::Corrupt {
                detail: format!("a node id that cannot name a schema: {dead:?}"),
            }));
        }
        let segments = sqlx::query(&format!("SELECT id, records FROM {theirs}.dtxn_segments"))
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)? as u64, row.try_get(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let adopted = match adopt(segments) {
            Ok(adopted) => adopted,
            Err(e) => return Ok(Err(e)),
        };
        if let Some((id, bytes)) = adopted {
            sqlx::query(&self.insert)
                .bind(vec![id as i64])
                .bind(vec![bytes])
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!("DELETE FROM {theirs}.dtxn_segments"))
            .execute(&mut *tx)
            .await?;
        let incarnations = sqlx::query(&format!(
            "UPDATE {c}.dtxn_owners SET node = $1 WHERE node = $2 RETURNING nonce"
        ))
        .bind(&member.node)
        .bind(&dead)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>(0).map(|n| n as u64))
        .collect::<Result<Vec<_>, _>>()?;
        sqlx::query(&format!(
            "UPDATE {c}.dtxn_nodes SET state = 'taken', epoch = epoch + 1, taken_by = $1 \
             WHERE node = $2"
        ))
        .bind(&member.node)
        .bind(&dead)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        member.lease.renewed(sent);
        Ok(Ok(Some(Taken {
            node: dead,
            incarnations,
        })))
    }

    /// See [`Store::renew`].
    async fn renew_alone(&mut self) -> Result<Result<(), LogError>, sqlx::Error> {
        let Some(member) = &self.member else {
            return Ok(Ok(()));
        };
        if member.lease.is_lost() {
            return Ok(Err(member.fenced()));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let sent = Instant::now();
        let mut tx = conn.begin().await?;
        if !Self::renew_in(member, &mut tx).await? {
            return Ok(Err(member.fenced()));
        }
        tx.commit().await?;
        member.lease.renewed(sent);
        Ok(Ok(()))
    }
}

impl Store for PgStore {
    async fn open(&mut self, incarnation: u64) -> Result<Stored, LogError> {
        self.conn().await?;
        let read = self.read(incarnation).await;
        read.map_err(|e| self.error(e))
    }

    async fn write(&mut self, put: &[(u64, &[u8])], delete: &[u64]) -> Result<(), LogError> {
        self.conn().await?;
        let result = self.write_all(put, delete).await;
        result.map_err(|e| self.error(e))?
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            if let Err(e) = conn.close().await {
                tracing::warn!(log = %self.location, error = %e, "closing the decision log failed");
            }
        }
    }

    fn renew_every(&self) -> Option<Duration> {
        self.member
            .as_ref()
            .map(|member| member.lease.duration() / 4)
    }

    async fn renew(&mut self) -> Result<(), LogError> {
        self.conn().await?;
        let result = self.renew_alone().await;
        result.map_err(|e| self.error(e))?
    }

    async fn take_over<F>(&mut self, adopt: F) -> Result<Option<Taken>, LogError>
    where
        F: FnOnce(Vec<(u64, Vec<u8>)>) -> Result<Option<(u64, Vec<u8>)>, LogError> + Send,
    {
        self.conn().await?;
        let result = self.take_over_in(adopt).await;
        result.map_err(|e| self.error(e))?
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
