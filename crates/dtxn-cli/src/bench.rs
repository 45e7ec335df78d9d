//! `dtxn bench`: what dtxn costs, measured in one run against the floor
//! (the participants' own calls, no coordination), a hand-written
//! baseline coordinator and, in workload (a), the peer crates `dist_tx`
//! and `steno` (see `dtxn-bench-peers`); and, in workload (g), what its
//! durable mode (a decision log) costs against in memory. See the
//! `dtxn-bench` crate for the workloads and `docs/PERFORMANCE.md` for
//! results.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dtxn_bench::{BenchConfig, PostgresUrl, Report, Workload};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A workload of the benchmark, named by a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// Overhead: throughput with no-op participants.
    A,
    /// Latency: participants answering in about 5 ms.
    B,
    /// Early abort: how soon prepare returns after a No vote.
    C,
    /// Memory per active transaction, and growth over time.
    D,
    /// Heap allocations per transaction (counted by the `dtxn` binary's
    /// allocator).
    E,
    /// The headline load: 1000 in flight × 100 participants of 0–5 ms.
    F,
    /// Durable mode: in memory against with the SQLite decision log (and
    /// PostgreSQL with --postgres-url), and the cost of one fsync.
    #[value(alias = "durable")]
    G,
}

impl From<WorkloadArg> for Workload {
    fn from(w: WorkloadArg) -> Self {
        match w {
            WorkloadArg::A => Workload::Overhead,
            WorkloadArg::B => Workload::Latency,
            WorkloadArg::C => Workload::EarlyAbort,
            WorkloadArg::D => Workload::Memory,
            WorkloadArg::E => Workload::Allocations,
            WorkloadArg::F => Workload::Load,
            WorkloadArg::G => Workload::Durable,
        }
    }
}

/// Options of `dtxn bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated: a (overhead), b (latency),
    /// c (early abort), d (memory), e (allocations per transaction),
    /// f (headline load), g or durable (durable mode: the decision log).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,e,f,g")]
    pub workloads: Vec<WorkloadArg>,
    /// Participants per transaction in workloads (a) and (e),
    /// comma-separated (each 1 to 100).
    #[arg(long, value_delimiter = ',', default_value = "1,3,10,100",
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub sizes: Vec<u8>,
    /// Runs per measurement; medians are reported (default 5, or 1 with
    /// --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub runs: Option<u16>,
    /// Small counts that finish in seconds (for CI); the figures mean
    /// little.
    #[arg(long)]
    pub quick: bool,
    /// Workload (d): finished transactions after which the resident memory
    /// (RSS) is read the second time (default 1,000,000).
    #[arg(long)]
    pub finished: Option<usize>,
    /// Workload (d): finished transactions after which the resident memory
    /// (RSS) is read the first time (default 10,000).
    #[arg(long)]
    pub finished_baseline: Option<usize>,
    /// Print one line of JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also write an SVG chart of workload (a)'s throughput to this file.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<std::path::PathBuf>,
    /// Also write an SVG chart of workload (b)'s latency CDF (floor,
    /// baseline, dtxn at 10 in flight) to this file.
    #[arg(long, value_name = "PATH")]
    pub cdf_svg: Option<std::path::PathBuf>,
    /// Leave the peer crates (dist_tx, steno) out of workload (a).
    #[arg(long)]
    pub no_peers: bool,
    /// Workload (g): the directory its SQLite logs are written in and
    /// fsync is timed in (default: the system's temporary directory). On a
    /// tmpfs an fsync costs nothing: choose a directory on the disk a log
    /// would be on.
    #[arg(long, value_name = "DIR")]
    pub durable_dir: Option<std::path::PathBuf>,
    /// Workload (g): also measure the PostgreSQL decision log on this
    /// server (postgres://user:password@host:port/db), in a fresh schema
    /// per run, dropped afterwards.
    #[arg(
        long,
        value_name = "URL",
        env = "DTXN_BENCH_POSTGRES_URL",
        hide_env_values = true
    )]
    pub postgres_url: Option<String>,
}

