//! # dtxn-bench — what dtxn costs, measured against a floor and a baseline
//!
//! Every workload runs, in the same run and on the same runtime, up to three
//! contenders (see [`Contender`]):
//!
//! * the **floor**: the participants' own calls made directly — prepare on
//!   each, then commit on each — with no coordination at all, either one
//!   after another (the sequential floor) or each phase's calls at once
//!   with `join_all` (the **fan-out floor**, which is what a coordinator
//!   that calls participants concurrently has to beat);
//! * the **baseline**: the coordinator a team writes in an afternoon — one
//!   global `Mutex<HashMap<u64, Vec<Arc<dyn Participant>>>>`, participants
//!   called one after another;
//! * **dtxn**'s full cycle: begin, register N, prepare, commit;
//! * in workload (a), any [`Peer`]s passed to [`run_with_peers`]:
//!   transaction systems from other crates (`dtxn-bench-peers` has
//!   `dist_tx` and `steno`), kept out of this crate's dependencies.
//!
//! The workloads ([`Workload`]):
//!
//! * **(a) overhead**: no-op participants, 1/3/10/100 per transaction, at 1
//!   and at 1000 transactions in flight: throughput and time per
//!   transaction, ratios dtxn/floor, dtxn/fan-out floor, dtxn/baseline and
//!   dtxn/each peer;
//! * **(b) latency**: 100 participants answering in 5 ms ± 0.5 ms: p50/p99
//!   at 10 in flight against two round trips of the slowest participant
//!   (with the latency distributions of the floor, the baseline and dtxn),
//!   and throughput with p99 at 1000 in flight against the floor;
//! * **(c) early abort**: one participant votes Aborted after 1 ms, the
//!   others answer after 100 ms: how soon `prepare_transaction` returns;
//! * **(d) memory**: RSS per active 100-participant transaction, and RSS
//!   after many finished transactions against after few;
//! * **(e) allocations**: heap allocations per full cycle with no-op
//!   participants at each size of (a), one transaction at a time on a
//!   current-thread runtime, for both floors, the baseline and dtxn —
//!   counted by [`alloc::Counting`], which the binary must install as its
//!   global allocator (`None` otherwise);
//! * **(f) load**: the headline load — 1000 transactions in flight × 100
//!   participants answering in a uniform 0–5 ms: throughput, p50 and p99
//!   of dtxn against the fan-out floor;
//! * **(g) durable**: the full cycle at 1000 transactions in flight × 3
//!   no-op participants in memory against with the SQLite decision log on
//!   a temporary file (and the PostgreSQL log when
//!   [`BenchConfig::postgres_url`] is set), in alternating runs: throughput,
//!   p50 and p99 and the ratio durable/in memory; p50 one transaction at a
//!   time; and the cost of one fsync on the log's file system.
//!
//! Each timed figure is the median over [`BenchConfig::runs`] runs; ratios
//! are computed within each run, then their median is taken. [`run`]
//! produces a serialisable [`Report`], including dtxn's performance [`Target`]s
//! with whether each is met.

#![warn(missing_docs)]
// Denied, not forbidden: `alloc` implements the `unsafe` trait
// `GlobalAlloc` (and allows it there only).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod alloc;
pub mod contenders;
mod durable;
pub mod measure;
pub mod memory;
pub mod participants;
mod workloads;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use contenders::{Baseline, Contender, IdPool, Peer, PeerSession, Session};
pub use durable::{fsync_cost, DurableReport, DURABLE_PARTICIPANTS};
pub use measure::{drive, median, quantile, Drive};
pub use participants::{EarlyAbort, Latency, Noop};
pub use workloads::{
    AllocationReport, AllocationRow, EarlyAbortReport, LatencyCdf, LatencyHigh, LatencyLow,
    LatencyReport, LoadFigures, LoadReport, MemoryReport, OverheadRow, PeerRow, Speed,
};

/// One of the benchmark's workloads (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// (a) coordination overhead with no-op participants.
    Overhead,
    /// (b) end-to-end latency with 5 ms participants.
    Latency,
    /// (c) time to abort on an early no vote.
    EarlyAbort,
    /// (d) memory per active transaction and growth over time.
    Memory,
    /// (e) heap allocations per transaction.
    Allocations,
    /// (f) the headline load: 1000 in flight × 100 participants of 0–5 ms.
    Load,
    /// (g) durable mode: in memory against with a decision log.
    Durable,
}

