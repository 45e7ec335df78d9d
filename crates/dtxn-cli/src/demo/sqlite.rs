//! The services of `demo --http`: the same three services as
//! [`super::services`], with their state in SQLite behind the
//! [`dtxn_participant`] barrier, learning what to do from the payload
//! each participant is registered with.
//!
//! Each service is a [`Branch`] over its own SQLite file (WAL, a busy
//! timeout) in a temporary directory, wrapped in [`Guarded`] (one database
//! transaction per call, duplicates skipped, empty rollbacks recorded,
//! suspended prepares refused) and in [`Faulty`], which injects the fault
//! the payload names around the guarded call: an injected panic or hang
//! happens after the call's database transaction committed, as a crash or
//! a lost answer would.
//!
//! | service | payload | prepare | commit | rollback |
//! |---|---|---|---|---|
//! | `UserService` | `{"username"}` | a row in `pending_users` (username unique over `accounts` and `pending_users`) | moves it to `accounts` | deletes it |
//! | `ProductService` | `{"product"}` | `stock.on_hand - 1`, a row in `reserved_units` | moves it to `given_units` | deletes it, `on_hand + 1` |
//! | `OrderService` | `{"username","product"}` | a row in `pending_orders` | moves it to `orders` | deletes it |
//!
//! Each payload may also carry `"fault"` (a [`FaultKind`], kebab-case),
//! fired on the first attempt of its phase only.
//!
//! [`SqliteServices::read_back`] reads the committed and pending rows back
//! into the [`Stores`] the consistency check takes. `accounts`,
//! `given_units` and `orders` are ledgers keyed by a row id, not by the
//! transaction, so a commit applied twice would leave two rows: the read
//! back reports that as a protocol violation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dtxn::{
    async_trait, CallContext, Participant, ParticipantError, PreparedResult, TransactionId,
};
use dtxn_participant::{BarrierError, Branch, Guarded};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::check::Stores;
use super::services::{
    FaultTally, Inventory, Order, OrderBook, StockLine, UserStore, BLOCKED_USERNAMES, HANG,
    INJECTED,
};
use super::workload::{FaultKind, ServiceKind, SignUp, CATALOG};

/// Connections per service's pool. SQLite has one writer at a time and
/// every call writes (the barrier row), so one connection queues the
/// calls in the pool instead of in SQLite's busy handler, which sleeps:
/// measured on 2 cores, 3000 sign-ups took 6.7 s with 1 connection, 7.9 s
/// with 2 and 8.6 s with 4.
const POOL_CONNECTIONS: u32 = 1;

/// How long a connection waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The user service's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPayload {
    /// The username to create.
    pub username: String,
    /// The fault to inject, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
}

/// The product service's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPayload {
    /// The product to hand out, an index into [`CATALOG`].
    pub product: usize,
    /// The fault to inject, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
}

/// The order service's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPayload {
    /// Who the order is for.
    pub username: String,
    /// What it contains, an index into [`CATALOG`].
    pub product: usize,
    /// The fault to inject, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
}

/// The JSON payloads of `signup` for the three services, in
/// [`ServiceKind::ALL`] order.
///
/// # Errors
///
/// If serialization fails (it does not for these types).
pub fn payloads(signup: &SignUp) -> Result<[String; 3], serde_json::Error> {
    let fault = |service: ServiceKind| {
        signup
            .fault
            .filter(|f| f.service == service)
            .map(|f| f.kind)
    };
    Ok([
        serde_json::to_string(&UserPayload {
            username: signup.username.clone(),
            fault: fault(ServiceKind::Users),
        })?,
        serde_json::to_string(&StockPayload {
            product: signup.product,
            fault: fault(ServiceKind::Products),
        })?,
        serde_json::to_string(&OrderPayload {
            username: signup.username.clone(),
            product: signup.product,
            fault: fault(ServiceKind::Orders),
        })?,
    ])
}

/// The payload of `cx` as a `T`, or why not (a no vote's reason).
fn payload<T: DeserializeOwned>(cx: &CallContext) -> Result<T, String> {
    let payload = cx.payload().ok_or_else(|| "no payload".to_owned())?;
    serde_json::from_slice(payload.as_bytes()).map_err(|e| format!("invalid payload ({e})"))
}

