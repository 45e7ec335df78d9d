//! Durable mode measured: workload (g) of `dtxn bench` (`dtxn bench
//! --workloads durable`), run alone: the full cycle at 1000 transactions
//! in flight × 3 no-op participants, in memory and with the SQLite decision
//! log on a temporary file, in alternating runs; the same one transaction
//! at a time; then the cost of one fsync on the same file system. Medians
//! over the runs.
//!
//! With `DTXN_BENCH_POSTGRES_URL` set, the same work with the log in
//! PostgreSQL (a fresh schema per run, dropped afterwards) is measured too.
//!
//! `cargo run --release -p dtxn-bench --example durable -- [runs] [transactions]`

use std::process::ExitCode;

use dtxn_bench::{BenchConfig, PostgresUrl, Workload};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut config = BenchConfig::full();
    config.workloads = vec![Workload::Durable];
    let mut args = std::env::args().skip(1);
    if let Some(runs) = args.next().and_then(|s| s.parse().ok()) {
        config.runs = runs;
    }
    if let Some(n) = args.next().and_then(|s| s.parse().ok()) {
        config.durable_transactions = n;
    }
    config.postgres_url = std::env::var("DTXN_BENCH_POSTGRES_URL")
        .ok()
        .map(PostgresUrl::new);
    let report = match dtxn_bench::run(&config, &|step| println!("{step}")).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(d) = &report.durable else {
        unreachable!("workload (g) was asked for");
    };
    println!(
        "medians of {} runs, {} transactions each, {} in flight x {} no-op participants:",
        config.runs, d.transactions, d.concurrency, d.participants
    );
    println!(
        "  in memory: {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms",
        d.memory.tx_per_s, d.memory.p50_ms, d.memory.p99_ms
    );
    println!(
        "  durable (SQLite log): {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms; throughput {:.2}x in memory's",
        d.sqlite.tx_per_s, d.sqlite.p50_ms, d.sqlite.p99_ms, d.sqlite_over_memory
    );
    if let (Some(p), Some(ratio)) = (&d.postgres, d.postgres_over_memory) {
        println!(
            "  durable (PostgreSQL log): {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms; throughput {ratio:.2}x in memory's",
            p.tx_per_s, p.p50_ms, p.p99_ms
        );
    }
    println!(
        "  one at a time: p50 in memory {:.3} ms, durable {:.3} ms",
        d.alone_memory_p50_ms, d.alone_sqlite_p50_ms
    );
    println!(
        "  one fsync of a 4 KiB write in {}: {:.3} ms (median of {})",
        d.dir, d.fsync_ms, d.fsync_samples
    );
    if report.failed_transactions > 0 {
        println!(
            "warning: {} transactions did not commit; the figures are suspect",
            report.failed_transactions
        );
    }
    ExitCode::SUCCESS
}
