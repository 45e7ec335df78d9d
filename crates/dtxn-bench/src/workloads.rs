//! Workloads (a) to (f) and the performance targets dtxn is held to
//! (durable mode, (g), is in `durable`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator};
use futures_util::future::join_all;

use crate::measure::{drive, median, quantile};
use crate::participants::{many, EarlyAbort, Latency, Noop};
use crate::{alloc, memory, ms, BenchConfig, Contender, Peer, Report, Target};

/// Concurrency of the "low" case in workload (b).
const LATENCY_LOW_CONCURRENCY: usize = 10;
/// Mean answer time of a latency participant in (b).
const LATENCY_MEAN: Duration = Duration::from_millis(5);
/// Jitter (±) of a latency participant in (b).
const LATENCY_JITTER: Duration = Duration::from_micros(500);
/// When the no-voter answers in (c).
const ABORT_AFTER: Duration = Duration::from_millis(1);
/// When the other participants answer in (c).
const OTHERS_AFTER: Duration = Duration::from_millis(100);
/// A peer's warm-up in (a) runs at least this many transactions (when the
/// others run ten times as many).
const PEER_MIN_WARM_UP: usize = 50;
/// Points of each latency CDF in (b): the quantiles 0, 1/n, ..., 1.
const CDF_STEPS: usize = 200;
/// Transactions in flight in (d)'s growth measurement.
const MEMORY_CONCURRENCY: usize = 100;
/// Participants per transaction in (d)'s growth measurement.
const MEMORY_GROWTH_PARTICIPANTS: usize = 3;
/// The contenders of (a) other than the peers, in the order of a run's
/// samples: floor, baseline, dtxn, fan-out floor.
const OWN_CONTENDERS: usize = 4;
/// Fastest answer of a participant call in (f).
const LOAD_MIN_LATENCY: Duration = Duration::ZERO;
/// Slowest answer of a participant call in (f).
const LOAD_MAX_LATENCY: Duration = Duration::from_millis(5);

/// Throughput and time per transaction (wall time ÷ transactions, so
/// amortised over the concurrency).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Speed {
    /// Transactions per second.
    pub tx_per_s: f64,
    /// Microseconds of wall time per transaction.
    pub us_per_tx: f64,
}

impl Speed {
    fn from_micros(us_per_tx: f64) -> Self {
        Self {
            tx_per_s: 1e6 / us_per_tx.max(1e-9),
            us_per_tx,
        }
    }
}

/// Workload (a) at one size and concurrency (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OverheadRow {
    /// No-op participants per transaction.
    pub participants: usize,
    /// Transactions in flight.
    pub concurrency: usize,
    /// Transactions per measurement.
    pub transactions: usize,
    /// The floor (direct sequential calls).
    pub floor: Speed,
    /// The fan-out floor (each phase's calls made at once with `join_all`).
    pub fan_out_floor: Speed,
    /// The hand-written baseline.
    pub baseline: Speed,
    /// dtxn's full cycle.
    pub dtxn: Speed,
    /// dtxn's time per transaction ÷ the floor's (median of per-run ratios).
    pub dtxn_over_floor: f64,
    /// dtxn's time per transaction ÷ the fan-out floor's (median of per-run
    /// ratios).
    pub dtxn_over_fan_out_floor: f64,
    /// dtxn's time per transaction ÷ the baseline's (median of per-run
    /// ratios; below 1 means dtxn has more throughput).
    pub dtxn_over_baseline: f64,
    /// The peers, in the order given (empty without peers).
    pub peers: Vec<PeerRow>,
}

/// A peer in workload (a) at one size and concurrency (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerRow {
    /// The peer's name.
    pub name: &'static str,
    /// Transactions in its timed measurement (median over runs; fewer than
    /// the others' when its time budget runs out first, see
    /// [`BenchConfig::peer_budget_secs`]).
    pub transactions: usize,
    /// Its speed.
    pub speed: Speed,
    /// dtxn's time per transaction ÷ the peer's (median of per-run ratios;
    /// below 1 means dtxn is faster).
    pub dtxn_over_peer: f64,
}

/// Workload (b) at 10 transactions in flight (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyLow {
    /// Transactions in flight.
    pub concurrency: usize,
    /// Transactions per run.
    pub transactions: usize,
    /// Floor (concurrent direct calls) p50, ms.
    pub floor_p50_ms: f64,
    /// Floor p99, ms.
    pub floor_p99_ms: f64,
    /// dtxn p50, ms.
    pub dtxn_p50_ms: f64,
    /// dtxn p99, ms.
    pub dtxn_p99_ms: f64,
    /// dtxn p50 ÷ the reference (two round trips of the slowest participant).
    pub p50_over_reference: f64,
    /// dtxn p99 ÷ the reference.
    pub p99_over_reference: f64,
    /// dtxn p50 ÷ the floor's p50 (median of per-run ratios): what tokio's
    /// timers allow, since a 5 ms sleep takes longer than 5 ms.
    pub p50_over_floor: f64,
    /// dtxn p99 ÷ the floor's p99 (median of per-run ratios).
    pub p99_over_floor: f64,
    /// Baseline transactions per run (see
    /// [`BenchConfig::latency_baseline_transactions`]).
    pub baseline_transactions: usize,
    /// Baseline (participants called one after another) p50, ms.
    pub baseline_p50_ms: f64,
    /// Baseline p99, ms.
    pub baseline_p99_ms: f64,
}