/// Why the SQLite state could not be set up, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The temporary directory could not be created or removed.
    #[error("state directory: {0}")]
    Dir(#[from] std::io::Error),
    /// A database step failed.
    #[error("state database: {0}")]
    Database(#[from] sqlx::Error),
    /// The barrier table could not be created.
    #[error("state database: {0}")]
    Barrier(#[from] BarrierError),
}

/// Protocol violations the services saw (commit without a reservation,
/// rollback after commit). Kept in memory: the call's database
/// transaction is rolled back with the error.
#[derive(Debug, Clone, Default)]
pub struct Anomalies(Arc<Mutex<Vec<String>>>);

impl Anomalies {
    fn report(&self, service: ServiceKind, txn: TransactionId, what: &str) -> ParticipantError {
        let message = format!("{service}: {what} (transaction {txn})");
        tracing::error!(%txn, %service, "{what}");
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message.clone());
        ParticipantError::permanent(message)
    }

    fn list(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A database error inside a branch: transient, so the coordinator retries.
fn db_error(service: ServiceKind) -> impl Fn(sqlx::Error) -> ParticipantError {
    move |e| ParticipantError::transient(format!("{service} database: {e}"))
}

/// The user service: usernames in `pending_users`, accounts in `accounts`.
#[derive(Debug, Clone, Default)]
pub struct UsersBranch {
    anomalies: Anomalies,
}

const USERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    txn TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS accounts_txn ON accounts (txn);
CREATE TABLE IF NOT EXISTS pending_users (
    txn TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE
);
";

#[async_trait]
impl Branch<Sqlite> for UsersBranch {
    fn name(&self) -> &str {
        ServiceKind::Users.name()
    }

    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        let db = db_error(ServiceKind::Users);
        let request: UserPayload = match payload(cx) {
            Ok(request) => request,
            Err(reason) => return Ok(PreparedResult::Aborted(reason)),
        };
        let name = request.username.as_str();
        if name.is_empty() {
            return Ok(PreparedResult::Aborted(
                "invalid user (empty username)".to_owned(),
            ));
        }
        if BLOCKED_USERNAMES.contains(&name) {
            return Ok(PreparedResult::Aborted(format!(
                "invalid user (blocked username {name:?})"
            )));
        }
        // One statement: reserved unless an account or a reservation
        // (the unique username of `pending_users`) has the name.
        let reserved = sqlx::query(
            "INSERT INTO pending_users (txn, username)
             SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE username = ?2)
             ON CONFLICT DO NOTHING",
        )
        .bind(cx.transaction_id().to_string())
        .bind(name)
        .execute(&mut **tx)
        .await
        .map_err(&db)?
        .rows_affected();
        if reserved == 0 {
            return Ok(PreparedResult::Aborted(format!(
                "username taken ({name:?})"
            )));
        }
        Ok(PreparedResult::Ready)
    }

    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        apply_reservation(
            tx,
            cx.transaction_id(),
            ServiceKind::Users,
            &self.anomalies,
            (
                "INSERT INTO accounts (txn, username)
             SELECT txn, username FROM pending_users WHERE txn = ?",
                "DELETE FROM pending_users WHERE txn = ?",
            ),
            "commit without a reserved username",
        )
        .await
    }

    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        let txn = cx.transaction_id();
        let db = db_error(ServiceKind::Users);
        let deleted = sqlx::query("DELETE FROM pending_users WHERE txn = ?")
            .bind(txn.to_string())
            .execute(&mut **tx)
            .await
            .map_err(&db)?
            .rows_affected();
        if deleted == 0 && exists(tx, "SELECT 1 FROM accounts WHERE txn = ?", txn).await? {
            return Err(self.anomalies.report(
                ServiceKind::Users,
                txn,
                "rollback of a committed account",
            ));
        }
        Ok(())
    }
}

/// Commits the reservation of `txn`: moves its row with `statements`
/// (insert into the ledger, delete the reservation). A commit without a
/// reservation is a protocol violation, reported as `missing`.
async fn apply_reservation(
    tx: &mut Transaction<'static, Sqlite>,
    txn: TransactionId,
    service: ServiceKind,
    anomalies: &Anomalies,
    (insert, delete): (&str, &str),
    missing: &str,
) -> Result<(), ParticipantError> {
    if move_row(tx, txn, insert, delete)
        .await
        .map_err(db_error(service))?
    {
        Ok(())
    } else {
        Err(anomalies.report(service, txn, missing))
    }
}

