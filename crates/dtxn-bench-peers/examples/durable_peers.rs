//! dtxn's durable mode and `dtmrs` 0.13 side by side on the same work:
//! [`IN_FLIGHT`] transactions in flight, each a two-phase transaction over
//! 3 no-op participants ([`Noop`]), with the coordinator's state in an
//! SQLite file in a temporary directory (a fresh file per measurement). In
//! each run the two are measured one after the other, the order alternating
//! from run to run, on one 2-worker tokio runtime, driven by the same
//! [`drive`] loop. Printed per run: throughput, p50 and p99 of each; at the
//! end the medians over the runs and the median of the per-run ratios
//! dtxn/dtmrs throughput.
//!
//! `cargo run --release -p dtxn-bench-peers --features dtmrs --example durable_peers -- [runs] [transactions] [only]`
//!
//! (dtmrs is heavy to build, so it is behind the crate's `dtmrs` feature,
//! out of the default build and test run.)
//!
//! Defaults: 3 runs of 10 000 transactions. `only` (`dtxn` or `dtmrs`)
//! measures one side alone, e.g. to count its `fsync`s under
//! `strace -f -c -e trace=fsync,fdatasync`.
//!
//! # dtxn
//!
//! As in `dtxn-bench`'s `durable` example: a [`TransactionCoordinator`]
//! recovered from an empty [`SqliteLog`] (WAL, `synchronous = FULL`, one
//! writer task, group commit), then begin, register 3, prepare (the 3
//! `prepare` calls concurrently), commit (the Commit decision is written and
//! synced before any `commit` call; `commit_transaction` returns once the 3
//! `commit` calls were acknowledged). Per transaction it writes one commit
//! record (shared fsyncs: every decision that arrived while the previous
//! write was syncing goes in the next SQLite transaction) and, lazily and
//! in batches, one deletion of it when the participants have acknowledged.
//!
//! # dtmrs
//!
//! dtmrs's XA mode, the two-phase commit of its five modes (TCC has the same
//! state machine with confirm/cancel in place of commit/rollback): the
//! caller opens the global transaction, registers each branch and then does
//! the branch's phase 1 itself; `submit` records the decision; the
//! coordinator then calls each branch's `commit` (a failed `commit` is
//! retried, never turned into a rollback). Here a branch's phase 1 is its
//! participant's `prepare`, its `commit`/`rollback` branches are in-process
//! `local://` handlers calling the participant's `commit`/`rollback`: no
//! HTTP, no gRPC (the `grpc` feature is off, so no protoc is needed).
//!
//! The coordinator is assembled in-process from dtmrs's own parts as its
//! `dtmrs` binary and its `Embedded` facade assemble them: `Store::open` on
//! `sqlite:<temporary file>` (dtmrs-store, sqlx, a pool of 32 connections,
//! WAL with **`synchronous = NORMAL`**), a `Driver` configured from the
//! environment (defaults: 16 workers, 30 s lease) with a registry of the
//! `local://` handlers, its background poller (`run_until`, 200 ms tick, as
//! `Embedded`'s default; it takes over transactions whose lease expired,
//! i.e. crash recovery), and an `Api` with the inline driver (the binary's
//! default, `DTMRS_INLINE_SUBMIT`). `Embedded` itself is not used because
//! its `submit` only marks the transaction submitted and leaves phase 2 to
//! the poller, so the caller could only learn the end by polling the store;
//! instead a transaction is:
//!
//! 1. `Api::prepare(gid, "xa")`: inserts the global row (1 write
//!    transaction);
//! 2. for the 3 branches concurrently: `Api::register_branch` (reads the
//!    global row; 1 write transaction inserting the commit and rollback
//!    rows, reading each back), then the participant's `prepare`;
//! 3. if every branch registered and voted, `Store::submit_prepared` with
//!    this process as the lease owner and `Driver::process` awaited: this is
//!    what `Api::submit` does for XA with the inline driver, except that
//!    `Api::submit` spawns `process` and returns at once. `process` reads
//!    the branches, calls the 3 `commit` handlers one after another, each
//!    followed by an update of its branch row and a re-read of the
//!    branches, and writes the global status `succeed`. (Otherwise
//!    `Api::abort`, and the poller rolls back.)
//!
//! So a dtmrs transaction ends, as dtxn's does, when the decision is
//! recorded and every participant acknowledged its `commit`. On the way it
//! commits 9 SQLite transactions (prepare, 3 registrations, submit, 3
//! branch updates, the final status) and makes 15 reads (3 of the global
//! row and 6 read-backs while registering, 1 on submit, 5 of the branch
//! rows in `process`), each a round trip to one of sqlx's per-connection
//! SQLite threads; phase 1 runs the 3 branches concurrently (`Embedded`'s
//! `Xa::prepare_branch` would run them one after another), phase 2 calls
//! them one after another (dtmrs's driver), where dtxn calls both phases'
//! participants concurrently. Besides, the poller's 16 workers each look for
//! due transactions every 200 ms.
//!
//! Durability differs. dtmrs sets `synchronous = NORMAL` in WAL mode, so
//! none of its commits waits for an fsync: a process crash loses nothing,
//! but a power loss may lose the last transactions it reported done —
//! weaker than dtxn's log, whose Commit decision is synced before phase 2.
//! dtmrs does fsync, but when SQLite checkpoints its WAL (each checkpoint
//! attempt syncs the WAL first; with 32 connections they are frequent), not
//! as part of a commit: count them with `only` under `strace`. dtmrs keeps
//! every row (its history); dtxn deletes a decision once acknowledged.
//!
//! At 1000 in flight a dtmrs transaction takes seconds, most of it queued
//! for one of the 32 connections and for SQLite's single write lock, which
//! dtmrs waits for up to 5 s (its `busy_timeout`); on a slower machine (or
//! under a tracer) some transactions then fail with `database is locked`,
//! and the example stops with the first error: every transaction of both
//! must commit. Correctness is
//! checked after each dtmrs measurement, untimed: one global row per
//! transaction, each `succeed`, and one `commit` per participant per
//! transaction.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtmrs::server::api::{Api, RegisterBranch};
use dtmrs::server::driver::{branch_id, Driver};
use dtmrs::server::registry::Registry;
use dtmrs::store::{Store, SubmitOutcome};
use dtmrs::{BranchCtx, BranchResult, GlobalStatus};
use dtxn::log::{ParticipantRegistry, SqliteLog};
use dtxn::{CoordinatorConfig, Participant, PreparedResult, TransactionCoordinator};
use dtxn_bench::{drive, median, participants::many, Contender, Drive, IdPool, Noop};
use dtxn_bench::{Peer, PeerSession};
use futures_util::future::{join_all, BoxFuture};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Transactions in flight, for both.
const IN_FLIGHT: usize = 1000;
/// Participants (dtmrs branches) per transaction.
const PARTICIPANTS: usize = 3;
/// Distinct transaction ids handed to the participants under dtmrs (they
/// repeat after this many transactions, as in the other peers).
const IDS: usize = 4096;
/// dtmrs's poller interval when it finds nothing due (`Embedded`'s
/// default).
const TICK: Duration = Duration::from_millis(200);

