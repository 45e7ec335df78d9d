//! Clusters measured (issue 13): how decision-logging throughput grows with
//! the number of coordinators sharing one PostgreSQL database, to find where
//! the store becomes the bottleneck.
//!
//! For each k of `--nodes` (default 1, 2, 3, 4), in one process:
//!
//! * **coordinators**: k coordinators, each joined to the same fresh
//!   cluster schema as node `b1`..`bk` (lease 10 s) with
//!   [`PostgresLog::join_cluster`] and
//!   [`TransactionCoordinator::join_cluster`] (a registry that knows the
//!   no-op participants' recovery key), all driving the full cycle (begin,
//!   register 3 no-op participants, prepare, commit) at once, `--in-flight`
//!   transactions in flight each, `transactions` each;
//! * **writers**: the store alone, without coordinators: k logs joined to a
//!   fresh cluster, each with `--in-flight` outstanding
//!   [`DecisionLog::log_commit`] calls (a decision with 3 participants,
//!   followed by its `log_end` as a coordinator does after phase 2),
//!   `transactions` each.
//!
//! And the **in-memory** baseline: one coordinator, no log. Every run
//! measures each of these once, in alternating order (reversed every other
//! run); the figures are medians over the runs, ratios taken within each
//! run. Each measurement has an untimed warm-up of one transaction per
//! transaction in flight.
//!
//! The PostgreSQL side: the transactions the server committed during a
//! measurement, the delta of `xact_commit` in `pg_stat_database` for this
//! database, and the write transactions it started (the delta of the next
//! transaction id, exact and immediate, server-wide), both read over a
//! connection of their own. A backend publishes its statistics at most once
//! a second, so each reading waits `--settle-ms` (default 3500: longer than
//! the logs' idle lease renewal, a quarter of the lease, after which their
//! backends publish) after the warm-up and after the timed part; the few
//! writes of that wait (lazy ends, renewals) are counted, which makes the
//! figures slightly pessimistic. Decisions per PostgreSQL commit are the
//! decisions timed ÷ that delta: the mean group-commit batch.
//!
//! Where the time goes: the CPU cores used during the timed part by this
//! process, by the server (every process named `postgres`) and by the
//! whole machine, from `/proc`; the machine's figure above the other two is
//! other work sharing the CPUs, which makes the run's figures suspect.
//!
//! The schemas made are dropped afterwards (each cluster's and each node's),
//! once the logs let go of them.
//!
//! ```text
//! DTXN_BENCH_POSTGRES_URL=postgres://user:password@host:port/db \
//!   cargo run --release -p dtxn-bench --example cluster -- [transactions] \
//!   [--runs 3] [--nodes 1,2,3,4] [--in-flight 1000] [--settle-ms 3500] \
//!   [--only coordinators|writers]
//! ```
//!
//! Prints a progress line per measurement, a markdown table per kind, and
//! a one-line JSON summary (the last line).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::log::{
    ClusterOptions, CommitRecord, DecisionLog, LogError, LoggedParticipant, ParticipantRegistry,
    ParticipantResolver, PostgresLog,
};
use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator, TransactionId};
use dtxn_bench::participants::many;
use dtxn_bench::{drive, median, Contender, Drive, Noop, DURABLE_PARTICIPANTS};
use futures_util::future::join_all;
use sqlx::{Connection, PgConnection, Row as _};

/// The lease each node holds.
const LEASE: Duration = Duration::from_secs(10);
/// How long cleaning up waits for a node's log to let go of its schema
/// (a coordinator's takeover task holds the log until it wakes, every half
/// lease).
const RELEASE_WAIT: Duration = Duration::from_secs(15);
/// The environment variable naming the server.
const URL_VAR: &str = "DTXN_BENCH_POSTGRES_URL";
/// The recovery key of [`Noop`].
const NOOP_KEY: &str = "noop";

/// A measurement of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// One coordinator, no log.
    Memory,
    /// k coordinators on one cluster.
    Coordinators(usize),
    /// k bare logs on one cluster.
    Writers(usize),
}

impl Step {
    fn label(self) -> String {
        match self {
            Self::Memory => "in memory".to_owned(),
            Self::Coordinators(k) => format!("{k} coordinator(s)"),
            Self::Writers(k) => format!("{k} writer(s)"),
        }
    }
}

