//! Durable mode measured: the full cycle at 1000 transactions in flight ×
//! 3 no-op participants, in memory and with the SQLite decision log on a
//! temporary file, in alternating runs on one 2-worker runtime; then the
//! cost of one fsync on the same file system. Medians over the runs.
//!
//! With `DTXN_BENCH_POSTGRES_URL` set, the same work with the log in
//! PostgreSQL (a fresh schema per run) is measured too.
//!
//! `cargo run --release -p dtxn-bench --example durable -- [runs] [transactions]`

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::log::{DecisionLog, ParticipantRegistry, PostgresLog, SqliteLog};
use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator};
use dtxn_bench::{drive, median, participants::many, Contender, Noop};

const IN_FLIGHT: usize = 1000;

fn config() -> CoordinatorConfig {
    CoordinatorConfig::builder()
        .max_transactions(2 * IN_FLIGHT)
        .retention_count(1000)
        .build()
        .expect("a valid configuration")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let transactions: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let participants: Arc<[Arc<dyn Participant>]> =
        many(3, || Arc::new(Noop) as Arc<dyn Participant>);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let postgres_url = std::env::var("DTXN_BENCH_POSTGRES_URL").ok();
    let (mut memory, mut durable, mut postgres) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        if let Some(url) = &postgres_url {
            let schema = format!("dtxn_bench_{:016x}", fastrand::u64(..));
            let log = PostgresLog::open_in_schema(url, &schema)
                .await
                .expect("the PostgreSQL log opens");
            let p = drive(
                &Contender::Dtxn(coordinator(Arc::new(log)).await),
                &participants,
                transactions,
                IN_FLIGHT,
                true,
            )
            .await;
            assert_eq!(p.failed, 0);
            println!(
                "run {run}: postgres {:.0} tx/s p50 {:.3} ms p99 {:.3} ms",
                p.throughput(),
                p.quantile_ms(0.5),
                p.quantile_ms(0.99)
            );
            postgres.push(p);
        }
        let c = Contender::Dtxn(TransactionCoordinator::with_config(config()));
        let m = drive(&c, &participants, transactions, IN_FLIGHT, true).await;
        let path = dir.path().join(format!("decisions-{run}.db"));
        let log = SqliteLog::open(&path).await.expect("the log opens");
        let (coordinator, _) =
            TransactionCoordinator::recover(config(), Arc::new(log), &ParticipantRegistry::new())
                .await
                .expect("recovery of an empty log");
        let d = drive(
            &Contender::Dtxn(coordinator),
            &participants,
            transactions,
            IN_FLIGHT,
            true,
        )
        .await;
        assert_eq!((m.failed, d.failed), (0, 0), "every transaction commits");
        println!(
            "run {run}: memory {:.0} tx/s p50 {:.3} ms p99 {:.3} ms | durable {:.0} tx/s p50 {:.3} ms p99 {:.3} ms",
            m.throughput(),
            m.quantile_ms(0.5),
            m.quantile_ms(0.99),
            d.throughput(),
            d.quantile_ms(0.5),
            d.quantile_ms(0.99)
        );
        memory.push(m);
        durable.push(d);
    }
    let med = |v: &[dtxn_bench::Drive], f: &dyn Fn(&dtxn_bench::Drive) -> f64| {
        median(&v.iter().map(f).collect::<Vec<_>>())
    };
    let ratio = median(
        &memory
            .iter()
            .zip(&durable)
            .map(|(m, d)| d.throughput() / m.throughput())
            .collect::<Vec<_>>(),
    );
    // Latency without queueing: one transaction at a time.
    let (mut alone_memory, mut alone_durable) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let c = Contender::Dtxn(TransactionCoordinator::with_config(config()));
        alone_memory.push(drive(&c, &participants, 2000, 1, true).await);
        let path = dir.path().join(format!("alone-{run}.db"));
        let log = SqliteLog::open(&path).await.expect("the log opens");
        let (coordinator, _) =
            TransactionCoordinator::recover(config(), Arc::new(log), &ParticipantRegistry::new())
                .await
                .expect("recovery of an empty log");
        alone_durable
            .push(drive(&Contender::Dtxn(coordinator), &participants, 2000, 1, true).await);
    }
    let fsync = fsync_median(dir.path(), 50);
    println!(
        "medians of {runs} runs, {transactions} transactions each, {IN_FLIGHT} in flight x 3 no-op participants:"
    );
    println!(
        "  in memory: {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms",
        med(&memory, &|d| d.throughput()),
        med(&memory, &|d| d.quantile_ms(0.5)),
        med(&memory, &|d| d.quantile_ms(0.99))
    );
    println!(
        "  durable (SQLite log): {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms; throughput {:.2}x in memory's",
        med(&durable, &|d| d.throughput()),
        med(&durable, &|d| d.quantile_ms(0.5)),
        med(&durable, &|d| d.quantile_ms(0.99)),
        ratio
    );
    if !postgres.is_empty() {
        println!(
            "  durable (PostgreSQL log): {:.0} tx/s, p50 {:.3} ms, p99 {:.3} ms",
            med(&postgres, &|d| d.throughput()),
            med(&postgres, &|d| d.quantile_ms(0.5)),
            med(&postgres, &|d| d.quantile_ms(0.99)),
        );
    }
    println!(
        "  one at a time: p50 in memory {:.3} ms, durable {:.3} ms",
        med(&alone_memory, &|d| d.quantile_ms(0.5)),
        med(&alone_durable, &|d| d.quantile_ms(0.5)),
    );
    println!(
        "  one fsync of a 4 KiB write here: {:.3} ms (median of 50)",
        fsync.as_secs_f64() * 1e3
    );
}

/// A coordinator on `log` (empty: nothing to recover).
async fn coordinator(log: Arc<dyn DecisionLog>) -> TransactionCoordinator {
    TransactionCoordinator::recover(config(), log, &ParticipantRegistry::new())
        .await
        .expect("recovery of an empty log")
        .0
}

/// The median time of writing 4 KiB to a file in `dir` and `fsync`ing it.
fn fsync_median(dir: &std::path::Path, n: usize) -> Duration {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("a probe file");
    let block = [0x5a_u8; 4096];
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&block).expect("write");
            file.sync_all().expect("fsync");
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(times[n / 2])
}
