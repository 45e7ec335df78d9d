//! A shared, timestamped event log for replaying and comparing runs.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::TransactionId;
use tokio::time::Instant;

use crate::lock;

/// An append-only log of what clients and participants did, each line
/// stamped with the time since the trace began (tokio's clock, so under a
/// paused clock the stamps are exact and reproducible).
///
/// Cloning gives another handle to the same log. Transaction ids are
/// printed by their [`txn_label`] (sequence number only), so two runs of the
/// same seed produce identical lines even though coordinator nonces differ.
///
/// A trace can span two runtimes (a simulated coordinator crash drops the
/// first and restarts on a second, whose paused clock is unrelated): see
/// [`resume`](Self::resume).
#[derive(Clone)]
pub struct Trace {
    /// The clock reading stamps count from, and the stamp it stands for
    /// (shared by every handle, so that [`resume`](Self::resume) moves
    /// them all).
    base: Arc<Mutex<(Instant, Duration)>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// An empty trace starting now. Create it inside the runtime whose clock
    /// should stamp the lines.
    pub fn new() -> Self {
        Self {
            base: Arc::new(Mutex::new((Instant::now(), Duration::ZERO))),
            lines: Arc::default(),
        }
    }

    /// The time since the trace began, as the next line would be stamped.
    pub fn elapsed(&self) -> Duration {
        let (anchor, offset) = *lock(&self.base);
        offset + anchor.elapsed()
    }

    /// Continues the stamps from `elapsed` on the clock of the runtime this
    /// is called in, for every handle: call it first thing on a new runtime
    /// (tokio's `Instant`s of two runtimes with paused clocks cannot be
    /// compared), with the [`elapsed`](Self::elapsed) read last on the old
    /// one.
    pub fn resume(&self, elapsed: Duration) {
        *lock(&self.base) = (Instant::now(), elapsed);
    }

    /// Appends one line.
    pub fn log(&self, args: fmt::Arguments<'_>) {
        let micros = self.elapsed().as_micros();
        let line = format!("{:>6}.{:03}ms {args}", micros / 1000, micros % 1000);
        lock(&self.lines).push(line);
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("lines", &lock(&self.lines).len())
            .finish()
    }
}

/// A run-independent short name for a transaction: `t` and its sequence
/// number within its coordinator (the random nonce is left out).
pub fn txn_label(txn: TransactionId) -> String {
    format!("t{}", txn.as_u128() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn resume_continues_the_stamps_on_a_new_runtime() {
        let (trace, at) = paused_runtime().block_on(async {
            let trace = Trace::new();
            tokio::time::sleep(Duration::from_millis(5)).await;
            trace.log(format_args!("crash"));
            (trace.clone(), trace.elapsed())
        });
        let handle = trace.clone();
        paused_runtime().block_on(async {
            handle.resume(at);
            tokio::time::sleep(Duration::from_millis(3)).await;
            trace.log(format_args!("restart"));
        });
        assert_eq!(
            trace.lines(),
            ["     5.000ms crash", "     8.000ms restart"]
        );
    }
}