/// What to run and how much of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchConfig {
    /// Workloads to run.
    pub workloads: Vec<Workload>,
    /// Participants per transaction in workload (a).
    pub sizes: Vec<usize>,
    /// Runs per timed measurement (medians are taken over them).
    pub runs: usize,
    /// Transactions in flight at once for the "high concurrency" cases of
    /// (a) and (b) (1000 in full runs).
    pub high_concurrency: usize,
    /// Participant calls per measurement in (a): transactions =
    /// `max(calls / size, 2 × concurrency)`.
    pub overhead_calls: usize,
    /// Wall time a peer's timed measurement in (a) aims at, in seconds: a
    /// peer runs as many transactions as fit at the speed seen in its
    /// warm-up (at least 2 × concurrency, at most as many as the others);
    /// its warm-up is one transaction per driving task, at least 50 (at
    /// most a tenth of the others' count).
    pub peer_budget_secs: f64,
    /// Participants per transaction in (b) and (c) and per active
    /// transaction in (d).
    pub latency_participants: usize,
    /// Transactions per run at 10 in flight in (b).
    pub latency_low_transactions: usize,
    /// Transactions per run of the baseline at 10 in flight in (b) (fewer:
    /// it calls the participants one after another, so each transaction
    /// takes about a second).
    pub latency_baseline_transactions: usize,
    /// Transactions per run at [`high_concurrency`](Self::high_concurrency) in (b).
    pub latency_high_transactions: usize,
    /// Transactions per run in (c) (each one measured, median taken).
    pub early_abort_transactions: usize,
    /// Active transactions held at once in (d).
    pub memory_active: usize,
    /// (d): RSS is read after this many finished transactions...
    pub memory_finished_small: usize,
    /// ...and again after this many.
    pub memory_finished_large: usize,
    /// `retention_count` of the coordinator in (d)'s growth measurement.
    pub memory_retention: usize,
    /// Cycles counted per contender and size in (e), after as many
    /// uncounted warm-up cycles.
    pub allocation_cycles: usize,
    /// Transactions in flight in (f).
    pub load_concurrency: usize,
    /// Participants per transaction in (f).
    pub load_participants: usize,
    /// Transactions per run and contender in (f) (after an untimed warm-up
    /// of one per transaction in flight).
    pub load_transactions: usize,
    /// Transactions in flight in (g).
    pub durable_concurrency: usize,
    /// Transactions per run and mode in (g) (after an untimed warm-up of
    /// one per transaction in flight).
    pub durable_transactions: usize,
    /// Transactions per run and mode in (g) one at a time.
    pub durable_alone_transactions: usize,
    /// Writes timed for the fsync cost in (g).
    pub fsync_samples: usize,
    /// Where (g) writes its SQLite logs and times fsync (in a temporary
    /// directory of its own); the system's temporary directory when `None`.
    /// The file system matters: on a tmpfs an fsync costs nothing.
    pub durable_dir: Option<PathBuf>,
    /// The PostgreSQL server (g) also measures the log in, a fresh schema
    /// per run, dropped afterwards; not measured when `None`. Never
    /// serialised (it may hold a password).
    #[serde(skip)]
    pub postgres_url: Option<PostgresUrl>,
}

/// A PostgreSQL URL (`postgres://user:password@host:port/db`), which
/// `Debug` does not print: it may hold a password.
#[derive(Clone)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostgresUrl(..)")
    }
}

