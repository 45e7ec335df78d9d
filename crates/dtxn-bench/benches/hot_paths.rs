//! Criterion benchmarks of dtxn's hot paths with no-op participants:
//! `begin` + `register` alone, and the full cycle, next to the floor and
//! the baseline. Run with `cargo bench -p dtxn-bench`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator};
use dtxn_bench::{participants::many, Contender, Noop};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

fn begin_register(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("begin_register_rollback");
    for n in [1usize, 3, 100] {
        let participants = many(n, || Arc::new(Noop) as Arc<dyn Participant>);
        let coordinator = TransactionCoordinator::with_config(
            CoordinatorConfig::builder()
                .retention_count(100)
                .build()
                .expect("a valid configuration"),
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let txn = coordinator.begin_transaction().expect("capacity");
                for p in participants.iter() {
                    black_box(coordinator.register_participant(txn, Arc::clone(p))).ok();
                }
                // Rolling back an Active transaction calls every participant;
                // needed so the table does not fill up.
                rt.block_on(coordinator.rollback_transaction(txn)).ok();
            });
        });
    }
    group.finish();
}

fn full_cycle(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    for n in [1usize, 3, 100] {
        let participants = many(n, || Arc::new(Noop) as Arc<dyn Participant>);
        let mut group = c.benchmark_group(format!("full_cycle/{n}"));
        let contenders = [
            ("floor", Contender::floor(false)),
            ("baseline", Contender::baseline()),
            ("dtxn", Contender::dtxn(1000, 100)),
        ];
        for (name, contender) in contenders {
            let mut key = 0u64;
            group.bench_function(name, |b| {
                b.iter(|| {
                    key += 1;
                    black_box(rt.block_on(contender.cycle(key, &participants))).ok();
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, begin_register, full_cycle);
criterion_main!(benches);
