//! The participants the workloads register: no-op, fixed latency with
//! jitter, and an early no-voter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};

/// Votes `Ready` and acknowledges phase 2 at once: measures pure
/// coordination cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Participant for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    // For durable coordinators (a decision log requires one).
    fn recovery_key(&self) -> Option<&str> {
        Some("noop")
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

/// Answers every call after `mean ± jitter` (uniform), slept with
/// `tokio::time::sleep`: a remote service one round trip away.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    mean: Duration,
    jitter: Duration,
}

impl Latency {
    /// A participant answering in `mean ± jitter` (`jitter` ≤ `mean`).
    pub fn new(mean: Duration, jitter: Duration) -> Self {
        Self {
            mean,
            jitter: jitter.min(mean),
        }
    }

    /// A participant answering in a uniform `low..=high` (`high` is raised
    /// to `low` if below it): `uniform(0 ms, 5 ms)` is the headline load's.
    pub fn uniform(low: Duration, high: Duration) -> Self {
        let high = high.max(low);
        let jitter = (high - low) / 2;
        Self::new(low + jitter, jitter)
    }

    /// The fastest answer it can give.
    pub fn min_delay(&self) -> Duration {
        self.mean - self.jitter
    }

    /// The slowest answer it can give.
    pub fn max_delay(&self) -> Duration {
        self.mean + self.jitter
    }

    async fn delay(&self) {
        let low = self.mean - self.jitter;
        let span = self.jitter * 2;
        tokio::time::sleep(low + span.mul_f64(fastrand::f64())).await;
    }
}

#[async_trait]
impl Participant for Latency {
    fn name(&self) -> &str {
        "latency"
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        self.delay().await;
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.delay().await;
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.delay().await;
        Ok(())
    }
}

/// Votes `Aborted` after `delay` and records the instant it voted, so the
/// time from the vote to `prepare_transaction` returning can be measured.
#[derive(Debug)]
pub struct EarlyAbort {
    delay: Duration,
    voted_at: Mutex<Option<Instant>>,
}

impl EarlyAbort {
    /// A no-voter answering after `delay`.
    pub fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            voted_at: Mutex::new(None),
        })
    }

    /// When it returned its `Aborted` vote, if it did.
    pub fn voted_at(&self) -> Option<Instant> {
        *self.voted_at.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Participant for EarlyAbort {
    fn name(&self) -> &str {
        "early-abort"
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        tokio::time::sleep(self.delay).await;
        *self.voted_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        PreparedResult::Aborted("no".to_owned())
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

/// `n` distinct participants built by `make` (distinct `Arc`s, so dtxn
/// registers each one).
pub fn many(n: usize, make: impl Fn() -> Arc<dyn Participant>) -> Arc<[Arc<dyn Participant>]> {
    (0..n).map(|_| make()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_spans_low_to_high() {
        let l = Latency::uniform(Duration::ZERO, Duration::from_millis(5));
        assert_eq!(l.min_delay(), Duration::ZERO);
        assert_eq!(l.max_delay(), Duration::from_millis(5));
        let l = Latency::uniform(Duration::from_millis(4), Duration::from_millis(2));
        assert_eq!(
            (l.min_delay(), l.max_delay()),
            (Duration::from_millis(4), Duration::from_millis(4))
        );
    }
}