/// Copies the row of `txn` with `insert` and deletes it with `delete`;
/// whether there was one.
async fn move_row(
    tx: &mut Transaction<'static, Sqlite>,
    txn: TransactionId,
    insert: &str,
    delete: &str,
) -> Result<bool, sqlx::Error> {
    let txn = txn.to_string();
    let copied = sqlx::query(insert)
        .bind(&txn)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query(delete).bind(&txn).execute(&mut **tx).await?;
    Ok(copied > 0)
}

/// Whether `query` (one `?` for the transaction id) finds a row.
async fn exists(
    tx: &mut Transaction<'static, Sqlite>,
    query: &str,
    txn: TransactionId,
) -> Result<bool, ParticipantError> {
    let found: Option<(i64,)> = sqlx::query_as(query)
        .bind(txn.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| ParticipantError::transient(format!("database: {e}")))?;
    Ok(found.is_some())
}

/// The product service: stock in `stock`, reserved units in
/// `reserved_units`, units given out in `given_units`.
#[derive(Debug, Clone, Default)]
pub struct ProductsBranch {
    anomalies: Anomalies,
}

const PRODUCTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    product INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    initial INTEGER NOT NULL,
    on_hand INTEGER NOT NULL CHECK (on_hand >= 0)
);
CREATE TABLE IF NOT EXISTS reserved_units (
    txn TEXT PRIMARY KEY,
    product INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS given_units (
    id INTEGER PRIMARY KEY,
    txn TEXT NOT NULL,
    product INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS given_units_txn ON given_units (txn);
";

#[async_trait]
impl Branch<Sqlite> for ProductsBranch {
    fn name(&self) -> &str {
        ServiceKind::Products.name()
    }

    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        let db = db_error(ServiceKind::Products);
        let request: StockPayload = match payload(cx) {
            Ok(request) => request,
            Err(reason) => return Ok(PreparedResult::Aborted(reason)),
        };
        let Ok(product) = i64::try_from(request.product) else {
            return Ok(PreparedResult::Aborted(format!(
                "unknown product (#{})",
                request.product
            )));
        };
        let taken =
            sqlx::query("UPDATE stock SET on_hand = on_hand - 1 WHERE product = ? AND on_hand > 0")
                .bind(product)
                .execute(&mut **tx)
                .await
                .map_err(&db)?
                .rows_affected();
        if taken == 0 {
            let line: Option<(String,)> =
                sqlx::query_as("SELECT name FROM stock WHERE product = ?")
                    .bind(product)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(&db)?;
            return Ok(PreparedResult::Aborted(match line {
                Some((name,)) => format!("out of stock ({name})"),
                None => format!("unknown product (#{product})"),
            }));
        }
        sqlx::query("INSERT INTO reserved_units (txn, product) VALUES (?, ?)")
            .bind(cx.transaction_id().to_string())
            .bind(product)
            .execute(&mut **tx)
            .await
            .map_err(&db)?;
        Ok(PreparedResult::Ready)
    }

    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        apply_reservation(
            tx,
            cx.transaction_id(),
            ServiceKind::Products,
            &self.anomalies,
            (
                "INSERT INTO given_units (txn, product)
             SELECT txn, product FROM reserved_units WHERE txn = ?",
                "DELETE FROM reserved_units WHERE txn = ?",
            ),
            "commit without a reserved unit",
        )
        .await
    }

    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        let txn = cx.transaction_id();
        let db = db_error(ServiceKind::Products);
        let reserved: Option<(i64,)> =
            sqlx::query_as("DELETE FROM reserved_units WHERE txn = ? RETURNING product")
                .bind(txn.to_string())
                .fetch_optional(&mut **tx)
                .await
                .map_err(&db)?;
        match reserved {
            Some((product,)) => {
                sqlx::query("UPDATE stock SET on_hand = on_hand + 1 WHERE product = ?")
                    .bind(product)
                    .execute(&mut **tx)
                    .await
                    .map_err(&db)?;
            }
            None if exists(tx, "SELECT 1 FROM given_units WHERE txn = ?", txn).await? => {
                return Err(self.anomalies.report(
                    ServiceKind::Products,
                    txn,
                    "rollback of a unit already given out",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// The order service: pending orders in `pending_orders`, orders in
/// `orders`.
#[derive(Debug, Clone, Default)]
pub struct OrdersBranch {
    anomalies: Anomalies,
}

const ORDERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    txn TEXT NOT NULL,
    username TEXT NOT NULL,
    product INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_txn ON orders (txn);
CREATE TABLE IF NOT EXISTS pending_orders (
    txn TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    product INTEGER NOT NULL
);
";

#[async_trait]
impl Branch<Sqlite> for OrdersBranch {
    fn name(&self) -> &str {
        ServiceKind::Orders.name()
    }

    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        let request: OrderPayload = match payload(cx) {
            Ok(request) => request,
            Err(reason) => return Ok(PreparedResult::Aborted(reason)),
        };
        let Ok(product) = i64::try_from(request.product) else {
            return Ok(PreparedResult::Aborted(format!(
                "unknown product (#{})",
                request.product
            )));
        };
        sqlx::query("INSERT INTO pending_orders (txn, username, product) VALUES (?, ?, ?)")
            .bind(cx.transaction_id().to_string())
            .bind(&request.username)
            .bind(product)
            .execute(&mut **tx)
            .await
            .map_err(db_error(ServiceKind::Orders))?;
        Ok(PreparedResult::Ready)
    }

    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        apply_reservation(
            tx,
            cx.transaction_id(),
            ServiceKind::Orders,
            &self.anomalies,
            (
                "INSERT INTO orders (txn, username, product)
             SELECT txn, username, product FROM pending_orders WHERE txn = ?",
                "DELETE FROM pending_orders WHERE txn = ?",
            ),
            "commit without a pending order",
        )
        .await
    }

    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        let txn = cx.transaction_id();
        let deleted = sqlx::query("DELETE FROM pending_orders WHERE txn = ?")
            .bind(txn.to_string())
            .execute(&mut **tx)
            .await
            .map_err(db_error(ServiceKind::Orders))?
            .rows_affected();
        if deleted == 0 && exists(tx, "SELECT 1 FROM orders WHERE txn = ?", txn).await? {
            return Err(self.anomalies.report(
                ServiceKind::Orders,
                txn,
                "rollback of a committed order",
            ));
        }
        Ok(())
    }
}

/// A participant that injects the fault named in its payload's `"fault"`
/// around `inner`, on the first attempt of the phase it belongs to:
///
/// * `prepare-error`: votes to abort without calling `inner`;
/// * `prepare-panic`, `prepare-hang`: after `inner` voted `Ready` (its
///   reservation committed), panics or hangs instead of answering;
/// * `commit-transient`: fails with a transient error without calling
///   `inner`;
/// * `commit-panic`: after `inner` committed, panics instead of answering
///   (the retry finds the commit done: the barrier skips the duplicate).
pub struct Faulty<P> {
    inner: P,
    tally: Arc<FaultTally>,
}

impl<P> fmt::Debug for Faulty<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &std::any::type_name::<P>())
            .finish_non_exhaustive()
    }
}