impl BenchArgs {
    fn config(&self) -> BenchConfig {
        let mut config = if self.quick {
            BenchConfig::quick()
        } else {
            BenchConfig::full()
        };
        let mut workloads: Vec<Workload> = self.workloads.iter().map(|&w| w.into()).collect();
        workloads.dedup();
        config.workloads = workloads;
        config.sizes = self.sizes.iter().map(|&s| usize::from(s)).collect();
        if let Some(runs) = self.runs {
            config.runs = usize::from(runs);
        }
        if let Some(n) = self.finished_baseline {
            config.memory_finished_small = n;
        }
        if let Some(n) = self.finished {
            config.memory_finished_large = n.max(config.memory_finished_small);
        }
        config.durable_dir.clone_from(&self.durable_dir);
        config.postgres_url = self.postgres_url.clone().map(PostgresUrl::new);
        config
    }
}

/// Writes one of the charts of a report to a file.
type ChartWriter = fn(&Report, &std::path::Path) -> Result<(), Box<dyn std::error::Error>>;

/// Runs the benchmark (it builds its own runtime: call outside one).
pub fn execute(args: BenchArgs) -> ExitCode {
    let config = args.config();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_time();
    if config.postgres_url.is_some() && config.workloads.contains(&Workload::Durable) {
        // Only the PostgreSQL log needs tokio's I/O driver; the other
        // workloads keep running on the runtime they were measured on.
        builder.enable_io();
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dtxn: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = ProgressBar::with_draw_target(Some(config.steps()), ProgressDrawTarget::hidden());
    if !args.json && std::io::stderr().is_terminal() {
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    let progress = |label: &str| {
        bar.set_message(label.to_owned());
        bar.inc(1);
    };
    let peers = if args.no_peers {
        Vec::new()
    } else {
        dtxn_bench_peers::all()
    };
    let report = runtime.block_on(dtxn_bench::run_with_peers(&config, &peers, &progress));
    bar.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("dtxn bench: {e}");
            return ExitCode::from(2);
        }
    };
    let charts: [(_, ChartWriter); 2] = [
        (&args.svg, crate::chart::write_svg),
        (&args.cdf_svg, crate::chart::write_latency_cdf_svg),
    ];
    for (path, write) in charts {
        if let Some(path) = path {
            if let Err(e) = write(&report, path) {
                eprintln!("dtxn: cannot write the chart to {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    if args.json {
        match crate::units::json_line(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("dtxn bench: cannot serialize the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", render(&report));
    }
    ExitCode::SUCCESS
}

/// The report as readable tables.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let m = &report.machine;
    let _ = writeln!(
        s,
        "dtxn bench: {} CPUs ({}), {} run(s) per measurement, medians\n",
        m.cpus,
        m.model.as_deref().unwrap_or("unknown CPU"),
        report.config.runs
    );
    if let Some(rows) = &report.overhead {
        let _ = writeln!(s, "(a) overhead, no-op participants (tx/s; µs per transaction = wall time ÷ transactions)");
        let names: Vec<&str> = rows
            .first()
            .map(|r| r.peers.iter().map(|p| p.name).collect())
            .unwrap_or_default();
        let _ = write!(
            s,
            "{:>12} {:>9} {:>22} {:>22} {:>22} {:>22}",
            "participants", "in flight", "floor", "fan-out floor", "baseline", "dtxn"
        );
        for name in &names {
            let _ = write!(s, " {name:>22}");
        }
        let _ = write!(
            s,
            " {:>10} {:>12} {:>10}",
            "dtxn/floor", "dtxn/fan-out", "dtxn/base"
        );
        for name in &names {
            let _ = write!(s, " {:>14}", format!("dtxn/{name}"));
        }
        let _ = writeln!(s);
        for r in rows {
            let cell =
                |sp: &dtxn_bench::Speed| format!("{:.0} ({:.2} µs)", sp.tx_per_s, sp.us_per_tx);
            let _ = write!(
                s,
                "{:>12} {:>9} {:>22} {:>22} {:>22} {:>22}",
                r.participants,
                r.concurrency,
                cell(&r.floor),
                cell(&r.fan_out_floor),
                cell(&r.baseline),
                cell(&r.dtxn),
            );
            for p in &r.peers {
                let _ = write!(s, " {:>22}", cell(&p.speed));
            }
            let _ = write!(
                s,
                " {:>9.2}× {:>11.2}× {:>9.2}×",
                r.dtxn_over_floor, r.dtxn_over_fan_out_floor, r.dtxn_over_baseline
            );
            for p in &r.peers {
                let _ = write!(s, " {:>13.2}×", p.dtxn_over_peer);
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "  (floor: each phase's calls one after another; fan-out floor: at once, join_all)"
        );
        let _ = writeln!(s, "  (ratios are time per transaction: below 1 is faster)");
        if let Some(r) = rows.iter().find(|r| !r.peers.is_empty()) {
            let _ = writeln!(
                s,
                "  (peers timed over fewer transactions where their {:.2} s budget ran out: e.g. {} participants × {} in flight: {} of {})",
                report.config.peer_budget_secs,
                r.participants,
                r.concurrency,
                r.peers
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.transactions))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.transactions
            );
        }
        let _ = writeln!(s);
    }
    if let Some(l) = &report.latency {
        let _ = writeln!(
            s,
            "(b) latency, {} participants answering in {:.1} ± {:.1} ms; reference = 2 × slowest = {:.1} ms",
            l.participants, l.mean_ms, l.jitter_ms, l.reference_ms
        );
        let _ = writeln!(
            s,
            "  {} in flight: floor p50 {:.2} ms p99 {:.2} ms | dtxn p50 {:.2} ms ({:.2}× ref, {:.2}× floor) p99 {:.2} ms ({:.2}× ref, {:.2}× floor)",
            l.low.concurrency,
            l.low.floor_p50_ms,
            l.low.floor_p99_ms,
            l.low.dtxn_p50_ms,
            l.low.p50_over_reference,
            l.low.p50_over_floor,
            l.low.dtxn_p99_ms,
            l.low.p99_over_reference,
            l.low.p99_over_floor
        );
        let _ = writeln!(
            s,
            "  {} in flight: baseline (one participant after another, {} transactions per run) p50 {:.1} ms p99 {:.1} ms",
            l.low.concurrency,
            l.low.baseline_transactions,
            l.low.baseline_p50_ms,
            l.low.baseline_p99_ms
        );
        let _ = writeln!(
            s,
            "  {} in flight: floor {:.0} tx/s p99 {:.1} ms | dtxn {:.0} tx/s p99 {:.1} ms | dtxn/floor throughput {:.2}×\n",
            l.high.concurrency, l.high.floor_tx_per_s, l.high.floor_p99_ms, l.high.dtxn_tx_per_s,
            l.high.dtxn_p99_ms, l.high.throughput_over_floor
        );
    }
    if let Some(e) = &report.early_abort {
        let _ = writeln!(
            s,
            "(c) early abort, {} participants, one votes Aborted after {:.0} ms, the others answer after {:.0} ms",
            e.participants, e.abort_after_ms, e.others_after_ms
        );
        let _ = writeln!(
            s,
            "  prepare returns after {:.3} ms; {:.3} ms after the Aborted vote (worst {:.3} ms)\n",
            e.prepare_returns_ms, e.after_abort_vote_ms, e.max_after_abort_vote_ms
        );
    }
    if let Some(mem) = &report.memory {
        let _ = writeln!(
            s,
            "(d) memory: {} active × {} participants: RSS {} → {} KiB registering = {:.0} B per transaction; \
             {} KiB prepared = {:.0} B per transaction (peak {} KiB)",
            mem.active_transactions,
            mem.participants,
            mem.rss_before_kib,
            mem.rss_active_kib,
            mem.bytes_per_active_transaction,
            mem.rss_prepared_kib,
            mem.bytes_per_prepared_transaction,
            mem.peak_rss_kib
        );
        if let (Some(active), Some(prepared)) = (
            mem.heap_bytes_per_active_transaction,
            mem.heap_bytes_per_prepared_transaction,
        ) {
            let _ = writeln!(
                s,
                "  heap held (counting allocator): {active:.0} B per transaction registering, {prepared:.0} B prepared"
            );
        }
        let _ = writeln!(
            s,
            "  RSS after {} finished: {} KiB; after {}: {} KiB ({:+.1}%, retention_count {})\n",
            mem.finished_small,
            mem.rss_after_small_kib,
            mem.finished_large,
            mem.rss_after_large_kib,
            mem.growth_percent,
            mem.retention_count
        );
    }
    if let Some(a) = &report.allocations {
        if a.installed {
            let _ = writeln!(
                s,
                "(e) heap allocations per transaction, no-op participants, one at a time ({} cycles counted after {} warm-up)",
                a.cycles, a.cycles
            );
        } else {
            let _ = writeln!(
                s,
                "(e) heap allocations per transaction: not measured (the counting allocator dtxn_bench::alloc::Counting is not installed)"
            );
        }
        let _ = writeln!(
            s,
            "{:>12} {:>10} {:>14} {:>10} {:>10}",
            "participants", "floor", "fan-out floor", "baseline", "dtxn"
        );
        let cell = |n: Option<f64>| n.map_or_else(|| "—".to_owned(), |n| format!("{n:.1}"));
        for r in &a.rows {
            let _ = writeln!(
                s,
                "{:>12} {:>10} {:>14} {:>10} {:>10}",
                r.participants,
                cell(r.floor),
                cell(r.fan_out_floor),
                cell(r.baseline),
                cell(r.dtxn)
            );
        }
        let _ = writeln!(s);
    }
    if let Some(l) = &report.load {
        let _ = writeln!(
            s,
            "(f) headline load: {} in flight × {} participants answering in {:.0}–{:.0} ms (uniform), {} transactions per run",
            l.concurrency, l.participants, l.min_latency_ms, l.max_latency_ms, l.transactions
        );
        let _ = writeln!(
            s,
            "  fan-out floor {:.0} tx/s p50 {:.1} ms p99 {:.1} ms | dtxn {:.0} tx/s p50 {:.1} ms p99 {:.1} ms",
            l.floor.tx_per_s,
            l.floor.p50_ms,
            l.floor.p99_ms,
            l.dtxn.tx_per_s,
            l.dtxn.p50_ms,
            l.dtxn.p99_ms
        );
        let _ = writeln!(
            s,
            "  dtxn/floor: throughput {:.2}×, p50 {:.2}×, p99 {:.2}×\n",
            l.throughput_over_floor, l.p50_over_floor, l.p99_over_floor
        );
    }
    if let Some(d) = &report.durable {
        let _ = writeln!(
            s,
            "(g) durable mode: {} in flight × {} no-op participants, {} transactions per run; decision logs in {}",
            d.concurrency, d.participants, d.transactions, d.dir
        );
        let _ = writeln!(
            s,
            "{:>24} {:>12} {:>10} {:>10} {:>14}",
            "", "tx/s", "p50 ms", "p99 ms", "÷ in memory"
        );
        let row = |s: &mut String, name: &str, f: &dtxn_bench::LoadFigures, ratio: Option<f64>| {
            let ratio = ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
            let _ = writeln!(
                s,
                "{name:>24} {:>12.0} {:>10.3} {:>10.3} {ratio:>14}",
                f.tx_per_s, f.p50_ms, f.p99_ms
            );
        };
        row(&mut s, "in memory", &d.memory, None);
        row(&mut s, "SQLite log", &d.sqlite, Some(d.sqlite_over_memory));
        match &d.postgres {
            Some(p) => row(&mut s, "PostgreSQL log", p, d.postgres_over_memory),
            None => {
                let _ = writeln!(
                    s,
                    "{:>24} not measured (--postgres-url or DTXN_BENCH_POSTGRES_URL)",
                    "PostgreSQL log"
                );
            }
        }
        let _ = writeln!(
            s,
            "  one at a time ({} per run): p50 in memory {:.3} ms, SQLite log {:.3} ms",
            d.alone_transactions, d.alone_memory_p50_ms, d.alone_sqlite_p50_ms
        );
        let _ = writeln!(
            s,
            "  one fsync of a 4 KiB write there: {:.3} ms (median of {})\n",
            d.fsync_ms, d.fsync_samples
        );
    }
    if !report.targets.is_empty() {
        let _ = writeln!(
            s,
            "targets (what dtxn aims for, and whether this run met it)"
        );
        for t in &report.targets {
            let _ = writeln!(
                s,
                "  [{}] ({}) {}: {}",
                if t.met { "met" } else { "NOT met" },
                t.workload,
                t.target,
                t.measured
            );
        }
    }
    if report.failed_transactions > 0 {
        let _ = writeln!(
            s,
            "warning: {} transactions did not commit; the figures are suspect",
            report.failed_transactions
        );
    }
    let _ = writeln!(s, "total wall time {:.1} s", report.elapsed_secs);
    s
}
