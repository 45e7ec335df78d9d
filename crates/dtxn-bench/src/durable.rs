//! Workload (g), durable mode: the full cycle with no-op participants in
//! memory against with a decision log (SQLite on a temporary file, and
//! PostgreSQL when [`BenchConfig::postgres_url`] is set), in alternating
//! runs; the same one transaction at a time; and the cost of one fsync on
//! the file system of the SQLite log.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::log::{DecisionLog, LogError, ParticipantRegistry, PostgresLog, SqliteLog};
use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator};

use crate::measure::{drive, median, Drive};
use crate::participants::{many, Noop};
use crate::workloads::LoadFigures;
use crate::{ms, BenchConfig, BenchError, PostgresUrl, Target};

/// No-op participants per transaction in (g).
pub const DURABLE_PARTICIPANTS: usize = 3;
/// The size of each write timed for the fsync cost.
const FSYNC_BLOCK: usize = 4096;
/// How long cleaning up waits for a PostgreSQL log to be let go of.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// The target of (g) for throughput with the SQLite log, tx/s.
const TARGET_TX_PER_S: f64 = 100_000.0;
/// The target of (g) for the p50 of one transaction at a time with the
/// SQLite log: the in-memory p50 plus this many fsyncs.
const TARGET_FSYNCS: f64 = 2.0;

/// Workload (g) (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DurableReport {
    /// No-op participants per transaction.
    pub participants: usize,
    /// Transactions in flight.
    pub concurrency: usize,
    /// Transactions per run and mode (after an untimed warm-up of one per
    /// transaction in flight).
    pub transactions: usize,
    /// The directory the SQLite logs and the fsync probe were written in
    /// (in a temporary directory of their own, removed afterwards).
    pub dir: String,
    /// In memory: no decision log.
    pub memory: LoadFigures,
    /// With the SQLite log (WAL, `synchronous = FULL`), a fresh file per
    /// run.
    pub sqlite: LoadFigures,
    /// The SQLite log's throughput ÷ in memory's (median of per-run
    /// ratios).
    pub sqlite_over_memory: f64,
    /// With the PostgreSQL log, a fresh schema per run (dropped
    /// afterwards); `None` without [`BenchConfig::postgres_url`].
    pub postgres: Option<LoadFigures>,
    /// The PostgreSQL log's throughput ÷ in memory's (median of per-run
    /// ratios).
    pub postgres_over_memory: Option<f64>,
    /// Transactions per run one at a time.
    pub alone_transactions: usize,
    /// One transaction at a time, in memory: p50, ms.
    pub alone_memory_p50_ms: f64,
    /// One transaction at a time, with the SQLite log: p50, ms.
    pub alone_sqlite_p50_ms: f64,
    /// One write of 4 KiB and its `fsync` in [`dir`](Self::dir): median,
    /// ms.
    pub fsync_ms: f64,
    /// Writes timed for [`fsync_ms`](Self::fsync_ms).
    pub fsync_samples: usize,
}

/// The coordinators' configuration: room for twice the transactions in
/// flight.
fn coordinator_config(concurrency: usize) -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .max_transactions(2 * concurrency.max(1))
        .retention_count(1000)
        .build()
        .expect("a valid configuration")
}

/// A coordinator on `log`, which is empty: nothing to recover.
async fn recovered(
    log: Arc<dyn DecisionLog>,
    concurrency: usize,
    backend: &'static str,
) -> Result<TransactionCoordinator, BenchError> {
    TransactionCoordinator::recover(
        coordinator_config(concurrency),
        log,
        &ParticipantRegistry::new(),
    )
    .await
    .map(|(coordinator, _)| coordinator)
    .map_err(|source| BenchError::Log { backend, source })
}

/// A coordinator on a new SQLite log at `path`.
async fn on_sqlite(
    path: &std::path::Path,
    concurrency: usize,
) -> Result<TransactionCoordinator, BenchError> {
    let log = SqliteLog::open(path)
        .await
        .map_err(|source| BenchError::Log {
            backend: "SQLite",
            source,
        })?;
    recovered(Arc::new(log), concurrency, "SQLite").await
}

/// An untimed warm-up of one transaction per driving task, then `n` timed
/// transactions, `concurrency` at a time. Returns the timed drive and the
/// failed transactions of both.
async fn warm_and_drive(
    coordinator: TransactionCoordinator,
    participants: &Arc<[Arc<dyn Participant>]>,
    n: usize,
    concurrency: usize,
) -> (Drive, usize) {
    let contender = crate::Contender::Dtxn(coordinator);
    let warm = drive(&contender, participants, concurrency, concurrency, false).await;
    let timed = drive(&contender, participants, n, concurrency, true).await;
    let failed = warm.failed + timed.failed;
    (timed, failed)
}

