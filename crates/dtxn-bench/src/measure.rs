//! Driving a contender with a number of transactions in flight, and the
//! statistics taken over runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::Participant;

use crate::contenders::Contender;

/// What one drive measured.
#[derive(Debug, Clone)]
pub struct Drive {
    /// Transactions run.
    pub transactions: usize,
    /// Wall time from the first begin to the last end.
    pub elapsed: Duration,
    /// Each transaction's end-to-end time, sorted (empty unless asked for).
    pub latencies: Vec<Duration>,
    /// Transactions that did not commit or were refused.
    pub failed: usize,
}

impl Drive {
    /// Transactions per second.
    pub fn throughput(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Wall time per transaction (amortised over the concurrency), in µs.
    pub fn micros_per_tx(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.transactions.max(1) as f64
    }

    /// The `q` quantile (0..=1) of the latencies, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.latencies, q).as_secs_f64() * 1e3
    }
}

/// The `q` quantile of sorted `values` (nearest rank); zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64) * q).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Runs `transactions` full transactions over `participants` through
/// `contender`, `concurrency` at a time (each of `concurrency` tasks runs
/// its share in sequence, through its own [`Session`](crate::Session), set
/// up before the clock starts). Records each transaction's latency if
/// `record_latency`.
pub async fn drive(
    contender: &Contender,
    participants: &Arc<[Arc<dyn Participant>]>,
    transactions: usize,
    concurrency: usize,
    record_latency: bool,
) -> Drive {
    let concurrency = concurrency.clamp(1, transactions.max(1));
    let next = Arc::new(AtomicU64::new(0));
    let mut sessions = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        sessions.push(contender.session(participants).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for mut session in sessions {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            loop {
                let key = next.fetch_add(1, Ordering::Relaxed);
                if key >= transactions as u64 {
                    break;
                }
                let t0 = Instant::now();
                if !matches!(session.cycle(key).await, Ok(true)) {
                    failed += 1;
                }
                if record_latency {
                    latencies.push(t0.elapsed());
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await.expect("a benchmark task panicked");
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Drive {
        transactions,
        elapsed,
        latencies,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&ms, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&ms, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_contender_commits() {
        let participants = crate::participants::many(3, || Arc::new(crate::Noop));
        for contender in [
            Contender::floor(false),
            Contender::floor(true),
            Contender::baseline(),
            Contender::dtxn(1000, 10),
        ] {
            let d = drive(&contender, &participants, 50, 5, true).await;
            assert_eq!(d.failed, 0);
            assert_eq!(d.latencies.len(), 50);
        }
    }
}