impl<P: Participant> Faulty<P> {
    /// `inner`, injecting faults and counting them in `tally`.
    pub fn new(inner: P, tally: Arc<FaultTally>) -> Self {
        Self { inner, tally }
    }

    /// Whether to inject `kind` into this call now (and counts it if so).
    fn take(&self, cx: &CallContext, kind: FaultKind) -> bool {
        #[derive(Deserialize)]
        struct Planned {
            #[serde(default)]
            fault: Option<FaultKind>,
        }
        if cx.attempt() != 1 {
            return false;
        }
        let planned = payload::<Planned>(cx).ok().and_then(|p| p.fault);
        if planned != Some(kind) {
            return false;
        }
        self.tally.record(kind);
        true
    }
}

#[async_trait]
impl<P: Participant> Participant for Faulty<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.inner.prepare(txn).await
    }

    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        self.inner.try_prepare(txn).await
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.inner.commit(txn).await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.inner.rollback(txn).await
    }

    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        if self.take(cx, FaultKind::PrepareError) {
            return Ok(PreparedResult::Aborted(format!(
                "{INJECTED}: storage unavailable"
            )));
        }
        let vote = self.inner.prepare_with(cx).await?;
        if vote == PreparedResult::Ready {
            if self.take(cx, FaultKind::PreparePanic) {
                panic!("{INJECTED}: panic in prepare");
            }
            if self.take(cx, FaultKind::PrepareHang) {
                tokio::time::sleep(HANG).await;
            }
        }
        Ok(vote)
    }

    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        if self.take(cx, FaultKind::CommitTransient) {
            return Err(ParticipantError::transient(format!(
                "{INJECTED}: write conflict, retry"
            )));
        }
        self.inner.commit_with(cx).await?;
        if self.take(cx, FaultKind::CommitPanic) {
            panic!("{INJECTED}: panic in commit after applying");
        }
        Ok(())
    }

    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.inner.rollback_with(cx).await
    }
}