fn figures(d: &Drive) -> [f64; 3] {
    [d.throughput(), d.quantile_ms(0.5), d.quantile_ms(0.99)]
}

/// What the runs measured, per run.
#[derive(Default)]
struct Samples {
    memory: Vec<[f64; 3]>,
    sqlite: Vec<[f64; 3]>,
    postgres: Vec<[f64; 3]>,
    sqlite_ratio: Vec<f64>,
    postgres_ratio: Vec<f64>,
    alone_memory: Vec<f64>,
    alone_sqlite: Vec<f64>,
    failed: usize,
}

/// Workload (g). Returns the report and the count of failed transactions.
///
/// # Errors
///
/// [`BenchError::Io`] when no temporary directory can be made in
/// [`BenchConfig::durable_dir`] or the fsync probe cannot be written;
/// [`BenchError::Log`] when a log cannot be opened (a PostgreSQL server
/// that does not answer, say).
pub(crate) async fn durable(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(DurableReport, usize), BenchError> {
    let base = config
        .durable_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("dtxn-bench-durable-")
        .tempdir_in(&base)
        .map_err(|source| BenchError::Io {
            path: base.clone(),
            source,
        })?;
    let mut schemas = Vec::new();
    let measured = measure(config, dir.path(), &mut schemas, progress).await;
    if let Some(url) = &config.postgres_url {
        drop_schemas(url, &schemas).await;
    }
    let samples = measured?;
    let fsync_samples = config.fsync_samples.max(1);
    let fsync = fsync_cost(dir.path(), fsync_samples).map_err(|source| BenchError::Io {
        path: dir.path().to_owned(),
        source,
    })?;
    progress("(g) fsync");

    let col = |rows: &[[f64; 3]], k: usize| median(&rows.iter().map(|r| r[k]).collect::<Vec<_>>());
    let load = |rows: &[[f64; 3]]| LoadFigures {
        tx_per_s: col(rows, 0),
        p50_ms: col(rows, 1),
        p99_ms: col(rows, 2),
    };
    let measured_postgres = !samples.postgres.is_empty();
    let report = DurableReport {
        participants: DURABLE_PARTICIPANTS,
        concurrency: config.durable_concurrency.max(1),
        transactions: config.durable_transactions.max(1),
        dir: base.display().to_string(),
        memory: load(&samples.memory),
        sqlite: load(&samples.sqlite),
        sqlite_over_memory: median(&samples.sqlite_ratio),
        postgres: measured_postgres.then(|| load(&samples.postgres)),
        postgres_over_memory: measured_postgres.then(|| median(&samples.postgres_ratio)),
        alone_transactions: config.durable_alone_transactions.max(1),
        alone_memory_p50_ms: median(&samples.alone_memory),
        alone_sqlite_p50_ms: median(&samples.alone_sqlite),
        fsync_ms: ms(fsync),
        fsync_samples,
    };
    Ok((report, samples.failed))
}

/// The timed runs of (g), with the SQLite logs in `dir`; the PostgreSQL
/// schemas made are pushed on `schemas` (to be dropped even when a run
/// fails).
async fn measure(
    config: &BenchConfig,
    dir: &Path,
    schemas: &mut Vec<String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Samples, BenchError> {
    let participants = many(DURABLE_PARTICIPANTS, || Arc::new(Noop));
    let concurrency = config.durable_concurrency.max(1);
    let n = config.durable_transactions.max(1);
    let mut s = Samples::default();
    // At high concurrency, memory and the logs alternate within each run.
    for run in 0..config.runs.max(1) {
        let memory = TransactionCoordinator::with_config(coordinator_config(concurrency));
        let (m, f) = warm_and_drive(memory, &participants, n, concurrency).await;
        s.failed += f;

        let path = dir.join(format!("decisions-{run}.db"));
        let coordinator = on_sqlite(&path, concurrency).await?;
        let (d, f) = warm_and_drive(coordinator, &participants, n, concurrency).await;
        s.failed += f;

        let mut label = format!(
            "(g) run {}: in memory {:.0} tx/s, SQLite {:.0} tx/s",
            run + 1,
            m.throughput(),
            d.throughput()
        );
        if let Some(url) = &config.postgres_url {
            let schema = format!("dtxn_bench_{:016x}", fastrand::u64(..));
            let log = open_postgres(url, &schema).await?;
            schemas.push(schema);
            let coordinator = recovered(Arc::new(log), concurrency, "PostgreSQL").await?;
            let (p, f) = warm_and_drive(coordinator, &participants, n, concurrency).await;
            s.failed += f;
            label.push_str(&format!(", PostgreSQL {:.0} tx/s", p.throughput()));
            s.postgres.push(figures(&p));
            s.postgres_ratio.push(p.throughput() / m.throughput());
        }
        s.memory.push(figures(&m));
        s.sqlite.push(figures(&d));
        s.sqlite_ratio.push(d.throughput() / m.throughput());
        progress(&label);
    }
    // Latency without queueing: one transaction at a time.
    let alone = config.durable_alone_transactions.max(1);
    for run in 0..config.runs.max(1) {
        let memory = TransactionCoordinator::with_config(coordinator_config(1));
        let (m, f) = warm_and_drive(memory, &participants, alone, 1).await;
        s.failed += f;
        let path = dir.join(format!("alone-{run}.db"));
        let coordinator = on_sqlite(&path, 1).await?;
        let (d, f) = warm_and_drive(coordinator, &participants, alone, 1).await;
        s.failed += f;
        s.alone_memory.push(m.quantile_ms(0.5));
        s.alone_sqlite.push(d.quantile_ms(0.5));
        progress(&format!(
            "(g) one at a time, run {}: p50 in memory {:.3} ms, SQLite {:.3} ms",
            run + 1,
            m.quantile_ms(0.5),
            d.quantile_ms(0.5)
        ));
    }
    Ok(s)
}

async fn open_postgres(url: &PostgresUrl, schema: &str) -> Result<PostgresLog, BenchError> {
    PostgresLog::open_in_schema(url.as_str(), schema)
        .await
        .map_err(|source| BenchError::Log {
            backend: "PostgreSQL",
            source,
        })
}

/// Drops the schemas the runs made, once their logs have let go of them
/// (a dropped log closes from its writer task, after its last lazy
/// write). Failures are only logged: the figures are taken.
async fn drop_schemas(url: &PostgresUrl, schemas: &[String]) {
    use sqlx::Connection;
    if schemas.is_empty() {
        return;
    }
    for schema in schemas {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match PostgresLog::open_in_schema(url.as_str(), schema).await {
                Err(LogError::Locked { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Ours now, with nothing to write: dropping it is harmless.
                _ => break,
            }
        }
    }
    let mut conn = match sqlx::PgConnection::connect(url.as_str()).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, ?schemas, "cannot drop the benchmark's PostgreSQL schemas");
            return;
        }
    };
    for schema in schemas {
        // The name is ours: `dtxn_bench_` and hex digits.
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
            tracing::warn!(error = %e, schema, "cannot drop a benchmark PostgreSQL schema");
        }
    }
    let _ = conn.close().await;
}