/// Which of the two measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Coordinators,
    Writers,
}

#[derive(Debug, Clone)]
struct Args {
    transactions: usize,
    runs: usize,
    nodes: Vec<usize>,
    in_flight: usize,
    settle: Duration,
    only: Only,
}

impl Args {
    fn parse() -> Result<Self, Error> {
        let mut args = Self {
            transactions: 50_000,
            runs: 3,
            nodes: vec![1, 2, 3, 4],
            in_flight: 1000,
            settle: Duration::from_millis(3500),
            only: Only::Both,
        };
        let mut it = std::env::args().skip(1);
        let bad = |what: &str| Error::Usage(format!("invalid {what}"));
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| bad(name));
            match arg.as_str() {
                "--runs" => {
                    args.runs = value("--runs")?.parse().map_err(|_| bad("--runs"))?;
                }
                "--in-flight" => {
                    args.in_flight = value("--in-flight")?
                        .parse()
                        .map_err(|_| bad("--in-flight"))?;
                }
                "--settle-ms" => {
                    let ms = value("--settle-ms")?
                        .parse()
                        .map_err(|_| bad("--settle-ms"))?;
                    args.settle = Duration::from_millis(ms);
                }
                "--nodes" => {
                    args.nodes = value("--nodes")?
                        .split(',')
                        .map(|k| k.trim().parse().ok().filter(|&k: &usize| k > 0))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad("--nodes (a list such as 1,2,3,4)"))?;
                }
                "--only" => {
                    args.only = match value("--only")?.as_str() {
                        "coordinators" => Only::Coordinators,
                        "writers" => Only::Writers,
                        _ => return Err(bad("--only (coordinators or writers)")),
                    };
                }
                n => args.transactions = n.parse().map_err(|_| bad("transaction count"))?,
            }
        }
        if args.runs == 0 || args.transactions == 0 || args.in_flight == 0 || args.nodes.is_empty()
        {
            return Err(Error::Usage(
                "runs, transactions, in-flight and nodes must not be zero or empty".to_owned(),
            ));
        }
        Ok(args)
    }

    /// The measurements of run `run`: in memory, then coordinators, then
    /// writers, each by increasing k; reversed in every other run.
    fn steps(&self, run: usize) -> Vec<Step> {
        let mut steps = vec![Step::Memory];
        if self.only != Only::Writers {
            steps.extend(self.nodes.iter().map(|&k| Step::Coordinators(k)));
        }
        if self.only != Only::Coordinators {
            steps.extend(self.nodes.iter().map(|&k| Step::Writers(k)));
        }
        if run % 2 == 1 {
            steps.reverse();
        }
        steps
    }
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{URL_VAR} is not set: give the PostgreSQL server to measure, e.g. {URL_VAR}=postgres://dtxn:dtxn@127.0.0.1:54329/dtxn_test")]
    NoUrl,
    #[error("{0}; usage: cluster [transactions] [--runs N] [--nodes 1,2,3,4] [--in-flight N] [--settle-ms N] [--only coordinators|writers]")]
    Usage(String),
    #[error("node {node}: {source}")]
    Log { node: String, source: LogError },
    #[error("the benchmark's own PostgreSQL connection: {0}")]
    Admin(#[from] sqlx::Error),
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// `xact_commit` of this database.
    commits: i64,
    /// The next transaction id to be assigned (server-wide).
    next_xid: i64,
}

/// The benchmark's own connection to the server: counters, the release
/// of logs, dropping schemas.
struct Admin {
    conn: PgConnection,
}

impl Admin {
    async fn connect(url: &str) -> Result<Self, Error> {
        Ok(Self {
            conn: PgConnection::connect(url).await?,
        })
    }