fn config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .max_transactions(2 * IN_FLIGHT)
        .retention_count(1000)
        .build()
        .expect("a valid configuration")
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Dtxn,
    Dtmrs,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let transactions: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let only = match args.next().as_deref() {
        None | Some("both") => Only::Both,
        Some("dtxn") => Only::Dtxn,
        Some("dtmrs") => Only::Dtmrs,
        Some(other) => panic!("unknown side {other:?}: expected dtxn, dtmrs or both"),
    };
    let participants: Arc<[Arc<dyn Participant>]> =
        many(PARTICIPANTS, || Arc::new(Noop) as Arc<dyn Participant>);
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "{transactions} transactions per measurement, {IN_FLIGHT} in flight x {PARTICIPANTS} no-op participants, SQLite files in {}",
        dir.path().display()
    );
    let (mut dtxn_runs, mut dtmrs_runs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (mut x, mut m) = (None, None);
        // dtxn first in even runs, dtmrs first in odd ones.
        let dtxn_first = run % 2 == 0;
        for dtxn_turn in [dtxn_first, !dtxn_first] {
            if dtxn_turn && only != Only::Dtmrs {
                let path = dir.path().join(format!("dtxn-{run}.db"));
                x = Some(measure_dtxn(&path, &participants, transactions).await);
            } else if !dtxn_turn && only != Only::Dtxn {
                let path = dir.path().join(format!("dtmrs-{run}.db"));
                m = Some(measure_dtmrs(&path, &participants, transactions).await);
            }
        }
        let mut parts = Vec::new();
        if let Some(x) = &x {
            parts.push(format!("dtxn durable {}", figures(x)));
        }
        if let Some(m) = &m {
            parts.push(format!("dtmrs xa {}", figures(m)));
        }
        if let (Some(x), Some(m)) = (&x, &m) {
            parts.push(format!(
                "dtxn/dtmrs {:.1}x",
                x.throughput() / m.throughput()
            ));
        }
        println!("run {run}: {}", parts.join(" | "));
        dtxn_runs.extend(x);
        dtmrs_runs.extend(m);
    }
    println!("medians of {runs} runs:");
    for (name, v) in [("dtxn durable", &dtxn_runs), ("dtmrs xa", &dtmrs_runs)] {
        if !v.is_empty() {
            println!(
                "  {name}: {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms",
                med(v, Drive::throughput),
                med(v, |d| d.quantile_ms(0.5)),
                med(v, |d| d.quantile_ms(0.99)),
            );
        }
    }
    if !dtxn_runs.is_empty() && !dtmrs_runs.is_empty() {
        let ratios: Vec<f64> = dtxn_runs
            .iter()
            .zip(&dtmrs_runs)
            .map(|(x, m)| x.throughput() / m.throughput())
            .collect();
        println!(
            "  throughput dtxn/dtmrs: {:.1}x (median of the per-run ratios)",
            median(&ratios)
        );
    }
}