/// The distribution of one contender's end-to-end latencies in (b) at 10
/// in flight, all runs' transactions pooled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyCdf {
    /// `floor`, `baseline` or `dtxn`.
    pub contender: &'static str,
    /// Transactions pooled.
    pub samples: usize,
    /// `[latency ms, fraction of transactions at or below it]`, at the
    /// quantiles 0, 0.005, ..., 1 (nearest rank; the first point is the
    /// fastest transaction).
    pub points: Vec<[f64; 2]>,
}

/// Workload (b) at high concurrency (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyHigh {
    /// Transactions in flight.
    pub concurrency: usize,
    /// Transactions per run.
    pub transactions: usize,
    /// Floor throughput, tx/s.
    pub floor_tx_per_s: f64,
    /// Floor p99, ms.
    pub floor_p99_ms: f64,
    /// dtxn throughput, tx/s.
    pub dtxn_tx_per_s: f64,
    /// dtxn p99, ms.
    pub dtxn_p99_ms: f64,
    /// dtxn throughput ÷ the floor's (median of per-run ratios).
    pub throughput_over_floor: f64,
}

/// Workload (b).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyReport {
    /// Participants per transaction.
    pub participants: usize,
    /// Mean answer time of each participant call, ms.
    pub mean_ms: f64,
    /// ± jitter of each answer, ms.
    pub jitter_ms: f64,
    /// Two round trips of the slowest possible participant, ms.
    pub reference_ms: f64,
    /// At 10 in flight.
    pub low: LatencyLow,
    /// At high concurrency.
    pub high: LatencyHigh,
    /// Latency distributions at 10 in flight: floor, baseline, dtxn.
    pub cdf: Vec<LatencyCdf>,
}

/// Workload (c) (medians over runs of per-run medians).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EarlyAbortReport {
    /// Participants per transaction (one of them votes Aborted).
    pub participants: usize,
    /// When the no vote comes, ms.
    pub abort_after_ms: f64,
    /// When the others answer, ms.
    pub others_after_ms: f64,
    /// Transactions measured per run.
    pub transactions: usize,
    /// From calling `prepare_transaction` to its return, ms.
    pub prepare_returns_ms: f64,
    /// From the Aborted vote to `prepare_transaction` returning, ms.
    pub after_abort_vote_ms: f64,
    /// The worst single transaction's time from vote to return, ms.
    pub max_after_abort_vote_ms: f64,
}

/// Workload (d) (measured once, not over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryReport {
    /// Active transactions held at once.
    pub active_transactions: usize,
    /// Participants registered in each.
    pub participants: usize,
    /// RSS before beginning them, KiB.
    pub rss_before_kib: u64,
    /// RSS with all of them active, KiB.
    pub rss_active_kib: u64,
    /// Peak RSS (VmHWM) of the process at that point, KiB.
    pub peak_rss_kib: u64,
    /// (active − before) ÷ transactions, bytes: transactions still
    /// registering (Active).
    pub bytes_per_active_transaction: f64,
    /// RSS once all of them are Prepared (in doubt), KiB.
    pub rss_prepared_kib: u64,
    /// (prepared − before) ÷ transactions, bytes.
    pub bytes_per_prepared_transaction: f64,
    /// Heap bytes held per transaction while registering, counted by the
    /// counting allocator (without the allocator's overhead and free
    /// space, which RSS includes); `None` when it is not installed.
    pub heap_bytes_per_active_transaction: Option<f64>,
    /// The same once Prepared.
    pub heap_bytes_per_prepared_transaction: Option<f64>,
    /// Finished transactions at the first reading.
    pub finished_small: usize,
    /// RSS after `finished_small` transactions, KiB.
    pub rss_after_small_kib: u64,
    /// Finished transactions at the second reading.
    pub finished_large: usize,
    /// RSS after `finished_large` transactions, KiB.
    pub rss_after_large_kib: u64,
    /// (large − small) ÷ small, percent.
    pub growth_percent: f64,
    /// `retention_count` used.
    pub retention_count: usize,
}

/// Workload (e) at one size: heap allocations per full cycle, one
/// transaction at a time (`None` when the counting allocator is not
/// installed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocationRow {
    /// No-op participants per transaction.
    pub participants: usize,
    /// The floor (direct sequential calls).
    pub floor: Option<f64>,
    /// The fan-out floor (each phase's calls at once with `join_all`).
    pub fan_out_floor: Option<f64>,
    /// The hand-written baseline.
    pub baseline: Option<f64>,
    /// dtxn's full cycle: begin, register N, prepare, commit.
    pub dtxn: Option<f64>,
}