/// The three services' databases, in a temporary directory removed by
/// [`close`](Self::close) (or on drop).
#[derive(Debug)]
pub struct SqliteServices {
    dir: tempfile::TempDir,
    users: SqlitePool,
    products: SqlitePool,
    orders: SqlitePool,
    anomalies: Anomalies,
    tally: Arc<FaultTally>,
}

/// Opens (creating) the SQLite file at `path`.
async fn open_pool(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL loses no committed transaction on a process
        // crash (only on a power cut), and commits without an fsync.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT);
    SqlitePoolOptions::new()
        .max_connections(POOL_CONNECTIONS)
        .connect_with(options)
        .await
}

impl SqliteServices {
    /// Creates a temporary directory with one database per service, the
    /// product database holding `stock[i]` units of [`CATALOG`] product
    /// `i`.
    ///
    /// # Errors
    ///
    /// When the directory or a database cannot be created.
    pub async fn open(stock: &[u64]) -> Result<Self, StateError> {
        let dir = tempfile::Builder::new().prefix("dtxn-demo-").tempdir()?;
        let users = open_pool(&dir.path().join("users.db")).await?;
        let products = open_pool(&dir.path().join("products.db")).await?;
        let orders = open_pool(&dir.path().join("orders.db")).await?;
        sqlx::raw_sql(USERS_SCHEMA).execute(&users).await?;
        sqlx::raw_sql(PRODUCTS_SCHEMA).execute(&products).await?;
        sqlx::raw_sql(ORDERS_SCHEMA).execute(&orders).await?;
        let mut tx = products.begin().await?;
        for (index, (product, &units)) in CATALOG.iter().zip(stock).enumerate() {
            let units = i64::try_from(units).unwrap_or(i64::MAX);
            sqlx::query("INSERT INTO stock (product, name, initial, on_hand) VALUES (?, ?, ?, ?)")
                .bind(index as i64)
                .bind(product.name)
                .bind(units)
                .bind(units)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Self {
            dir,
            users,
            products,
            orders,
            anomalies: Anomalies::default(),
            tally: Arc::new(FaultTally::default()),
        })
    }

    /// The three services as participants (guarded by the barrier, with
    /// fault injection), in [`ServiceKind::ALL`] order.
    ///
    /// # Errors
    ///
    /// When a barrier table cannot be created.
    pub async fn participants(&self) -> Result<Vec<Arc<dyn Participant>>, StateError> {
        let anomalies = &self.anomalies;
        let users = Guarded::with_table(
            self.users.clone(),
            UsersBranch {
                anomalies: anomalies.clone(),
            },
        )
        .await?;
        let products = Guarded::with_table(
            self.products.clone(),
            ProductsBranch {
                anomalies: anomalies.clone(),
            },
        )
        .await?;
        let orders = Guarded::with_table(
            self.orders.clone(),
            OrdersBranch {
                anomalies: anomalies.clone(),
            },
        )
        .await?;
        let tally = &self.tally;
        Ok(vec![
            Arc::new(Faulty::new(users, Arc::clone(tally))),
            Arc::new(Faulty::new(products, Arc::clone(tally))),
            Arc::new(Faulty::new(orders, Arc::clone(tally))),
        ])
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<&'static str, usize> {
        self.tally.counts()
    }