/// A workload could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// (g): a decision log could not be opened.
    #[error("workload (g), {backend}: {source}")]
    Log {
        /// `SQLite` or `PostgreSQL`.
        backend: &'static str,
        /// Why.
        source: dtxn::log::LogError,
    },
    /// (g): its directory could not be used.
    #[error("workload (g): cannot write in {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl BenchConfig {
    /// The full benchmark: the counts the performance targets are set for.
    pub fn full() -> Self {
        Self {
            workloads: vec![
                Workload::Overhead,
                Workload::Latency,
                Workload::EarlyAbort,
                Workload::Memory,
                Workload::Allocations,
                Workload::Load,
                Workload::Durable,
            ],
            sizes: vec![1, 3, 10, 100],
            runs: 5,
            high_concurrency: 1000,
            overhead_calls: 200_000,
            peer_budget_secs: 0.3,
            latency_participants: 100,
            latency_low_transactions: 200,
            latency_baseline_transactions: 20,
            latency_high_transactions: 3000,
            early_abort_transactions: 20,
            memory_active: 1000,
            memory_finished_small: 10_000,
            memory_finished_large: 1_000_000,
            memory_retention: 100,
            allocation_cycles: 1000,
            load_concurrency: 1000,
            load_participants: 100,
            load_transactions: 5000,
            durable_concurrency: 1000,
            durable_transactions: 100_000,
            durable_alone_transactions: 2000,
            fsync_samples: 50,
            durable_dir: None,
            postgres_url: None,
        }
    }

    /// Small counts that finish in seconds even in a debug build (for CI);
    /// the figures mean little.
    pub fn quick() -> Self {
        Self {
            runs: 1,
            high_concurrency: 50,
            overhead_calls: 500,
            peer_budget_secs: 0.02,
            latency_participants: 20,
            latency_low_transactions: 20,
            latency_baseline_transactions: 10,
            latency_high_transactions: 100,
            early_abort_transactions: 3,
            memory_active: 50,
            memory_finished_small: 200,
            memory_finished_large: 1000,
            memory_retention: 20,
            allocation_cycles: 100,
            load_concurrency: 50,
            load_participants: 20,
            load_transactions: 100,
            durable_concurrency: 50,
            durable_transactions: 200,
            durable_alone_transactions: 20,
            fsync_samples: 5,
            ..Self::full()
        }
    }

    /// Progress steps [`run`] reports, for a progress bar.
    pub fn steps(&self) -> u64 {
        let runs = self.runs.max(1) as u64;
        self.workloads
            .iter()
            .map(|w| match w {
                Workload::Overhead => runs * self.sizes.len() as u64 * 2,
                Workload::Latency => runs * 2,
                Workload::EarlyAbort => runs,
                Workload::Memory => 2,
                Workload::Allocations => self.sizes.len() as u64,
                Workload::Load => runs,
                Workload::Durable => runs * 2 + 1,
            })
            .sum()
    }
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`, if known.
    pub model: Option<String>,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
        }
    }
}

/// One of dtxn's performance targets and whether it was met.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// The workload it belongs to: `a` to `g`.
    pub workload: &'static str,
    /// What dtxn aims for.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether the measurement meets the target.
    pub met: bool,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// What ran.
    pub config: BenchConfig,
    /// Workload (a), one row per size and concurrency.
    pub overhead: Option<Vec<OverheadRow>>,
    /// Workload (b).
    pub latency: Option<LatencyReport>,
    /// Workload (c).
    pub early_abort: Option<EarlyAbortReport>,
    /// Workload (d).
    pub memory: Option<MemoryReport>,
    /// Workload (e).
    pub allocations: Option<AllocationReport>,
    /// Workload (f).
    pub load: Option<LoadReport>,
    /// Workload (g).
    pub durable: Option<DurableReport>,
    /// dtxn's performance targets against the measurements.
    pub targets: Vec<Target>,
    /// Transactions that unexpectedly did not commit, over all workloads
    /// (should be 0; the figures are suspect otherwise).
    pub failed_transactions: usize,
    /// Wall time of the whole benchmark.
    pub elapsed_secs: f64,
}

/// Runs the benchmark on the current (multi-thread) tokio runtime, calling
/// `progress` with a label after each of [`BenchConfig::steps`] steps.
///
/// Memory (d) runs first, while the allocator holds the least, then
/// durable mode (g), the only workload that can fail (a log that cannot be
/// opened), then the others in order.
///
/// # Errors
///
/// A [`BenchError`] when (g) cannot open a decision log or use its
/// directory.
pub async fn run(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, BenchError> {
    run_with_peers(config, &[], progress).await
}

/// [`run`], with `peers` measured next to dtxn in workload (a) (a fresh
/// instance of each per measurement).
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_peers(
    config: &BenchConfig,
    peers: &[Arc<dyn Peer>],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, BenchError> {
    let started = std::time::Instant::now();
    let has = |w| config.workloads.contains(&w);
    let mut failed = 0;
    let memory = if has(Workload::Memory) {
        Some(workloads::memory(config, progress).await)
    } else {
        None
    };
    let durable = if has(Workload::Durable) {
        let (report, f) = durable::durable(config, progress).await?;
        failed += f;
        Some(report)
    } else {
        None
    };
    let overhead = if has(Workload::Overhead) {
        let (rows, f) = workloads::overhead(config, peers, progress).await;
        failed += f;
        Some(rows)
    } else {
        None
    };
    let latency = if has(Workload::Latency) {
        let (report, f) = workloads::latency(config, progress).await;
        failed += f;
        Some(report)
    } else {
        None
    };
    let early_abort = if has(Workload::EarlyAbort) {
        Some(workloads::early_abort(config, progress).await)
    } else {
        None
    };
    let allocations = if has(Workload::Allocations) {
        let (report, f) = workloads::allocations(config, progress).await;
        failed += f;
        Some(report)
    } else {
        None
    };
    let load = if has(Workload::Load) {
        let (report, f) = workloads::load(config, progress).await;
        failed += f;
        Some(report)
    } else {
        None
    };
    let mut report = Report {
        machine: Machine::detect(),
        config: config.clone(),
        overhead,
        latency,
        early_abort,
        memory,
        allocations,
        load,
        durable,
        targets: Vec::new(),
        failed_transactions: failed,
        elapsed_secs: started.elapsed().as_secs_f64(),
    };
    report.targets = workloads::targets(&report);
    if let Some(d) = &report.durable {
        report.targets.extend(durable::targets(d));
    }
    Ok(report)
}

/// Milliseconds of `d`, as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