/// Workload (e) (counted once, not over runs: the counts hardly vary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocationReport {
    /// Whether [`alloc::Counting`] is the global allocator; when not, every
    /// count is `None` (not measured), never 0.
    pub installed: bool,
    /// Cycles counted per contender and size (after as many uncounted
    /// warm-up cycles).
    pub cycles: usize,
    /// One row per size of (a).
    pub rows: Vec<AllocationRow>,
}

/// One contender's figures in (f), or one mode's in (g) (medians over
/// runs).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LoadFigures {
    /// Transactions per second.
    pub tx_per_s: f64,
    /// End-to-end latency p50, ms.
    pub p50_ms: f64,
    /// End-to-end latency p99, ms.
    pub p99_ms: f64,
}

/// Workload (f), the headline load (medians over runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Participants per transaction.
    pub participants: usize,
    /// Transactions in flight.
    pub concurrency: usize,
    /// Transactions per run and contender.
    pub transactions: usize,
    /// Fastest answer of a participant call, ms.
    pub min_latency_ms: f64,
    /// Slowest answer of a participant call, ms (uniform in between).
    pub max_latency_ms: f64,
    /// The fan-out floor (each phase's calls at once with `join_all`).
    pub floor: LoadFigures,
    /// dtxn's full cycle.
    pub dtxn: LoadFigures,
    /// dtxn's throughput ÷ the floor's (median of per-run ratios).
    pub throughput_over_floor: f64,
    /// dtxn's p50 ÷ the floor's (median of per-run ratios).
    pub p50_over_floor: f64,
    /// dtxn's p99 ÷ the floor's (median of per-run ratios).
    pub p99_over_floor: f64,
}

fn dtxn_capacity(config: &BenchConfig) -> usize {
    (config
        .high_concurrency
        .max(config.memory_active)
        .max(config.load_concurrency)
        * 2)
    .max(1000)
}

/// Workload (a). Returns the rows and the count of failed transactions.
pub(crate) async fn overhead(
    config: &BenchConfig,
    peers: &[Arc<dyn Peer>],
    progress: &(dyn Fn(&str) + Sync),
) -> (Vec<OverheadRow>, usize) {
    let concurrencies = [1, config.high_concurrency.max(1)];
    // Per (size, concurrency): per run, µs per tx of [floor, baseline,
    // dtxn, fan-out floor, peers...] and the peers' transaction counts.
    let width = OWN_CONTENDERS + peers.len();
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); config.sizes.len() * 2];
    let mut peer_counts: Vec<Vec<Vec<f64>>> = vec![Vec::new(); config.sizes.len() * 2];
    let mut counts = vec![0; config.sizes.len() * 2];
    let mut failed = 0;
    for run in 0..config.runs.max(1) {
        for (si, &size) in config.sizes.iter().enumerate() {
            let participants = many(size, || Arc::new(Noop));
            for (ci, &concurrency) in concurrencies.iter().enumerate() {
                let transactions = (config.overhead_calls / size.max(1)).max(2 * concurrency);
                let mut contenders = vec![
                    Contender::floor(false),
                    Contender::baseline(),
                    Contender::dtxn(dtxn_capacity(config), 1000),
                    Contender::floor(true),
                ];
                contenders.extend(peers.iter().map(|p| Contender::peer(p.as_ref())));
                let mut us = vec![0.0; width];
                let mut peer_n = Vec::with_capacity(peers.len());
                for (k, contender) in contenders.iter().enumerate() {
                    // Warm up (allocator, runtime, caches) before timing; a
                    // peer only as far as every driving task once (and at
                    // least 50 transactions, to estimate its speed).
                    let warm = if k < OWN_CONTENDERS {
                        transactions / 10
                    } else {
                        (transactions / 10).min(concurrency.max(PEER_MIN_WARM_UP))
                    }
                    .max(1);
                    let w = drive(contender, &participants, warm, concurrency, false).await;
                    let n = if k < OWN_CONTENDERS {
                        transactions
                    } else {
                        // A peer runs what fits in its time budget.
                        let per_tx = w.elapsed.as_secs_f64() / warm as f64;
                        let fit = (config.peer_budget_secs / per_tx.max(1e-9)) as usize;
                        let n = fit.clamp(2 * concurrency, transactions.max(2 * concurrency));
                        peer_n.push(n as f64);
                        n
                    };
                    let d = drive(contender, &participants, n, concurrency, false).await;
                    failed += d.failed;
                    us[k] = d.micros_per_tx();
                }
                samples[si * 2 + ci].push(us);
                peer_counts[si * 2 + ci].push(peer_n);
                counts[si * 2 + ci] = transactions;
                progress(&format!(
                    "(a) run {}: {size} participants × {concurrency} in flight",
                    run + 1
                ));
            }
        }
    }
    let mut rows = Vec::new();
    for (si, &size) in config.sizes.iter().enumerate() {
        for (ci, &concurrency) in concurrencies.iter().enumerate() {
            let s = &samples[si * 2 + ci];
            let col = |k: usize| median(&s.iter().map(|r| r[k]).collect::<Vec<_>>());
            let ratio = |k: usize| median(&s.iter().map(|r| r[2] / r[k]).collect::<Vec<_>>());
            let n = &peer_counts[si * 2 + ci];
            rows.push(OverheadRow {
                participants: size,
                concurrency,
                transactions: counts[si * 2 + ci],
                floor: Speed::from_micros(col(0)),
                fan_out_floor: Speed::from_micros(col(3)),
                baseline: Speed::from_micros(col(1)),
                dtxn: Speed::from_micros(col(2)),
                dtxn_over_floor: ratio(0),
                dtxn_over_fan_out_floor: ratio(3),
                dtxn_over_baseline: ratio(1),
                peers: peers
                    .iter()
                    .enumerate()
                    .map(|(p, peer)| PeerRow {
                        name: peer.name(),
                        transactions: median(&n.iter().map(|r| r[p]).collect::<Vec<_>>()) as usize,
                        speed: Speed::from_micros(col(OWN_CONTENDERS + p)),
                        dtxn_over_peer: ratio(OWN_CONTENDERS + p),
                    })
                    .collect(),
            });
        }
    }
    (rows, failed)
}

