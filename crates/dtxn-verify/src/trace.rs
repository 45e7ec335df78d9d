//! A shared, timestamped event log for replaying and comparing runs.

use std::fmt;
use std::sync::{Arc, Mutex};

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
#[derive(Clone)]
pub struct Trace {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// An empty trace starting now. Create it inside the runtime whose clock
    /// should stamp the lines.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    /// Appends one line.
    pub fn log(&self, args: fmt::Arguments<'_>) {
        let micros = self.start.elapsed().as_micros();
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