    async fn counters(&mut self) -> Result<Counters, Error> {
        let row = sqlx::query(
            "SELECT xact_commit, pg_snapshot_xmax(pg_current_snapshot())::text::bigint \
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(Counters {
            commits: row.try_get(0)?,
            next_xid: row.try_get(1)?,
        })
    }

    async fn setting(&mut self, name: &str) -> Result<String, Error> {
        let row = sqlx::query("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut self.conn)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Client connections to the server other than this one (none of the
    /// benchmark's logs is open when it is asked).
    async fn other_clients(&mut self) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Waits until no log holds the advisory lock of node schema `schema`
    /// (its connection closed), at most [`RELEASE_WAIT`]. Whether it was let
    /// go of.
    async fn released(&mut self, schema: &str) -> Result<bool, Error> {
        let key = format!("dtxn decision log {schema}");
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            let row = sqlx::query("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut self.conn)
                .await?;
            if row.try_get::<bool, _>(0)? {
                sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
                    .bind(&key)
                    .execute(&mut self.conn)
                    .await?;
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops a cluster's node schemas (once their logs let go of them)
    /// and the cluster's schema. Every name is the benchmark's own.
    async fn drop_cluster(&mut self, made: &Made) -> Result<(), Error> {
        for schema in &made.nodes {
            if !self.released(schema).await? {
                eprintln!("warning: the log of {schema} is still open; dropping it anyway");
            }
        }
        for schema in made.nodes.iter().chain([&made.cluster]) {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }
}

/// The schemas one measurement made (or may have begun to make).
#[derive(Debug, Default)]
struct Made {
    cluster: String,
    nodes: Vec<String>,
}

/// What one measurement of one run found.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Transactions (or decisions) timed, over all nodes.
    total: usize,
    /// Wall time from the start of the first node to the end of the last.
    wall: Duration,
    /// The mean of each node's own rate, tx/s.
    per_node: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: usize,
    /// PostgreSQL commits (`xact_commit` delta).
    pg_commits: Option<i64>,
    /// PostgreSQL write transactions (next xid delta).
    pg_writes: Option<i64>,
    /// The 1-minute load average at the end.
    load: f64,
    /// Cores used during the timed part.
    cpu: Cpu,
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.total as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn commits_per_s(&self) -> Option<f64> {
        self.pg_commits
            .map(|c| c as f64 / self.wall.as_secs_f64().max(1e-9))
    }

    fn per_commit(&self) -> Option<f64> {
        self.pg_commits.map(|c| self.total as f64 / c.max(1) as f64)
    }

    fn per_write(&self) -> Option<f64> {
        self.pg_writes.map(|c| self.total as f64 / c.max(1) as f64)
    }
}

/// The same configuration as workload (g): room for twice the transactions
/// in flight.
fn coordinator_config(in_flight: usize) -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .max_transactions(2 * in_flight)
        .retention_count(1000)
        .build()
        .expect("a valid configuration")
}

/// The timed drives of several nodes at once, as one sample (without the
/// PostgreSQL side).
fn sample(drives: &[Drive], wall: Duration, cpu: Cpu) -> Sample {
    let mut latencies: Vec<Duration> = drives
        .iter()
        .flat_map(|d| d.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let merged = Drive {
        transactions: drives.iter().map(|d| d.transactions).sum(),
        elapsed: wall,
        latencies,
        failed: drives.iter().map(|d| d.failed).sum(),
    };
    Sample {
        total: merged.transactions,
        wall,
        per_node: drives.iter().map(Drive::throughput).sum::<f64>() / drives.len().max(1) as f64,
        p50_ms: merged.quantile_ms(0.5),
        p99_ms: merged.quantile_ms(0.99),
        failed: merged.failed,
        pg_commits: None,
        pg_writes: None,
        load: load_average(),
        cpu: cpu.cores_until(Cpu::now(), wall),
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// CPU time used so far, in seconds: by this process, by the PostgreSQL
/// server's processes (every process named `postgres`: the server's and
/// its backends, whoever their client), and by the whole machine (busy
/// time of every CPU). Read from `/proc`, in `USER_HZ` ticks (100 a
/// second on Linux).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    server: f64,
    machine: f64,
}

/// Linux's `USER_HZ`: the unit of CPU times in `/proc`.
const TICKS_PER_S: f64 = 100.0;

impl Cpu {
    fn now() -> Self {
        Self {
            bench: process_ticks("self").map_or(f64::NAN, |(_, t)| t),
            server: server_ticks(),
            machine: machine_busy_ticks(),
        }
    }

    /// The cores each used on average from `self` to `later`, over
    /// `wall`.
    fn cores_until(self, later: Self, wall: Duration) -> Self {
        let per = |a: f64, b: f64| (b - a) / TICKS_PER_S / wall.as_secs_f64().max(1e-9);
        Self {
            bench: per(self.bench, later.bench),
            server: per(self.server, later.server),
            machine: per(self.machine, later.machine),
        }
    }
}

/// The command name and user + system ticks of process `pid` (`self` for
/// this one).
fn process_ticks(pid: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    // After the command: field 3 (state) first; utime and stime are
    // fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn server_ticks() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| process_ticks(&pid))
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, ticks)| ticks)
        .sum()
}

/// Busy ticks of all CPUs (everything but idle and iowait).
fn machine_busy_ticks() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    // user nice system idle iowait irq softirq steal (guest time is
    // already in user).
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return f64::NAN;
    }
    v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
}

/// One coordinator without a log.
async fn memory(args: &Args, participants: &Arc<[Arc<dyn Participant>]>) -> Sample {
    let contender = Contender::Dtxn(TransactionCoordinator::with_config(coordinator_config(
        args.in_flight,
    )));
    let warm = drive(
        &contender,
        participants,
        args.in_flight,
        args.in_flight,
        false,
    )
    .await;
    let (cpu, started) = (Cpu::now(), Instant::now());
    let timed = drive(
        &contender,
        participants,
        args.transactions,
        args.in_flight,
        true,
    )
    .await;
    let wall = started.elapsed();
    let mut s = sample(&[timed], wall, cpu);
    s.failed += warm.failed;
    s
}

/// Joins nodes `b1..bk` of a fresh cluster; the schemas go in `made` first.
async fn join(
    url: &str,
    prefix: &str,
    k: usize,
    made: &mut Made,
) -> Result<Vec<PostgresLog>, Error> {
    let cluster = format!("dtxn_bench_{prefix}_{:08x}", fastrand::u32(..));
    made.cluster.clone_from(&cluster);
    made.nodes = (1..=k).map(|i| format!("{cluster}_b{i}")).collect();
    let mut logs = Vec::with_capacity(k);
    for i in 1..=k {
        let node = format!("b{i}");
        let options = ClusterOptions::new(node.clone(), format!("http://127.0.0.1:{}", 7000 + i))
            .lease(LEASE)
            .schema(cluster.clone());
        let log = PostgresLog::join_cluster(url, options)
            .await
            .map_err(|source| Error::Log { node, source })?;
        logs.push(log);
    }
    Ok(logs)
}

/// Waits for the statistics to be published, then reads the counters.
async fn settled(admin: &mut Admin, settle: Duration) -> Result<Counters, Error> {
    tokio::time::sleep(settle).await;
    admin.counters().await
}

fn with_server(mut s: Sample, before: Counters, after: Counters) -> Sample {
    s.pg_commits = Some(after.commits - before.commits);
    s.pg_writes = Some(after.next_xid - before.next_xid);
    s
}

/// k coordinators on one cluster, all driving at once.
async fn coordinators(
    args: &Args,
    url: &str,
    k: usize,
    participants: &Arc<[Arc<dyn Participant>]>,
    admin: &mut Admin,
    made: &mut Made,
) -> Result<Sample, Error> {
    let mut registry = ParticipantRegistry::new();
    registry
        .insert(Arc::new(Noop))
        .expect("a no-op participant has a recovery key");
    let resolver: Arc<dyn ParticipantResolver> = Arc::new(registry);
    let mut contenders = Vec::with_capacity(k);
    for (i, log) in join(url, "cluster", k, made).await?.into_iter().enumerate() {
        let (coordinator, _) = TransactionCoordinator::join_cluster(
            coordinator_config(args.in_flight),
            Arc::new(log),
            Arc::clone(&resolver),
        )
        .await
        .map_err(|source| Error::Log {
            node: format!("b{}", i + 1),
            source,
        })?;
        contenders.push(Contender::Dtxn(coordinator));
    }
    let warm = join_all(
        contenders
            .iter()
            .map(|c| drive(c, participants, args.in_flight, args.in_flight, false)),
    )
    .await;
    let before = settled(admin, args.settle).await?;
    let (cpu, started) = (Cpu::now(), Instant::now());
    let timed = join_all(
        contenders
            .iter()
            .map(|c| drive(c, participants, args.transactions, args.in_flight, true)),
    )
    .await;
    let wall = started.elapsed();
    let mut s = sample(&timed, wall, cpu);
    let after = settled(admin, args.settle).await?;
    s.failed += warm.iter().map(|d| d.failed).sum::<usize>();
    Ok(with_server(s, before, after))
}

/// The record a writer logs: a decision with 3 no-op participants.
fn record(txn: TransactionId, key: &Arc<str>) -> CommitRecord {
    CommitRecord {
        txn,
        participants: (0..DURABLE_PARTICIPANTS)
            .map(|_| LoggedParticipant {
                key: Arc::clone(key),
                payload: None,
            })
            .collect(),
    }
}

/// `n` decisions of incarnation `nonce` (sequence numbers from `from`)
/// logged through `log`, `in_flight` outstanding, each ended once durable.
async fn write_load(
    log: &Arc<PostgresLog>,
    nonce: u64,
    from: u64,
    n: usize,
    in_flight: usize,
) -> Drive {
    let key: Arc<str> = Arc::from(NOOP_KEY);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight.min(n))
        .map(|_| {
            let (log, next, key) = (Arc::clone(log), Arc::clone(&next), Arc::clone(&key));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n as u64 {
                        break;
                    }
                    let txn =
                        TransactionId::from_u128((u128::from(nonce) << 64) | u128::from(from + i));
                    let t0 = Instant::now();
                    match log.log_commit(record(txn, &key)).await {
                        Ok(()) => log.log_end(txn),
                        Err(_) => failed += 1,
                    }
                    latencies.push(t0.elapsed());
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await.expect("a writer task panicked");
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Drive {
        transactions: n,
        elapsed,
        latencies,
        failed,
    }
}

/// k bare logs on one cluster, all writing at once.
async fn writers(
    args: &Args,
    url: &str,
    k: usize,
    admin: &mut Admin,
    made: &mut Made,
) -> Result<Sample, Error> {
    let mut logs = Vec::with_capacity(k);
    for (i, log) in join(url, "writers", k, made).await?.into_iter().enumerate() {
        // Ids of an incarnation of its own, as a coordinator's.
        let nonce = fastrand::u64(1..);
        log.open(nonce).await.map_err(|source| Error::Log {
            node: format!("b{}", i + 1),
            source,
        })?;
        logs.push((Arc::new(log), nonce));
    }
    let warm = join_all(
        logs.iter()
            .map(|(log, nonce)| write_load(log, *nonce, 1, args.in_flight, args.in_flight)),
    )
    .await;
    let before = settled(admin, args.settle).await?;
    let from = 1 + args.in_flight as u64;
    let (cpu, started) = (Cpu::now(), Instant::now());
    let timed = join_all(
        logs.iter()
            .map(|(log, nonce)| write_load(log, *nonce, from, args.transactions, args.in_flight)),
    )
    .await;
    let wall = started.elapsed();
    let mut s = sample(&timed, wall, cpu);
    let after = settled(admin, args.settle).await?;
    s.failed += warm.iter().map(|d| d.failed).sum::<usize>();
    Ok(with_server(s, before, after))
}

/// The medians over runs of one k of one kind.
#[derive(Debug, Clone, Copy)]
struct Figures {
    k: usize,
    runs: usize,
    tx_per_s: f64,
    per_node: f64,
    over_memory: f64,
    p50_ms: f64,
    p99_ms: f64,
    pg_commits_per_s: f64,
    per_commit: f64,
    per_write: f64,
    failed: usize,
    load_max: f64,
    /// Cores used in the timed part by this process, by PostgreSQL, by
    /// the whole machine.
    cpu: Cpu,
}

fn row(k: usize, samples: &[(Sample, f64)]) -> Figures {
    let col = |f: &dyn Fn(&(Sample, f64)) -> Option<f64>| {
        median(&samples.iter().filter_map(f).collect::<Vec<_>>())
    };
    Figures {
        k,
        runs: samples.len(),
        tx_per_s: col(&|(s, _)| Some(s.throughput())),
        per_node: col(&|(s, _)| Some(s.per_node)),
        over_memory: col(&|(s, m)| Some(s.throughput() / m)),
        p50_ms: col(&|(s, _)| Some(s.p50_ms)),
        p99_ms: col(&|(s, _)| Some(s.p99_ms)),
        pg_commits_per_s: col(&|(s, _)| s.commits_per_s()),
        per_commit: col(&|(s, _)| s.per_commit()),
        per_write: col(&|(s, _)| s.per_write()),
        failed: samples.iter().map(|(s, _)| s.failed).sum(),
        load_max: samples.iter().map(|(s, _)| s.load).fold(f64::NAN, f64::max),
        cpu: Cpu {
            bench: col(&|(s, _)| Some(s.cpu.bench)),
            server: col(&|(s, _)| Some(s.cpu.server)),
            machine: col(&|(s, _)| Some(s.cpu.machine)),
        },
    }
}

fn print_table(title: &str, unit: &str, rows: &[Figures]) {
    println!("\n{title}\n");
    println!(
        "| k | aggregate {unit}/s | per node {unit}/s | × in memory | p50 ms | p99 ms | PG commits/s | {unit} per PG commit | {unit} per PG write xact | CPU cores: bench / PG / machine | failed |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} | {} |",
            r.k,
            r.tx_per_s,
            r.per_node,
            r.over_memory,
            r.p50_ms,
            r.p99_ms,
            r.pg_commits_per_s,
            r.per_commit,
            r.per_write,
            r.cpu.bench,
            r.cpu.server,
            r.cpu.machine,
            r.failed
        );
    }
}

/// A JSON number (`null` for NaN or infinity).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".to_owned()
    }
}

