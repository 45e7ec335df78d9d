//! A progress bar on stderr that only shows up for runs that take a while.

use std::sync::Once;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this never show the bar.
const SHOW_AFTER: Duration = Duration::from_millis(1500);

const TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} transactions, eta {eta}";

/// Counts finished transactions; draws a bar on stderr once the run has
/// lasted [`SHOW_AFTER`], if enabled. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    enabled: bool,
    started: Instant,
    shown: std::sync::Arc<Once>,
}

impl Progress {
    /// A hidden bar for `total` transactions; it may only ever be drawn if
    /// `enabled`.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style);
        }
        Self {
            bar,
            enabled,
            started: Instant::now(),
            shown: std::sync::Arc::new(Once::new()),
        }
    }

    /// One more transaction finished.
    pub fn inc(&self) {
        self.bar.inc(1);
        if self.enabled && self.started.elapsed() >= SHOW_AFTER {
            self.shown.call_once(|| {
                self.bar.set_draw_target(ProgressDrawTarget::stderr());
                self.bar.enable_steady_tick(Duration::from_millis(100));
            });
        }
    }

    /// Removes the bar from the terminal. Call after the last [`inc`](Self::inc).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