fn figures(d: &Drive) -> String {
    format!(
        "{:.0} tx/s p50 {:.3} ms p99 {:.3} ms",
        d.throughput(),
        d.quantile_ms(0.5),
        d.quantile_ms(0.99)
    )
}

fn med(v: &[Drive], f: impl Fn(&Drive) -> f64) -> f64 {
    median(&v.iter().map(f).collect::<Vec<_>>())
}

/// dtxn recovered from an empty SQLite decision log at `path`.
async fn measure_dtxn(
    path: &Path,
    participants: &Arc<[Arc<dyn Participant>]>,
    transactions: usize,
) -> Drive {
    let log = SqliteLog::open(path).await.expect("the log opens");
    let (coordinator, _) =
        TransactionCoordinator::recover(config(), Arc::new(log), &ParticipantRegistry::new())
            .await
            .expect("recovery of an empty log");
    let d = drive(
        &Contender::Dtxn(coordinator),
        participants,
        transactions,
        IN_FLIGHT,
        true,
    )
    .await;
    assert_eq!(d.failed, 0, "dtxn committed every transaction");
    d
}

/// dtmrs on a new SQLite store at `path`; checked (untimed) and shut down
/// after.
async fn measure_dtmrs(
    path: &Path,
    participants: &Arc<[Arc<dyn Participant>]>,
    transactions: usize,
) -> Drive {
    let tc = Arc::new(
        DtmrsTc::start(path, participants)
            .await
            .expect("dtmrs starts on its SQLite store"),
    );
    let d = drive(
        &Contender::Peer(Arc::new(Dtmrs(Arc::clone(&tc)))),
        participants,
        transactions,
        IN_FLIGHT,
        true,
    )
    .await;
    assert_eq!(
        d.failed,
        0,
        "dtmrs committed every transaction (first error: {})",
        tc.first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .unwrap_or("none")
    );
    let limit = i64::try_from(transactions + 1).expect("a row count");
    let rows = tc
        .store
        .list_recent(limit)
        .await
        .expect("dtmrs's rows read");
    let succeeded = rows
        .iter()
        .filter(|g| g.status == GlobalStatus::Succeed)
        .count();
    assert_eq!(
        (rows.len(), succeeded),
        (transactions, transactions),
        "one global transaction per transaction, each succeed"
    );
    assert_eq!(
        tc.commits.load(Ordering::Relaxed),
        (PARTICIPANTS * transactions) as u64,
        "every participant got its commit once"
    );
    tc.shutdown().await;
    d
}

