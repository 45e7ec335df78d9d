//! Workload (g), durable mode, at tiny sizes: what it reports, where it
//! writes, and how it fails. Nothing about timings is asserted.

use std::sync::atomic::{AtomicU64, Ordering};

use dtxn_bench::{BenchConfig, BenchError, PostgresUrl, Workload};

/// (g) alone, at sizes that take milliseconds.
fn tiny() -> BenchConfig {
    let mut config = BenchConfig::quick();
    config.workloads = vec![Workload::Durable];
    config.runs = 2;
    config.durable_concurrency = 8;
    config.durable_transactions = 40;
    config.durable_alone_transactions = 5;
    config.fsync_samples = 3;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_is_measured_in_memory_and_with_the_sqlite_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny();
    config.durable_dir = Some(dir.path().to_owned());
    let steps = AtomicU64::new(0);
    let report = dtxn_bench::run(&config, &|_| {
        steps.fetch_add(1, Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_eq!(steps.into_inner(), config.steps(), "one progress step each");
    assert_eq!(report.failed_transactions, 0);
    assert!(report.overhead.is_none() && report.load.is_none());

    let d = report.durable.expect("(g) ran");
    assert_eq!((d.participants, d.concurrency, d.transactions), (3, 8, 40));
    assert_eq!((d.alone_transactions, d.fsync_samples), (5, 3));
    assert_eq!(d.dir, dir.path().display().to_string());
    for f in [&d.memory, &d.sqlite] {
        assert!(f.tx_per_s.is_finite() && f.tx_per_s > 0.0, "{d:?}");
        assert!(f.p50_ms.is_finite() && f.p99_ms >= f.p50_ms, "{d:?}");
    }
    assert!(d.sqlite_over_memory.is_finite() && d.sqlite_over_memory > 0.0);
    assert!(d.postgres.is_none() && d.postgres_over_memory.is_none());
    assert!(d.alone_memory_p50_ms.is_finite() && d.alone_sqlite_p50_ms.is_finite());
    assert!(d.fsync_ms.is_finite() && d.fsync_ms >= 0.0);
    let targets: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.workload == "g")
        .collect();
    assert_eq!(targets.len(), 2, "{:?}", report.targets);

    // The logs and the fsync probe were in a temporary directory of their
    // own, removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_durable_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir");
    let mut config = tiny();
    config.durable_dir = Some(missing.clone());
    let result = dtxn_bench::run(&config, &|_| {}).await;
    let Err(BenchError::Io { path, .. }) = result else {
        panic!("{result:?}");
    };
    assert_eq!(path, missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_server_is_an_error_naming_it() {
    let mut config = tiny();
    config.postgres_url = Some(PostgresUrl::new(
        "postgres://bench:secret@127.0.0.1:1/nowhere",
    ));
    let result = dtxn_bench::run(&config, &|_| {}).await;
    let Err(e @ BenchError::Log { backend, .. }) = &result else {
        panic!("{result:?}");
    };
    assert_eq!(*backend, "PostgreSQL");
    let message = e.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    assert!(!format!("{config:?}").contains("secret"), "{config:?}");
}
