//! A counting global allocator, for the allocations-per-transaction
//! workload (e).
//!
//! [`Counting`] wraps [`std::alloc::System`]. While counting is off (the
//! normal state) each allocation costs one relaxed atomic load more than
//! `System`'s; while it is on, each allocation, zeroed allocation and
//! reallocation made **on the counting thread** adds one to that thread's
//! count. Deallocations are not counted.
//!
//! The library cannot install it: the binary does, with
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: dtxn_bench::alloc::Counting = dtxn_bench::alloc::Counting;
//!
//! fn main() {
//!     let (_, allocations) = dtxn_bench::alloc::count(|| Box::new(1_u64));
//!     assert_eq!(allocations, Some(1));
//! }
//! ```
//!
//! (`dtxn` does with its `bench` feature, as does the `profile_cycle`
//! example). Where it is not installed, [`count`] returns `None`, so a
//! report says "not measured" rather than "zero allocations".
//!
//! ```
//! // Not installed here: nothing is counted, and that is reported.
//! let (sum, allocations) = dtxn_bench::alloc::count(|| vec![1, 2, 3].iter().sum::<i32>());
//! assert_eq!(sum, 6);
//! assert_eq!(allocations, None);
//! ```
//!
//! `GlobalAlloc` is an `unsafe` trait, which is the one reason this crate
//! allows `unsafe` code, in this module only; every method forwards to
//! `System` with the caller's own arguments.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Threads counting at the moment: the cheap check every allocation makes.
static COUNTING_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Whether [`LIVE_BYTES`] is kept (see [`weigh`]).
static WEIGHING: AtomicUsize = AtomicUsize::new(0);

/// Bytes allocated minus bytes freed, on every thread, while weighing.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations this thread made while any thread was counting
    /// (`const`-initialised and without `Drop`, so reading it never
    /// allocates).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The counting allocator: [`System`] plus a count of allocations while
/// [`count`] runs (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

impl Counting {
    #[inline]
    fn note(&self) {
        if COUNTING_THREADS.load(Ordering::Relaxed) != 0 {
            // `try_with`: a thread being torn down has no count left.
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    }

    #[inline]
    fn weigh(&self, bytes: isize) {
        if WEIGHING.load(Ordering::Relaxed) != 0 {
            LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

/// A size as a signed count (no allocation is larger than `isize::MAX`).
fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; counting touches no allocated memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        self.weigh(signed(layout.size()));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        self.weigh(signed(layout.size()));
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.weigh(-signed(layout.size()));
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        self.weigh(signed(new_size) - signed(layout.size()));
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counting switched on for the current thread while it lives.
struct On;

impl On {
    fn new() -> Self {
        COUNTING_THREADS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for On {
    fn drop(&mut self) {
        COUNTING_THREADS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Whether [`Counting`] is this process's global allocator: counts one
/// boxed value.
pub fn installed() -> bool {
    let _on = On::new();
    let before = allocations();
    drop(std::hint::black_box(Box::new(std::hint::black_box(1_u64))));
    allocations() > before
}

/// Runs `f` on this thread and counts the allocations, zeroed allocations
/// and reallocations it makes on this thread (work `f` hands to other
/// threads is not counted). The count is `None` when [`Counting`] is not
/// the global allocator.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Option<u64>) {
    if !installed() {
        return (f(), None);
    }
    let on = On::new();
    let before = allocations();
    let out = f();
    let n = allocations() - before;
    drop(on);
    (out, Some(n))
}

/// Weighs the heap from when it is made until it is dropped:
/// [`bytes`](Self::bytes) reads the bytes allocated and not yet freed since
/// then, by every thread (what the program asked for, without the
/// allocator's own overhead).
pub struct Weighing {
    start: Option<isize>,
}

impl Weighing {
    /// Starts weighing; the readings are `None` when the counting
    /// allocator is not installed.
    pub fn start() -> Self {
        if !installed() {
            return Self { start: None };
        }
        WEIGHING.fetch_add(1, Ordering::SeqCst);
        Self {
            start: Some(LIVE_BYTES.load(Ordering::SeqCst)),
        }
    }

    /// Bytes live now that were not when weighing started (negative when
    /// more was freed).
    pub fn bytes(&self) -> Option<isize> {
        self.start
            .map(|start| LIVE_BYTES.load(Ordering::SeqCst) - start)
    }
}

impl Drop for Weighing {
    fn drop(&mut self) {
        if self.start.is_some() {
            WEIGHING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_the_allocator_installed_nothing_is_counted() {
        // The library's unit tests run on the default allocator.
        assert!(!super::installed());
        let (v, n) = super::count(|| vec![0_u8; 64]);
        assert_eq!(v.len(), 64);
        assert_eq!(n, None);
    }
}
