//! End to end on loopback: a coordinator server, and a participant service
//! (a `Guarded` branch on a SQLite file, served by
//! `dtxn_http::participant_router`) that crashes in the middle of a commit
//! and restarts on the same file and port. The coordinator's retries reach
//! the restarted service, and the barrier makes the commit happen exactly
//! once, whether the crash came before or after the database commit.
//!
//! A "crash" shuts down the service's whole runtime: every task (the
//! listener, the connection, the call in flight) is dropped at once, and
//! its database connections with it, as in a killed process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::{
    async_trait, CallContext, CoordinatorConfig, Participant, ParticipantError, PreparedResult,
    RetryPolicy, TransactionCoordinator, TransactionId,
};
use dtxn_http::server::{serve, ServerConfig};
use dtxn_participant::{Branch, Guarded};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool, Transaction};

const PATIENCE: Duration = Duration::from_secs(10);

/// The business: `prepare` holds an amount, `commit` credits it to the
/// balance, `rollback` releases the hold. Reads the amount from the payload.
struct Account {
    /// When set, the first commit does its business write and then never
    /// returns: the service is killed mid-commit, before its database
    /// transaction commits.
    hang_in_commit: AtomicBool,
    entered_commit: Arc<tokio::sync::Notify>,
    /// The outcome URL of the first call, as a restarted service would
    /// keep it with its prepared work.
    outcome_url: Mutex<Option<String>>,
}

impl Account {
    fn new(hang_in_commit: bool) -> Self {
        Self {
            hang_in_commit: AtomicBool::new(hang_in_commit),
            entered_commit: Arc::default(),
            outcome_url: Mutex::new(None),
        }
    }
}

fn amount(cx: &CallContext) -> Result<i64, ParticipantError> {
    let payload: Value = serde_json::from_slice(
        cx.payload()
            .ok_or_else(|| ParticipantError::permanent("no payload"))?
            .as_bytes(),
    )
    .map_err(|e| ParticipantError::permanent(format!("payload: {e}")))?;
    payload["amount"]
        .as_i64()
        .ok_or_else(|| ParticipantError::permanent("payload: no amount"))
}

fn db(e: sqlx::Error) -> ParticipantError {
    ParticipantError::transient(e.to_string())
}

#[async_trait]
impl Branch<Sqlite> for Account {
    fn name(&self) -> &str {
        "accounts"
    }

    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        *self.outcome_url.lock().unwrap() = cx.outcome_url().map(str::to_owned);
        sqlx::query("INSERT INTO holds (txn, amount) VALUES (?, ?)")
            .bind(cx.transaction_id().to_string())
            .bind(amount(cx)?)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(PreparedResult::Ready)
    }

    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        sqlx::query(
            "UPDATE balance SET total = total + \
             (SELECT amount FROM holds WHERE txn = ?1), credits = credits + 1",
        )
        .bind(cx.transaction_id().to_string())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM holds WHERE txn = ?1")
            .bind(cx.transaction_id().to_string())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        if self.hang_in_commit.swap(false, Ordering::SeqCst) {
            self.entered_commit.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        sqlx::query("DELETE FROM holds WHERE txn = ?1")
            .bind(cx.transaction_id().to_string())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Never answers the first commit after it is done: the service dies
/// between its database commit and its HTTP answer.
struct DieAfterCommit {
    inner: Guarded<Sqlite, Account>,
    armed: AtomicBool,
    committed: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Participant for DieAfterCommit {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        self.inner.prepare_with(cx).await
    }
    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.inner.commit_with(cx).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.committed.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.inner.rollback_with(cx).await
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        unreachable!("the router calls prepare_with")
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("the router calls commit_with")
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("the router calls rollback_with")
    }
}

async fn open(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(PATIENCE);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open the SQLite file");
    for ddl in [
        "CREATE TABLE IF NOT EXISTS holds (txn TEXT PRIMARY KEY, amount INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS balance (total INTEGER NOT NULL, credits INTEGER NOT NULL)",
        "INSERT INTO balance SELECT 0, 0 WHERE NOT EXISTS (SELECT 1 FROM balance)",
    ] {
        sqlx::query(ddl).execute(&pool).await.expect("schema");
    }
    dtxn_participant::Barrier::sqlite()
        .create_table(&pool)
        .await
        .expect("barrier table");
    pool
}