fn json_rows(rows: &[Figures]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"k\":{},\"runs\":{},\"tx_per_s\":{},\"per_node_tx_per_s\":{},\"over_memory\":{},\"p50_ms\":{},\"p99_ms\":{},\"pg_commits_per_s\":{},\"decisions_per_pg_commit\":{},\"decisions_per_pg_write_xact\":{},\"cpu_cores_bench\":{},\"cpu_cores_postgres\":{},\"cpu_cores_machine\":{},\"failed\":{},\"load_max\":{}}}",
                r.k,
                r.runs,
                num(r.tx_per_s),
                num(r.per_node),
                num(r.over_memory),
                num(r.p50_ms),
                num(r.p99_ms),
                num(r.pg_commits_per_s),
                num(r.per_commit),
                num(r.per_write),
                num(r.cpu.bench),
                num(r.cpu.server),
                num(r.cpu.machine),
                r.failed,
                num(r.load_max)
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args = Args::parse()?;
    let url = std::env::var(URL_VAR).map_err(|_| Error::NoUrl)?;
    let mut admin = Admin::connect(&url).await?;
    let fsync = admin.setting("fsync").await?;
    let synchronous_commit = admin.setting("synchronous_commit").await?;
    let version = admin.setting("server_version").await?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = load_average();
    println!(
        "PostgreSQL {version}, fsync={fsync}, synchronous_commit={synchronous_commit}; {cpus} CPUs, load {load_start:.2}; \
         {} runs, {} transactions per node, {} in flight per node, {DURABLE_PARTICIPANTS} no-op participants",
        args.runs, args.transactions, args.in_flight
    );
    let participants = many(DURABLE_PARTICIPANTS, || Arc::new(Noop));
    let mut memory_samples: Vec<Sample> = Vec::new();
    let mut coordinator_samples: Vec<(usize, Sample, f64)> = Vec::new();
    let mut writer_samples: Vec<(usize, Sample, f64)> = Vec::new();
    let mut other_clients_max = 0;
    for run in 0..args.runs {
        let mut found = Vec::new();
        for step in args.steps(run) {
            other_clients_max = other_clients_max.max(admin.other_clients().await?);
            let mut made = Made::default();
            let measured = match step {
                Step::Memory => Ok(memory(&args, &participants).await),
                Step::Coordinators(k) => {
                    coordinators(&args, &url, k, &participants, &mut admin, &mut made).await
                }
                Step::Writers(k) => writers(&args, &url, k, &mut admin, &mut made).await,
            };
            if !made.cluster.is_empty() {
                admin.drop_cluster(&made).await?;
            }
            let s = measured?;
            println!(
                "run {} {}: {:.0}/s ({:.0} per node), p50 {:.3} ms, p99 {:.3} ms, PG commits {}, write xacts {}, {} per commit, CPU cores bench {:.2} PG {:.2} machine {:.2}, failed {}, load {:.2}",
                run + 1,
                step.label(),
                s.throughput(),
                s.per_node,
                s.p50_ms,
                s.p99_ms,
                s.pg_commits.map_or("-".to_owned(), |c| c.to_string()),
                s.pg_writes.map_or("-".to_owned(), |c| c.to_string()),
                s.per_commit().map_or("-".to_owned(), |c| format!("{c:.1}")),
                s.cpu.bench,
                s.cpu.server,
                s.cpu.machine,
                s.failed,
                s.load
            );
            found.push((step, s));
        }
        let Some(&(_, m)) = found.iter().find(|(step, _)| *step == Step::Memory) else {
            unreachable!("every run measures in memory");
        };
        memory_samples.push(m);
        for (step, s) in found {
            match step {
                Step::Memory => {}
                Step::Coordinators(k) => coordinator_samples.push((k, s, m.throughput())),
                Step::Writers(k) => writer_samples.push((k, s, m.throughput())),
            }
        }
    }
    let rows = |samples: &[(usize, Sample, f64)]| -> Vec<Figures> {
        args.nodes
            .iter()
            .filter_map(|&k| {
                let of_k: Vec<(Sample, f64)> = samples
                    .iter()
                    .filter(|(j, _, _)| *j == k)
                    .map(|(_, s, m)| (*s, *m))
                    .collect();
                (!of_k.is_empty()).then(|| row(k, &of_k))
            })
            .collect()
    };
    let memory_row = row(
        1,
        &memory_samples
            .iter()
            .map(|s| (*s, s.throughput()))
            .collect::<Vec<_>>(),
    );
    let coordinator_rows = rows(&coordinator_samples);
    let writer_rows = rows(&writer_samples);
    let load_end = load_average();

    println!(
        "\nmedians of {} runs; {} per node, {} in flight per node; fsync={fsync}; load {load_start:.2} at start, {load_end:.2} at end; other client connections seen before a measurement: up to {other_clients_max}",
        args.runs, args.transactions, args.in_flight
    );
    println!(
        "\nin memory (one coordinator, no log): {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms, CPU cores bench {:.2} machine {:.2}",
        memory_row.tx_per_s,
        memory_row.p50_ms,
        memory_row.p99_ms,
        memory_row.cpu.bench,
        memory_row.cpu.machine
    );
    if !coordinator_rows.is_empty() {
        print_table(
            "k coordinators sharing one PostgreSQL (full cycle, 3 no-op participants)",
            "tx",
            &coordinator_rows,
        );
    }
    if !writer_rows.is_empty() {
        print_table(
            "k bare writers (log_commit + log_end on a joined PostgresLog, no coordinator)",
            "decisions",
            &writer_rows,
        );
    }
    println!(
        "\n{{\"bench\":\"cluster\",\"postgres\":\"{version}\",\"fsync\":\"{fsync}\",\"synchronous_commit\":\"{synchronous_commit}\",\"cpus\":{cpus},\"runs\":{},\"transactions_per_node\":{},\"in_flight_per_node\":{},\"participants\":{DURABLE_PARTICIPANTS},\"lease_s\":{},\"load_start\":{},\"load_end\":{},\"other_clients_max\":{other_clients_max},\"memory\":{{\"tx_per_s\":{},\"p50_ms\":{},\"p99_ms\":{}}},\"coordinators\":{},\"writers\":{}}}",
        args.runs,
        args.transactions,
        args.in_flight,
        LEASE.as_secs(),
        num(load_start),
        num(load_end),
        num(memory_row.tx_per_s),
        num(memory_row.p50_ms),
        num(memory_row.p99_ms),
        json_rows(&coordinator_rows),
        json_rows(&writer_rows),
    );
    Ok(())
}