/// dtmrs's coordinator, assembled in-process on an SQLite store.
struct DtmrsTc {
    store: Store,
    api: Api,
    driver: Driver,
    participants: Arc<[Arc<dyn Participant>]>,
    ids: IdPool,
    /// Per branch: its `local://` commit and rollback handlers.
    urls: Vec<(String, String)>,
    /// `commit` calls acknowledged.
    commits: Arc<AtomicU64>,
    /// The first failed transaction's error.
    first_error: Mutex<Option<String>>,
    stop: watch::Sender<bool>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl DtmrsTc {
    async fn start(
        path: &Path,
        participants: &Arc<[Arc<dyn Participant>]>,
    ) -> anyhow::Result<Self> {
        let store = Store::open(&format!("sqlite:{}", path.display())).await?;
        let ids = IdPool::new(IDS);
        let commits = Arc::new(AtomicU64::new(0));
        let mut registry = Registry::new();
        let mut urls = Vec::with_capacity(participants.len());
        for (i, participant) in participants.iter().enumerate() {
            let (p, pool, acks) = (Arc::clone(participant), ids.clone(), Arc::clone(&commits));
            registry.register(&format!("commit-{i}"), move |ctx: BranchCtx| {
                let (p, id, acks) = (Arc::clone(&p), pool.get(key_of(&ctx)), Arc::clone(&acks));
                async move {
                    match p.commit(id).await {
                        Ok(()) => {
                            acks.fetch_add(1, Ordering::Relaxed);
                            BranchResult::Success
                        }
                        Err(_) => BranchResult::Failure,
                    }
                }
            });
            let (p, pool) = (Arc::clone(participant), ids.clone());
            registry.register(&format!("rollback-{i}"), move |ctx: BranchCtx| {
                let (p, id) = (Arc::clone(&p), pool.get(key_of(&ctx)));
                async move {
                    match p.rollback(id).await {
                        Ok(()) => BranchResult::Success,
                        Err(_) => BranchResult::Failure,
                    }
                }
            });
            urls.push((
                format!("local://commit-{i}"),
                format!("local://rollback-{i}"),
            ));
        }
        let owner = format!("dtxn-bench-{}", std::process::id());
        let driver = Driver::from_env(store.clone(), owner).with_registry(Arc::new(registry));
        let (stop, stopped) = watch::channel(false);
        let poller = tokio::spawn(driver.clone().run_until(TICK, stopped));
        let api = Api::new(store.clone()).with_inline_driver(driver.clone());
        Ok(Self {
            store,
            api,
            driver,
            participants: Arc::clone(participants),
            ids,
            urls,
            commits,
            first_error: Mutex::new(None),
            stop,
            poller: Mutex::new(Some(poller)),
        })
    }

    /// One XA transaction over every participant, to its end; on failure
    /// keeps the first error.
    async fn cycle(&self, key: u64) -> bool {
        match self.transaction(key).await {
            Ok(()) => true,
            Err(e) => {
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("transaction {key}: {e}"));
                false
            }
        }
    }

    async fn transaction(&self, key: u64) -> anyhow::Result<()> {
        let gid = key.to_string();
        let id = self.ids.get(key);
        self.api.prepare(&gid, "xa", &[], "", None).await?;
        // Phase 1, the branches concurrently: register, then prepare.
        let phase1 = join_all(self.participants.iter().zip(&self.urls).enumerate().map(
            |(i, (p, (commit, rollback)))| {
                let branch = RegisterBranch {
                    gid: gid.clone(),
                    branch_id: branch_id(i),
                    commit: commit.clone(),
                    rollback: rollback.clone(),
                    ..Default::default()
                };
                async move {
                    self.api.register_branch(&branch).await?;
                    match p.prepare(id).await {
                        PreparedResult::Aborted(reason) => anyhow::bail!("voted no: {reason}"),
                        _ => Ok(()),
                    }
                }
            },
        ))
        .await;
        if let Some(Err(e)) = phase1.into_iter().find(Result::is_err) {
            let _ = self.api.abort(&gid).await;
            return Err(e);
        }
        // `Api::submit` for XA with the inline driver, with `process`
        // awaited instead of spawned.
        let lease = dtmrs::store::now() + self.driver.lease;
        match self
            .store
            .submit_prepared(&gid, &self.driver.owner, lease)
            .await?
        {
            SubmitOutcome::Advanced(g) => self.driver.process(&g).await,
            _ => anyhow::bail!("not submitted"),
        }
    }

    /// Stops the poller and closes the store.
    async fn shutdown(&self) {
        self.stop.send_replace(true);
        let poller = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(poller) = poller {
            let _ = poller.await;
        }
        self.store.close().await;
    }
}

/// The transaction's key, from its gid (the key in decimal).
fn key_of(ctx: &BranchCtx) -> u64 {
    ctx.gid.parse().unwrap_or(0)
}

/// dtmrs as a [`Peer`], so that [`drive`] runs it as it runs dtxn.
struct Dtmrs(Arc<DtmrsTc>);

impl Peer for Dtmrs {
    fn name(&self) -> &'static str {
        "dtmrs"
    }

    /// The same coordinator and store (this example builds a new one, on a
    /// new file, for each measurement).
    fn fresh(&self) -> Arc<dyn Peer> {
        Arc::new(Self(Arc::clone(&self.0)))
    }

    fn session(
        &self,
        participants: &Arc<[Arc<dyn Participant>]>,
    ) -> BoxFuture<'static, Box<dyn PeerSession>> {
        assert!(
            Arc::ptr_eq(participants, &self.0.participants),
            "the coordinator's handlers call the participants it was started with"
        );
        let tc = Arc::clone(&self.0);
        Box::pin(async move { Box::new(DtmrsSession(tc)) as Box<dyn PeerSession> })
    }
}

struct DtmrsSession(Arc<DtmrsTc>);

impl PeerSession for DtmrsSession {
    fn cycle(&mut self, key: u64) -> BoxFuture<'_, bool> {
        Box::pin(self.0.cycle(key))
    }
}
