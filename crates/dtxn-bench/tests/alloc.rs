//! The counting allocator, installed as this test binary's global
//! allocator, counts what it should.

use dtxn_bench::alloc::{self, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn installed_allocator_counts_allocations_on_this_thread() {
    assert!(alloc::installed());
    let (v, n) = alloc::count(|| {
        let mut v: Vec<u64> = std::hint::black_box(Vec::with_capacity(1));
        v.extend([1, 2]); // grows: a reallocation
        std::hint::black_box(Box::new(3_u64));
        v
    });
    assert_eq!(v, [1, 2]);
    assert_eq!(n, Some(3), "one allocation, one reallocation, one box");
}

#[test]
fn nothing_allocated_counts_zero() {
    let (_, n) = alloc::count(|| std::hint::black_box(1 + 1));
    assert_eq!(n, Some(0));
}

#[test]
fn other_threads_allocations_are_not_counted() {
    let (_, n) = alloc::count(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let v: Vec<Box<u64>> = (0..100).map(Box::new).collect();
                std::hint::black_box(v);
            });
        })
    });
    // Spawning the thread allocates on this one; its 101 allocations do not count.
    assert!(n.is_some_and(|n| n < 100), "{n:?}");
}