/// A participant service in a runtime of its own, on `addr` (port 0 picks
/// one). Dropping it is a crash.
struct ServiceProcess {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl ServiceProcess {
    fn start(
        addr: SocketAddr,
        make: impl FnOnce(SqlitePool) -> Arc<dyn Participant> + Send + 'static,
        db_path: std::path::PathBuf,
    ) -> Self {
        // Built and started on a thread of its own: the test's runtime
        // cannot block on another.
        let (runtime, addr) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let addr = runtime.block_on(async move {
                let pool = open(&db_path).await;
                let participant = make(pool);
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(async move {
                    axum::serve(listener, dtxn_http::participant_router(participant)).await
                });
                addr
            });
            (runtime, addr)
        })
        .join()
        .unwrap();
        Self {
            runtime: Some(runtime),
            addr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Drops every task and connection at once.
    fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A coordinator server on loopback with fast phase-2 retries.
async fn coordinator() -> (String, TransactionCoordinator) {
    let config = CoordinatorConfig::builder()
        .phase2_timeout(Duration::from_secs(2))
        .retry(
            RetryPolicy::new(100, Duration::from_millis(10), Duration::from_millis(50))
                .unwrap()
                .with_max_elapsed(Duration::from_secs(30))
                .unwrap(),
        )
        .build()
        .unwrap();
    let coordinator = TransactionCoordinator::with_config(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        coordinator.clone(),
        ServerConfig::default()
            .allow_participant_net("127.0.0.0/8")
            .public_url(base.clone()),
        std::future::pending(),
    ));
    (base, coordinator)
}

async fn post(http: &reqwest::Client, url: String, body: Option<String>) -> Value {
    let mut request = http.post(url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn balance(pool: &SqlitePool) -> (i64, i64, i64) {
    let (total, credits): (i64, i64) = sqlx::query_as("SELECT total, credits FROM balance")
        .fetch_one(pool)
        .await
        .unwrap();
    let (holds,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM holds")
        .fetch_one(pool)
        .await
        .unwrap();
    (total, credits, holds)
}

/// Begins, registers the service with `{"amount": 42}`, prepares, and
/// starts the commit; returns the id and the commit request in flight.
async fn prepared(
    base: &str,
    http: &reqwest::Client,
    service_url: &str,
) -> (String, tokio::task::JoinHandle<Value>) {
    let id = post(http, format!("{base}/transactions"), None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        http,
        format!("{base}/transactions/{id}/participants"),
        Some(format!(
            r#"{{"name":"accounts","url":"{service_url}","payload":{{"amount":42}}}}"#
        )),
    )
    .await;
    let vote = post(http, format!("{base}/transactions/{id}/prepare"), None).await;
    assert_eq!(vote["outcome"], "prepared", "{vote}");
    let commit = tokio::spawn({
        let (http, url) = (http.clone(), format!("{base}/transactions/{id}/commit"));
        async move { post(&http, url, None).await }
    });
    (id, commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_mid_commit_before_its_database_commit_catches_up_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("accounts.db");
    let (base, _coordinator) = coordinator().await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE * 3)
        .build()
        .unwrap();

    let account = Arc::new(Account::new(true));
    let entered = Arc::clone(&account.entered_commit);
    let first = ServiceProcess::start(
        "127.0.0.1:0".parse().unwrap(),
        {
            let account = Arc::clone(&account);
            move |pool| Arc::new(Guarded::new(pool, ArcBranch(account))) as Arc<dyn Participant>
        },
        db_path.clone(),
    );
    let (addr, url) = (first.addr, first.url());
    let (id, commit) = prepared(&base, &http, &url).await;
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("the commit reaches the service");
    // Killed with the business write done but its transaction open.
    first.kill();

    // The prepared service asks the coordinator what was decided.
    let outcome_url = account.outcome_url.lock().unwrap().clone().unwrap();
    assert_eq!(outcome_url, format!("{base}/transactions/{id}/outcome"));
    let outcome: Value = http
        .get(&outcome_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outcome["outcome"], "committed");

    // Restarted on the same file and port, without the fault.
    let pool = restart_and_finish(addr, &db_path, commit).await;
    // Credited exactly once; the hold is gone.
    assert_eq!(balance(&pool).await, (42, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_after_its_database_commit_answers_the_retry_as_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("accounts.db");
    let (base, _coordinator) = coordinator().await;
    let http = reqwest::Client::builder()
        .timeout(PATIENCE * 3)
        .build()
        .unwrap();

    let committed = Arc::new(tokio::sync::Notify::new());
    let first = ServiceProcess::start(
        "127.0.0.1:0".parse().unwrap(),
        {
            let committed = Arc::clone(&committed);
            move |pool| {
                Arc::new(DieAfterCommit {
                    inner: Guarded::new(pool, Account::new(false)),
                    armed: AtomicBool::new(true),
                    committed,
                }) as Arc<dyn Participant>
            }
        },
        db_path.clone(),
    );
    let (addr, url) = (first.addr, first.url());
    let (_id, commit) = prepared(&base, &http, &url).await;
    tokio::time::timeout(PATIENCE, committed.notified())
        .await
        .expect("the commit reaches the service");
    first.kill();
    {
        // Committed in the database before the crash.
        let pool = open(&db_path).await;
        assert_eq!(balance(&pool).await, (42, 1, 0));
        pool.close().await;
    }
    let pool = restart_and_finish(addr, &db_path, commit).await;
    // The retried commit was a duplicate: still credited once.
    assert_eq!(balance(&pool).await, (42, 1, 0));
}

/// Restarts the service on `addr` and `db_path` without faults, waits for
/// the `commit` request in flight to finish cleanly (decision commit, no
/// hazard), stops the service and opens its file to look.
async fn restart_and_finish(
    addr: SocketAddr,
    db_path: &std::path::Path,
    commit: tokio::task::JoinHandle<Value>,
) -> SqlitePool {
    let restarted = ServiceProcess::start(
        addr,
        |pool| Arc::new(Guarded::new(pool, Account::new(false))) as Arc<dyn Participant>,
        db_path.to_owned(),
    );
    let answer = tokio::time::timeout(PATIENCE * 3, commit)
        .await
        .expect("phase 2 finishes after the restart")
        .unwrap();
    assert_eq!(answer["decision"], "commit", "{answer}");
    assert_eq!(answer["hazards"], Value::Array(vec![]), "{answer}");
    drop(restarted);
    open(db_path).await
}

/// Shares one `Account` between the test and the service.
struct ArcBranch(Arc<Account>);

#[async_trait]
impl Branch<Sqlite> for ArcBranch {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        self.0.prepare(tx, cx).await
    }
    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        self.0.commit(tx, cx).await
    }
    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        self.0.rollback(tx, cx).await
    }
}