/// Workload (b). Returns the report and the count of failed transactions.
pub(crate) async fn latency(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> (LatencyReport, usize) {
    let participant = Latency::new(LATENCY_MEAN, LATENCY_JITTER);
    let participants = many(config.latency_participants, || Arc::new(participant));
    let reference = participant.max_delay() * 2;
    let high = config.high_concurrency.max(1);
    let mut low_runs: Vec<[f64; 8]> = Vec::new();
    let mut high_runs: Vec<[f64; 5]> = Vec::new();
    // All runs' latencies at 10 in flight: floor, baseline, dtxn.
    let mut pooled: [Vec<Duration>; 3] = Default::default();
    let mut failed = 0;
    for run in 0..config.runs.max(1) {
        let floor = Contender::floor(true);
        let baseline = Contender::baseline();
        let dtxn = Contender::dtxn(dtxn_capacity(config), 1000);
        let n = config.latency_low_transactions;
        let f = drive(&floor, &participants, n, LATENCY_LOW_CONCURRENCY, true).await;
        let d = drive(&dtxn, &participants, n, LATENCY_LOW_CONCURRENCY, true).await;
        let nb = config.latency_baseline_transactions.max(1);
        let b = drive(&baseline, &participants, nb, LATENCY_LOW_CONCURRENCY, true).await;
        failed += f.failed + d.failed + b.failed;
        low_runs.push([
            f.quantile_ms(0.5),
            f.quantile_ms(0.99),
            d.quantile_ms(0.5),
            d.quantile_ms(0.99),
            d.quantile_ms(0.5) / f.quantile_ms(0.5),
            d.quantile_ms(0.99) / f.quantile_ms(0.99),
            b.quantile_ms(0.5),
            b.quantile_ms(0.99),
        ]);
        for (all, drive) in pooled.iter_mut().zip([f, b, d]) {
            all.extend(drive.latencies);
        }
        progress(&format!(
            "(b) run {}: {LATENCY_LOW_CONCURRENCY} in flight",
            run + 1
        ));

        let n = config.latency_high_transactions;
        let f = drive(&floor, &participants, n, high, true).await;
        let d = drive(&dtxn, &participants, n, high, true).await;
        failed += f.failed + d.failed;
        high_runs.push([
            f.throughput(),
            f.quantile_ms(0.99),
            d.throughput(),
            d.quantile_ms(0.99),
            d.throughput() / f.throughput(),
        ]);
        progress(&format!("(b) run {}: {high} in flight", run + 1));
    }
    let col4 = |k: usize| median(&low_runs.iter().map(|r| r[k]).collect::<Vec<_>>());
    let col5 = |k: usize| median(&high_runs.iter().map(|r| r[k]).collect::<Vec<_>>());
    let reference_ms = ms(reference);
    let report = LatencyReport {
        participants: config.latency_participants,
        mean_ms: ms(LATENCY_MEAN),
        jitter_ms: ms(LATENCY_JITTER),
        reference_ms,
        low: LatencyLow {
            concurrency: LATENCY_LOW_CONCURRENCY,
            transactions: config.latency_low_transactions,
            floor_p50_ms: col4(0),
            floor_p99_ms: col4(1),
            dtxn_p50_ms: col4(2),
            dtxn_p99_ms: col4(3),
            p50_over_reference: col4(2) / reference_ms,
            p99_over_reference: col4(3) / reference_ms,
            p50_over_floor: col4(4),
            p99_over_floor: col4(5),
            baseline_transactions: config.latency_baseline_transactions.max(1),
            baseline_p50_ms: col4(6),
            baseline_p99_ms: col4(7),
        },
        high: LatencyHigh {
            concurrency: high,
            transactions: config.latency_high_transactions,
            floor_tx_per_s: col5(0),
            floor_p99_ms: col5(1),
            dtxn_tx_per_s: col5(2),
            dtxn_p99_ms: col5(3),
            throughput_over_floor: col5(4),
        },
        cdf: ["floor", "baseline", "dtxn"]
            .into_iter()
            .zip(pooled)
            .map(|(contender, mut all)| {
                all.sort_unstable();
                LatencyCdf {
                    contender,
                    samples: all.len(),
                    points: cdf(&all),
                }
            })
            .collect(),
    };
    (report, failed)
}

/// `[ms, fraction]` at the quantiles 0, 1/[`CDF_STEPS`], ..., 1 of sorted
/// `latencies` (empty when there are none).
fn cdf(latencies: &[Duration]) -> Vec<[f64; 2]> {
    if latencies.is_empty() {
        return Vec::new();
    }
    (0..=CDF_STEPS)
        .map(|i| {
            let q = i as f64 / CDF_STEPS as f64;
            [ms(quantile(latencies, q)), q]
        })
        .collect()
}

/// Workload (c).
pub(crate) async fn early_abort(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> EarlyAbortReport {
    let n = config.latency_participants.max(2);
    let slow = many(n - 1, || {
        Arc::new(Latency::new(OTHERS_AFTER, Duration::ZERO))
    });
    let mut prepare_runs = Vec::new();
    let mut after_runs = Vec::new();
    let mut worst: f64 = 0.0;
    for run in 0..config.runs.max(1) {
        let coordinator = TransactionCoordinator::with_config(
            CoordinatorConfig::builder()
                .max_transactions(dtxn_capacity(config))
                .build()
                .expect("a valid configuration"),
        );
        let mut prepare = Vec::new();
        let mut after = Vec::new();
        let mut txns = Vec::new();
        for _ in 0..config.early_abort_transactions.max(1) {
            let aborter = EarlyAbort::new(ABORT_AFTER);
            let Ok(txn) = coordinator.begin_transaction() else {
                continue;
            };
            txns.push(txn);
            for p in slow.iter() {
                let _ = coordinator.register_participant(txn, Arc::clone(p));
            }
            let _ = coordinator.register_participant(txn, aborter.clone() as Arc<dyn Participant>);
            let t0 = Instant::now();
            let _ = coordinator.prepare_transaction(txn).await;
            let t1 = Instant::now();
            prepare.push(ms(t1 - t0));
            if let Some(voted) = aborter.voted_at() {
                let a = ms(t1.saturating_duration_since(voted));
                worst = worst.max(a);
                after.push(a);
            }
        }
        // Let the background rollbacks finish before the next run.
        join_all(txns.iter().map(|&t| coordinator.rollback_transaction(t))).await;
        prepare_runs.push(median(&prepare));
        after_runs.push(median(&after));
        progress(&format!("(c) run {}", run + 1));
    }
    EarlyAbortReport {
        participants: n,
        abort_after_ms: ms(ABORT_AFTER),
        others_after_ms: ms(OTHERS_AFTER),
        transactions: config.early_abort_transactions.max(1),
        prepare_returns_ms: median(&prepare_runs),
        after_abort_vote_ms: median(&after_runs),
        max_after_abort_vote_ms: worst,
    }
}

/// Workload (d).
pub(crate) async fn memory(config: &BenchConfig, progress: &(dyn Fn(&str) + Sync)) -> MemoryReport {
    // Active transactions: participants exist before the reading, so only
    // the coordinator's own memory is counted.
    let active = config.memory_active.max(1);
    let participants = many(config.latency_participants, || Arc::new(Noop));
    let coordinator = TransactionCoordinator::with_config(
        CoordinatorConfig::builder()
            .max_transactions(active)
            .build()
            .expect("a valid configuration"),
    );
    let mut txns = Vec::with_capacity(active);
    let rss_before = memory::current_kib();
    let heap = crate::alloc::Weighing::start();
    for _ in 0..active {
        if let Ok(txn) = coordinator.begin_transaction() {
            for p in participants.iter() {
                let _ = coordinator.register_participant(txn, Arc::clone(p));
            }
            txns.push(txn);
        }
    }
    let (rss_active, _) = memory::rss_kib().unwrap_or((0, 0));
    let heap_active = heap.bytes();
    // The same transactions once voted and waiting for the decision: the
    // per-participant state (votes, phase 2, timings) now exists.
    join_all(txns.iter().map(|&t| coordinator.prepare_transaction(t))).await;
    let (rss_prepared, peak) = memory::rss_kib().unwrap_or((0, 0));
    // The futures of the prepare calls are gone by now: what is left is the
    // coordinator's.
    let heap_prepared = heap.bytes();
    drop(heap);
    join_all(txns.iter().map(|&t| coordinator.rollback_transaction(t))).await;
    drop(txns);
    drop(coordinator);
    progress("(d) active transactions");

    // Growth: RSS after few finished transactions against after many.
    let growth_participants = many(MEMORY_GROWTH_PARTICIPANTS, || Arc::new(Noop));
    let dtxn = Contender::dtxn(dtxn_capacity(config), config.memory_retention);
    let small = config.memory_finished_small;
    let large = config.memory_finished_large.max(small);
    drive(
        &dtxn,
        &growth_participants,
        small,
        MEMORY_CONCURRENCY,
        false,
    )
    .await;
    let rss_small = memory::current_kib();
    drive(
        &dtxn,
        &growth_participants,
        large - small,
        MEMORY_CONCURRENCY,
        false,
    )
    .await;
    let rss_large = memory::current_kib();
    progress("(d) finished transactions");

    MemoryReport {
        active_transactions: active,
        participants: config.latency_participants,
        rss_before_kib: rss_before,
        rss_active_kib: rss_active,
        peak_rss_kib: peak,
        bytes_per_active_transaction: rss_active.saturating_sub(rss_before) as f64 * 1024.0
            / active as f64,
        rss_prepared_kib: rss_prepared,
        bytes_per_prepared_transaction: rss_prepared.saturating_sub(rss_before) as f64 * 1024.0
            / active as f64,
        heap_bytes_per_active_transaction: heap_active.map(|b| b as f64 / active as f64),
        heap_bytes_per_prepared_transaction: heap_prepared.map(|b| b as f64 / active as f64),
        finished_small: small,
        rss_after_small_kib: rss_small,
        finished_large: large,
        rss_after_large_kib: rss_large,
        growth_percent: (rss_large as f64 - rss_small as f64) / (rss_small.max(1) as f64) * 100.0,
        retention_count: config.memory_retention,
    }
}

/// Workload (e). Returns the report and the count of failed transactions.
///
/// Each size is counted on a thread of its own with a current-thread
/// runtime, so every allocation of a cycle (the contender's, the
/// participants', tokio's) happens on the counting thread and nothing else
/// runs there.
pub(crate) async fn allocations(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> (AllocationReport, usize) {
    let cycles = config.allocation_cycles.max(1);
    let capacity = dtxn_capacity(config);
    let mut rows = Vec::with_capacity(config.sizes.len());
    let mut failed = 0;
    for &size in &config.sizes {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dtxn-bench-alloc".to_owned())
            .spawn(move || {
                let _ = tx.send(count_allocations(size, cycles, capacity));
            })
            .expect("a thread for counting allocations");
        let (row, f) = rx.await.expect("the allocation counting thread panicked");
        failed += f;
        rows.push(row);
        progress(&format!("(e) {size} participants"));
    }
    let report = AllocationReport {
        installed: alloc::installed(),
        cycles,
        rows,
    };
    (report, failed)
}

/// (e) at one size, on the calling thread (outside any runtime): warm-up,
/// then `cycles` counted full cycles per contender, one at a time.
fn count_allocations(size: usize, cycles: usize, capacity: usize) -> (AllocationRow, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread tokio runtime");
    // dtxn's coordinator may spawn its background work when built.
    let _guard = rt.enter();
    let participants = many(size, || Arc::new(Noop));
    let run = |contender: &Contender, keys: std::ops::Range<u64>| {
        rt.block_on(async {
            let mut failed = 0;
            for key in keys {
                if !matches!(contender.cycle(key, &participants).await, Ok(true)) {
                    failed += 1;
                }
            }
            failed
        })
    };
    let n = cycles as u64;
    let mut failed = 0;
    let mut per_tx = |contender: Contender| {
        failed += run(&contender, 0..n);
        let (f, count) = alloc::count(|| run(&contender, n..2 * n));
        failed += f;
        count.map(|c| c as f64 / cycles as f64)
    };
    let row = AllocationRow {
        participants: size,
        floor: per_tx(Contender::floor(false)),
        fan_out_floor: per_tx(Contender::floor(true)),
        baseline: per_tx(Contender::baseline()),
        dtxn: per_tx(Contender::dtxn(capacity, 1000)),
    };
    (row, failed)
}

/// Workload (f). Returns the report and the count of failed transactions.
pub(crate) async fn load(
    config: &BenchConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> (LoadReport, usize) {
    let participant = Latency::uniform(LOAD_MIN_LATENCY, LOAD_MAX_LATENCY);
    let participants = many(config.load_participants, || Arc::new(participant));
    let concurrency = config.load_concurrency.max(1);
    let n = config.load_transactions.max(1);
    let mut runs: Vec<[f64; 9]> = Vec::new();
    let mut failed = 0;
    for run in 0..config.runs.max(1) {
        let floor = Contender::floor(true);
        let dtxn = Contender::dtxn(dtxn_capacity(config), 1000);
        // Untimed warm-up: one transaction per driving task.
        for contender in [&floor, &dtxn] {
            failed += drive(contender, &participants, concurrency, concurrency, false)
                .await
                .failed;
        }
        let f = drive(&floor, &participants, n, concurrency, true).await;
        let d = drive(&dtxn, &participants, n, concurrency, true).await;
        failed += f.failed + d.failed;
        runs.push([
            f.throughput(),
            f.quantile_ms(0.5),
            f.quantile_ms(0.99),
            d.throughput(),
            d.quantile_ms(0.5),
            d.quantile_ms(0.99),
            d.throughput() / f.throughput(),
            d.quantile_ms(0.5) / f.quantile_ms(0.5),
            d.quantile_ms(0.99) / f.quantile_ms(0.99),
        ]);
        progress(&format!(
            "(f) run {}: {concurrency} in flight × {} participants",
            run + 1,
            config.load_participants
        ));
    }
    let col = |k: usize| median(&runs.iter().map(|r| r[k]).collect::<Vec<_>>());
    let report = LoadReport {
        participants: config.load_participants,
        concurrency,
        transactions: n,
        min_latency_ms: ms(participant.min_delay()),
        max_latency_ms: ms(participant.max_delay()),
        floor: LoadFigures {
            tx_per_s: col(0),
            p50_ms: col(1),
            p99_ms: col(2),
        },
        dtxn: LoadFigures {
            tx_per_s: col(3),
            p50_ms: col(4),
            p99_ms: col(5),
        },
        throughput_over_floor: col(6),
        p50_over_floor: col(7),
        p99_over_floor: col(8),
    };
    (report, failed)
}

/// The performance targets, checked against `report`: those of the
/// driver redesign (docs/PERFORMANCE.md, "Driver v2"), which replaced the
/// first pass's for (a), (b) and (e); (c) and (d) are kept as they were.
pub(crate) fn targets(report: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(rows) = &report.overhead {
        overhead_targets(rows, &mut out);
    }
    if let Some(l) = &report.latency {
        out.push(Target {
            workload: "b",
            target: format!(
                "p50 within 1.05× of the floor's, {} in flight",
                l.low.concurrency
            ),
            measured: format!(
                "{:.2} ms = {:.2}× the floor's {:.2} ms",
                l.low.dtxn_p50_ms, l.low.p50_over_floor, l.low.floor_p50_ms
            ),
            met: l.low.p50_over_floor <= 1.05,
        });
        out.push(Target {
            workload: "b",
            target: format!(
                "p99 within 1.05× of the floor's, {} in flight",
                l.low.concurrency
            ),
            measured: format!(
                "{:.2} ms = {:.2}× the floor's {:.2} ms",
                l.low.dtxn_p99_ms, l.low.p99_over_floor, l.low.floor_p99_ms
            ),
            met: l.low.p99_over_floor <= 1.05,
        });
        out.push(Target {
            workload: "b",
            target: format!(
                "throughput ≥ 0.95× the fan-out floor's, {} in flight × {} participants",
                l.high.concurrency, l.participants
            ),
            measured: format!("{:.2}×", l.high.throughput_over_floor),
            met: l.high.throughput_over_floor >= 0.95,
        });
    }
    if let Some(a) = report.allocations.as_ref().filter(|a| a.installed) {
        allocation_target(a, &mut out);
    }
    if let Some(f) = &report.load {
        out.push(Target {
            workload: "f",
            target: format!(
                "throughput ≥ 0.95× the fan-out floor's on the headline load \
                 ({} in flight × {} participants, {:.0}–{:.0} ms)",
                f.concurrency, f.participants, f.min_latency_ms, f.max_latency_ms
            ),
            measured: format!("{:.2}×", f.throughput_over_floor),
            met: f.throughput_over_floor >= 0.95,
        });
    }
    if let Some(e) = &report.early_abort {
        out.push(Target {
            workload: "c",
            target: "prepare returns within 2 ms of the first Aborted vote".to_owned(),
            measured: format!(
                "{:.3} ms (median; worst {:.3} ms)",
                e.after_abort_vote_ms, e.max_after_abort_vote_ms
            ),
            met: e.after_abort_vote_ms <= 2.0,
        });
    }
    if let Some(m) = &report.memory {
        out.push(Target {
            workload: "d",
            target: format!(
                "RSS after {} finished within 10% of after {}",
                m.finished_large, m.finished_small
            ),
            measured: format!("{:+.1}%", m.growth_percent),
            met: m.growth_percent <= 10.0,
        });
        out.push(Target {
            workload: "d",
            target: format!(
                "≤ 8 KiB per active {}-participant transaction",
                m.participants
            ),
            measured: match (
                m.heap_bytes_per_active_transaction,
                m.heap_bytes_per_prepared_transaction,
            ) {
                (Some(active), Some(prepared)) => format!(
                    "heap {active:.0} B registering, {prepared:.0} B prepared \
                     (RSS {:.0} B, {:.0} B)",
                    m.bytes_per_active_transaction, m.bytes_per_prepared_transaction
                ),
                _ => format!(
                    "RSS {:.0} B registering, {:.0} B prepared",
                    m.bytes_per_active_transaction, m.bytes_per_prepared_transaction
                ),
            },
            // The heap held when it is counted; RSS otherwise (which also
            // counts the allocator's overhead and free space, so it varies
            // by a few hundred bytes from run to run).
            met: m
                .heap_bytes_per_active_transaction
                .zip(m.heap_bytes_per_prepared_transaction)
                .map_or(
                    m.bytes_per_active_transaction
                        .max(m.bytes_per_prepared_transaction),
                    |(a, p)| a.max(p),
                )
                <= 8192.0,
        });
    }
    out
}

/// (a): the full cycle against the sequential floor at 3 and 100
/// participants, and throughput against the baseline and each peer at
/// every size, per number in flight.
fn overhead_targets(rows: &[OverheadRow], out: &mut Vec<Target>) {
    let mut concurrencies: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    for c in concurrencies {
        let at_c: Vec<&OverheadRow> = rows.iter().filter(|r| r.concurrency == c).collect();
        for size in [3, 100] {
            if let Some(r) = at_c.iter().find(|r| r.participants == size) {
                out.push(Target {
                    workload: "a",
                    target: format!(
                        "full cycle ≤ 2× the sequential floor at {size} participants, {c} in flight"
                    ),
                    measured: format!("{:.2}×", r.dtxn_over_floor),
                    met: r.dtxn_over_floor <= 2.0,
                });
            }
        }
        out.push(Target {
            workload: "a",
            target: format!("throughput ≥ the baseline's at every size, {c} in flight"),
            measured: at_c
                .iter()
                .map(|r| {
                    format!(
                        "{}p: {:.2}×",
                        r.participants,
                        r.dtxn.tx_per_s / r.baseline.tx_per_s
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            met: at_c.iter().all(|r| r.dtxn_over_baseline <= 1.0),
        });
        let names: Vec<&str> = at_c
            .first()
            .map(|r| r.peers.iter().map(|p| p.name).collect())
            .unwrap_or_default();
        for name in names {
            out.push(Target {
                workload: "a",
                target: format!("throughput ≥ {name}'s at every size, {c} in flight"),
                measured: at_c
                    .iter()
                    .filter_map(|r| {
                        peer(r, name).map(|p| {
                            format!(
                                "{}p: {:.2}×",
                                r.participants,
                                r.dtxn.tx_per_s / p.speed.tx_per_s
                            )
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                met: at_c
                    .iter()
                    .all(|r| peer(r, name).is_some_and(|p| p.dtxn_over_peer <= 1.0)),
            });
        }
    }
}

/// `name`'s figures in `row`.
fn peer<'a>(row: &'a OverheadRow, name: &str) -> Option<&'a PeerRow> {
    row.peers.iter().find(|p| p.name == name)
}

/// (e): no allocation per participant beyond the participants' own
/// futures. dtxn's allocations beyond the floor's may grow with the
/// participant list's doublings (a handful at 100 participants, as the
/// baseline's do), not with each participant: one more allocation per
/// participant would add 1 per added participant, so the growth between
/// the smallest and the largest size must stay under half of that.
fn allocation_target(a: &AllocationReport, out: &mut Vec<Target>) {
    let extra: Vec<(usize, f64)> = a
        .rows
        .iter()
        .filter_map(|r| Some((r.participants, r.dtxn? - r.floor?)))
        .collect();
    let (Some(&(n0, e0)), Some(&(n1, e1))) = (
        extra.iter().min_by_key(|(n, _)| *n),
        extra.iter().max_by_key(|(n, _)| *n),
    ) else {
        return;
    };
    let per_added = if n1 > n0 {
        (e1 - e0) / (n1 - n0) as f64
    } else {
        0.0
    };
    out.push(Target {
        workload: "e",
        target:
            "allocations ≤ the floor's + a constant: none per participant beyond its own futures"
                .to_owned(),
        measured: format!(
            "beyond the floor's: {}; {per_added:.2} per added participant",
            extra
                .iter()
                .map(|(n, e)| format!("{n}p +{e:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        met: per_added < 0.5,
    });
}

#[cfg(test)]
mod tests {
    use super::{allocation_target, AllocationReport, AllocationRow};

    /// The (e) verdict on allocations per cycle: (participants, floor, dtxn).
    fn verdict(counts: &[(usize, f64, f64)]) -> super::Target {
        let report = AllocationReport {
            installed: true,
            cycles: 1000,
            rows: counts
                .iter()
                .map(|&(participants, floor, dtxn)| AllocationRow {
                    participants,
                    floor: Some(floor),
                    fan_out_floor: None,
                    baseline: None,
                    dtxn: Some(dtxn),
                })
                .collect(),
        };
        let mut out = Vec::new();
        allocation_target(&report, &mut out);
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[test]
    fn allocations_that_grow_with_the_list_doublings_meet_the_allocation_target() {
        let target = verdict(&[
            (1, 2.0, 5.0),
            (3, 6.0, 9.0),
            (10, 20.0, 25.0),
            (100, 200.0, 209.0),
        ]);
        assert!(target.met, "{target:?}");
        assert!(target.measured.contains("100p +9"), "{target:?}");
    }

    #[test]
    fn one_more_allocation_per_participant_misses_the_allocation_target() {
        let target = verdict(&[
            (1, 2.0, 6.0),
            (3, 6.0, 12.0),
            (10, 20.0, 33.0),
            (100, 200.0, 303.0),
        ]);
        assert!(!target.met, "{target:?}");
    }
}
