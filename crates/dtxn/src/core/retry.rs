//! The phase-2 retry policy: data the core reads, with its arithmetic.
//! Its validating constructors are in `crate::config`, next to
//! [`ConfigError`](crate::ConfigError): the core depends on nothing above it.

use std::time::Duration;

/// How phase-2 calls (`commit` / `rollback`) that fail are retried: capped
/// exponential backoff with jitter, bounded both by a number of attempts and
/// by time. A participant is given up on, and reported as a heuristic
/// hazard, when an attempt fails and either it was the last one allowed or
/// [`max_elapsed`](Self::max_elapsed) has passed since its phase 2 began.
///
/// The delay before attempt `n` (n ≥ 2) is `initial · 2^(n-2)`, capped at
/// `max`, then jittered into `[delay/2, delay]` ("equal jitter") by the
/// core, from its own seeded generator, so that retries from many
/// transactions do not arrive in lockstep.
///
/// # Choosing a policy
///
/// The default (30 attempts, 100 ms doubling to 5 s, at most 60 s) rides
/// out a participant that is down for 30 s — a restart or a redeploy —
/// without a hazard: a participant that refuses connections at once is
/// retried about 18 times in those 30 s. Raise
/// [`max_elapsed`](Self::with_max_elapsed) (and the attempts) if your
/// services take longer to come back; every second of it is a second a
/// failing transaction keeps its capacity slot. Lower it for tests.
///
/// ```
/// use std::time::Duration;
/// use dtxn::RetryPolicy;
///
/// let policy = RetryPolicy::new(4, Duration::from_millis(10), Duration::from_millis(25))?;
/// assert_eq!(policy.backoff(2), Duration::from_millis(10));
/// assert_eq!(policy.backoff(3), Duration::from_millis(20));
/// assert_eq!(policy.backoff(4), Duration::from_millis(25));
/// # Ok::<(), dtxn::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_elapsed: Duration,
}

impl RetryPolicy {
    /// Default number of attempts per phase-2 call, the first included.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 30;
    /// Default delay before the second attempt.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    /// Default cap on the delay between attempts.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);
    /// Default time budget of one participant's phase 2.
    pub const DEFAULT_MAX_ELAPSED: Duration = Duration::from_secs(60);

    /// The time budget of one participant's phase 2, from its start to the
    /// failure of an attempt after which it is not retried.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// Attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the second attempt.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// The cap on the delay between attempts.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The delay before `attempt` (1-based) without jitter; zero for the
    /// first attempt.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let shift = (attempt - 2).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// Applies equal jitter to `delay`: `sample` in `[0, 1)` maps the delay
    /// into `[delay/2, delay)`. The caller supplies the randomness.
    pub fn jitter(delay: Duration, sample: f64) -> Duration {
        let half = delay / 2;
        let sample = if sample.is_nan() {
            0.0
        } else {
            sample.clamp(0.0, 1.0)
        };
        // Saturating throughout: any delay, however large, jitters safely.
        let extra = Duration::try_from_secs_f64(half.as_secs_f64() * sample).unwrap_or(half);
        half.saturating_add(extra.min(half))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            max_elapsed: Self::DEFAULT_MAX_ELAPSED,
        }
    }
}
