//! A fixed workload for profilers (`valgrind --tool=callgrind`, `perf`):
//! `N` full cycles (begin, register, prepare, commit) with `P` no-op
//! participants on a current-thread runtime, one transaction at a time.
//!
//! `cargo build --release -p dtxn-bench --example profile_cycle` then
//! `valgrind --tool=callgrind target/release/examples/profile_cycle 20000 3`.
//!
//! With a third argument `allocations` (`profile_cycle 20000 3
//! allocations`) it also prints heap allocations per cycle, counted by
//! [`dtxn_bench::alloc::Counting`] over a second pass of as many cycles
//! (leave it off under callgrind, so instructions per cycle stay those of
//! one pass).
//!
//! `PROFILE_CONTENDER=floor` (or `fanout`, `baseline`) profiles that
//! contender instead of dtxn, for instruction counts to compare with.

use std::sync::Arc;

use dtxn::Participant;
use dtxn_bench::{alloc, participants::many, Contender, Noop};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let count_allocations = args.next().as_deref() == Some("allocations");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let _guard = rt.enter();
    let participants = many(size, || Arc::new(Noop) as Arc<dyn Participant>);
    let contender = match std::env::var("PROFILE_CONTENDER").as_deref() {
        Ok("floor") => Contender::floor(false),
        Ok("fanout") => Contender::floor(true),
        Ok("baseline") => Contender::baseline(),
        Ok("dtxn") | Err(_) => Contender::dtxn(1000, 100),
        Ok(other) => panic!("PROFILE_CONTENDER={other}: expected floor, fanout, baseline or dtxn"),
    };
    let started = std::time::Instant::now();
    for key in 0..cycles {
        rt.block_on(contender.cycle(key, &participants))
            .expect("a committed cycle");
    }
    let per = started.elapsed().as_secs_f64() * 1e6 / cycles as f64;
    println!("{cycles} cycles x {size} participants: {per:.2} us per cycle");
    if !count_allocations {
        return;
    }
    let ((), allocations) = alloc::count(|| {
        for key in cycles..2 * cycles {
            rt.block_on(contender.cycle(key, &participants))
                .expect("a committed cycle");
        }
    });
    match allocations {
        Some(n) => println!("{:.2} allocations per cycle", n as f64 / cycles as f64),
        None => println!("allocations not counted: the counting allocator is not installed"),
    }
}