/// The median time of writing 4 KiB to a file in `dir` and `fsync`ing it,
/// over `samples` writes: what one durable write costs on that file
/// system at least.
///
/// # Errors
///
/// When the probe file cannot be created, written or synced.
pub fn fsync_cost(dir: &Path, samples: usize) -> std::io::Result<Duration> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5a_u8; FSYNC_BLOCK];
    let mut times = Vec::with_capacity(samples.max(1));
    for _ in 0..samples.max(1) {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        times.push(started.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// The targets of (g).
pub(crate) fn targets(d: &DurableReport) -> Vec<Target> {
    let limit = d.alone_memory_p50_ms + TARGET_FSYNCS * d.fsync_ms;
    vec![
        Target {
            workload: "g",
            target: format!(
                "throughput with the SQLite log ≥ {TARGET_TX_PER_S:.0} tx/s, {} in flight",
                d.concurrency
            ),
            measured: format!(
                "{:.0} tx/s ({:.2}× in memory's)",
                d.sqlite.tx_per_s, d.sqlite_over_memory
            ),
            met: d.sqlite.tx_per_s >= TARGET_TX_PER_S,
        },
        Target {
            workload: "g",
            target: format!(
                "p50 with the SQLite log, one at a time, ≤ in memory's + {TARGET_FSYNCS:.0} fsyncs"
            ),
            measured: format!(
                "{:.3} ms (limit {:.3} + {TARGET_FSYNCS:.0} × {:.3} = {limit:.3} ms)",
                d.alone_sqlite_p50_ms, d.alone_memory_p50_ms, d.fsync_ms
            ),
            met: d.alone_sqlite_p50_ms <= limit,
        },
    ]
}