    /// Reads the committed and pending state of the three databases back
    /// into [`Stores`]. A transaction id that does not parse, and a
    /// transaction found twice in a ledger (a commit applied twice), are
    /// reported among the anomalies, with those the services saw.
    ///
    /// # Errors
    ///
    /// When a query fails.
    pub async fn read_back(&self) -> Result<Stores, StateError> {
        let mut anomalies = self.anomalies.list();
        let mut txn_of = |service: ServiceKind, text: &str| -> Option<TransactionId> {
            let parsed = text.parse().ok();
            if parsed.is_none() {
                anomalies.push(format!("{service}: unreadable transaction id {text:?}"));
            }
            parsed
        };
        let mut found: Vec<String> = Vec::new();

        let mut users = UserStore::default();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT txn, username FROM accounts ORDER BY id")
                .fetch_all(&self.users)
                .await?;
        for (txn, name) in rows {
            let Some(txn) = txn_of(ServiceKind::Users, &txn) else {
                continue;
            };
            if users.created.insert(txn, name.clone()).is_some() {
                found.push(format!("UserService: {txn} created its account twice"));
            }
            users.users.insert(name, txn);
        }
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT txn, username FROM pending_users")
            .fetch_all(&self.users)
            .await?;
        for (txn, name) in rows {
            let Some(txn) = txn_of(ServiceKind::Users, &txn) else {
                continue;
            };
            users.reserved_names.insert(name.clone());
            users.pending.insert(txn, name);
        }

        let mut inventory = Inventory::new(&[]);
        let rows: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT product, initial, on_hand FROM stock ORDER BY product")
                .fetch_all(&self.products)
                .await?;
        for (product, initial, on_hand) in rows {
            let index = usize::try_from(product).ok();
            if index != Some(inventory.lines.len()) {
                found.push(format!("ProductService: unexpected product #{product}"));
                continue;
            }
            inventory.lines.push(StockLine {
                name: index
                    .and_then(|i| CATALOG.get(i))
                    .map_or("unknown", |p| p.name),
                initial: u64::try_from(initial).unwrap_or(0),
                on_hand: u64::try_from(on_hand).unwrap_or(0),
            });
        }
        let product_of = |product: i64| usize::try_from(product).unwrap_or(usize::MAX);
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT txn, product FROM given_units ORDER BY id")
                .fetch_all(&self.products)
                .await?;
        for (txn, product) in rows {
            let Some(txn) = txn_of(ServiceKind::Products, &txn) else {
                continue;
            };
            if inventory.given.insert(txn, product_of(product)).is_some() {
                found.push(format!("ProductService: {txn} was given two units"));
            }
        }
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT txn, product FROM reserved_units")
            .fetch_all(&self.products)
            .await?;
        for (txn, product) in rows {
            if let Some(txn) = txn_of(ServiceKind::Products, &txn) {
                inventory.reserved.insert(txn, product_of(product));
            }
        }

        let mut orders = OrderBook::default();
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT txn, username, product FROM orders ORDER BY id")
                .fetch_all(&self.orders)
                .await?;
        for (txn, username, product) in rows {
            let Some(txn) = txn_of(ServiceKind::Orders, &txn) else {
                continue;
            };
            let order = Order {
                username,
                product: product_of(product),
            };
            if orders.orders.insert(txn, order).is_some() {
                found.push(format!("OrderService: {txn} recorded its order twice"));
            }
        }
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT txn, username, product FROM pending_orders")
                .fetch_all(&self.orders)
                .await?;
        for (txn, username, product) in rows {
            if let Some(txn) = txn_of(ServiceKind::Orders, &txn) {
                let order = Order {
                    username,
                    product: product_of(product),
                };
                orders.pending.insert(txn, order);
            }
        }

        anomalies.extend(found);
        Ok(Stores {
            users,
            inventory,
            orders,
            anomalies,
        })
    }

    /// Closes the databases and removes the directory; returns its path.
    ///
    /// # Errors
    ///
    /// When the directory cannot be removed.
    pub async fn close(self) -> Result<PathBuf, StateError> {
        for pool in [&self.users, &self.products, &self.orders] {
            pool.close().await;
        }
        let path = self.dir.path().to_owned();
        self.dir.close()?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use dtxn::{Decision, Phase};

    use super::*;
    use crate::demo::check::check;
    use crate::demo::check::tests::{record, txn};
    use crate::demo::workload::Fault;

    fn signup(username: &str, product: usize) -> SignUp {
        SignUp {
            username: username.to_owned(),
            product,
            fault: None,
        }
    }

    /// The call context of `phase` for the `service`-th payload of `signup`.
    fn cx(n: u128, phase: Phase, signup: &SignUp, service: usize) -> CallContext {
        let payload = payloads(signup).unwrap()[service].clone();
        CallContext::new(txn(n), phase).with_payload(Some(payload.into()))
    }

    async fn prepare_all(
        participants: &[Arc<dyn Participant>],
        n: u128,
        signup: &SignUp,
    ) -> Vec<PreparedResult> {
        let mut votes = Vec::new();
        for (i, p) in participants.iter().enumerate() {
            votes.push(
                p.prepare_with(&cx(n, Phase::Prepare, signup, i))
                    .await
                    .unwrap(),
            );
        }
        votes
    }

    async fn finish_all(
        participants: &[Arc<dyn Participant>],
        n: u128,
        signup: &SignUp,
        commit: bool,
    ) {
        for (i, p) in participants.iter().enumerate() {
            if commit {
                p.commit_with(&cx(n, Phase::Commit, signup, i))
                    .await
                    .unwrap();
            } else {
                p.rollback_with(&cx(n, Phase::Rollback, signup, i))
                    .await
                    .unwrap();
            }
        }
    }

    #[test]
    fn payloads_carry_what_each_service_needs() {
        let mut request = signup("alice", 2);
        request.fault = Some(Fault {
            service: ServiceKind::Orders,
            kind: FaultKind::CommitPanic,
        });
        assert_eq!(
            payloads(&request).unwrap(),
            [
                r#"{"username":"alice"}"#.to_owned(),
                r#"{"product":2}"#.to_owned(),
                r#"{"username":"alice","product":2,"fault":"commit-panic"}"#.to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn a_committed_user_and_a_pending_reservation_read_back() {
        let services = SqliteServices::open(&[2, 1, 1, 1]).await.unwrap();
        let participants = services.participants().await.unwrap();
        let (alice, bob) = (signup("alice", 0), signup("bob", 1));

        assert_eq!(
            prepare_all(&participants, 1, &alice).await,
            vec![PreparedResult::Ready; 3]
        );
        finish_all(&participants, 1, &alice, true).await;
        assert_eq!(
            prepare_all(&participants, 2, &bob).await,
            vec![PreparedResult::Ready; 3]
        );

        let stores = services.read_back().await.unwrap();
        assert_eq!(stores.users.created.get(&txn(1)), Some(&"alice".to_owned()));
        assert_eq!(stores.users.users.get("alice"), Some(&txn(1)));
        assert_eq!(stores.users.pending.get(&txn(2)), Some(&"bob".to_owned()));
        assert!(stores.users.reserved_names.contains("bob"));
        assert_eq!(stores.inventory.given.get(&txn(1)), Some(&0));
        assert_eq!(stores.inventory.reserved.get(&txn(2)), Some(&1));
        assert_eq!(
            stores
                .inventory
                .lines
                .iter()
                .map(|l| (l.name, l.initial, l.on_hand))
                .collect::<Vec<_>>(),
            vec![
                ("welcome-mug", 2, 1),
                ("sticker-pack", 1, 0),
                ("tote-bag", 1, 1),
                ("hoodie", 1, 1)
            ]
        );
        assert_eq!(
            stores.orders.orders.get(&txn(1)),
            Some(&Order {
                username: "alice".to_owned(),
                product: 0
            })
        );
        assert!(stores.orders.pending.contains_key(&txn(2)));
        assert!(stores.anomalies.is_empty(), "{:?}", stores.anomalies);

        // Bob's reservations are still held: the check says so.
        let records = [record(1, Decision::Commit), record(2, Decision::Abort)];
        let found = check(&records, &stores, 0).violations;
        assert!(found.iter().any(|v| v.contains("left behind")), "{found:?}");

        // Rolled back (twice: the second is a duplicate), nothing is left.
        finish_all(&participants, 2, &bob, false).await;
        finish_all(&participants, 2, &bob, false).await;
        let stores = services.read_back().await.unwrap();
        let result = check(&records, &stores, 0);
        assert!(result.consistent(), "{:?}", result.violations);
        assert_eq!(result.totals.users, 1);
        assert_eq!(result.totals.units_given, 1);
        assert_eq!(result.totals.remaining_stock, 4);

        let dir = services.close().await.unwrap();
        assert!(!dir.exists(), "{dir:?} is removed");
    }

    #[tokio::test]
    async fn a_double_applied_commit_is_detected() {
        let services = SqliteServices::open(&[2, 1, 1, 1]).await.unwrap();
        let participants = services.participants().await.unwrap();
        let alice = signup("alice", 0);
        prepare_all(&participants, 1, &alice).await;
        finish_all(&participants, 1, &alice, true).await;
        // A duplicate commit goes through the barrier: nothing changes.
        finish_all(&participants, 1, &alice, true).await;
        let records = [record(1, Decision::Commit)];
        let result = check(&records, &services.read_back().await.unwrap(), 0);
        assert!(result.consistent(), "{:?}", result.violations);

        // What a commit applied twice without the barrier would leave.
        let t1 = txn(1).to_string();
        sqlx::query("INSERT INTO orders (txn, username, product) VALUES (?, 'alice', 0)")
            .bind(&t1)
            .execute(&services.orders)
            .await
            .unwrap();
        sqlx::query("INSERT INTO given_units (txn, product) VALUES (?, 0)")
            .bind(&t1)
            .execute(&services.products)
            .await
            .unwrap();
        let found = check(&records, &services.read_back().await.unwrap(), 0).violations;
        assert!(
            found.iter().any(|v| v.contains("recorded its order twice")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|v| v.contains("given two units")),
            "{found:?}"
        );
        services.close().await.unwrap();
    }

    #[tokio::test]
    async fn services_refuse_what_they_cannot_reserve() {
        let services = SqliteServices::open(&[1, 0, 1, 1]).await.unwrap();
        let participants = services.participants().await.unwrap();
        let aborted = |vote: &PreparedResult| matches!(vote, PreparedResult::Aborted(_));

        let votes = prepare_all(&participants, 1, &signup("alice", 1)).await;
        assert_eq!(
            votes[1],
            PreparedResult::Aborted("out of stock (sticker-pack)".to_owned())
        );
        finish_all(&participants, 1, &signup("alice", 1), false).await;
        assert!(aborted(
            &prepare_all(&participants, 2, &signup("root", 0)).await[0]
        ));
        finish_all(&participants, 2, &signup("root", 0), false).await;
        assert_eq!(
            prepare_all(&participants, 3, &signup("alice", 0)).await,
            vec![PreparedResult::Ready; 3]
        );
        let votes = prepare_all(&participants, 4, &signup("alice", 0)).await;
        assert!(aborted(&votes[0]) && aborted(&votes[1]), "{votes:?}");
        finish_all(&participants, 4, &signup("alice", 0), false).await;
        finish_all(&participants, 3, &signup("alice", 0), false).await;

        // A prepare after its rollback is refused and reserves nothing.
        finish_all(&participants, 5, &signup("carol", 2), false).await;
        let votes = prepare_all(&participants, 5, &signup("carol", 2)).await;
        assert!(votes.iter().all(aborted), "{votes:?}");

        let stores = services.read_back().await.unwrap();
        let records = [1, 2, 3, 4, 5].map(|n| record(n, Decision::Abort));
        let result = check(&records, &stores, 0);
        assert!(result.consistent(), "{:?}", result.violations);
        assert_eq!(result.totals.remaining_stock, 3);
        services.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_panic_fires_once_after_the_commit_is_kept() {
        let services = SqliteServices::open(&[1, 1, 1, 1]).await.unwrap();
        let participants = services.participants().await.unwrap();
        let mut request = signup("alice", 0);
        request.fault = Some(Fault {
            service: ServiceKind::Products,
            kind: FaultKind::CommitPanic,
        });
        prepare_all(&participants, 1, &request).await;
        let products = Arc::clone(&participants[1]);
        let first = cx(1, Phase::Commit, &request, 1);
        crate::demo::silence_injected_panics();
        let panicked = tokio::spawn(async move { products.commit_with(&first).await })
            .await
            .unwrap_err();
        assert!(panicked.is_panic());
        // The unit was given out before the panic: the retry is a duplicate.
        let retry = cx(1, Phase::Commit, &request, 1).with_attempt(2);
        participants[1].commit_with(&retry).await.unwrap();
        for i in [0, 2] {
            participants[i]
                .commit_with(&cx(1, Phase::Commit, &request, i))
                .await
                .unwrap();
        }
        assert_eq!(services.injected()["commit panic"], 1);
        let stores = services.read_back().await.unwrap();
        let result = check(&[record(1, Decision::Commit)], &stores, 0);
        assert!(result.consistent(), "{:?}", result.violations);
        assert_eq!(result.totals.units_given, 1);
        services.close().await.unwrap();
    }
}
