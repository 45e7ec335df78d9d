//! Coordinator configuration: limits, timeouts, retry policy, retention.

use std::time::Duration;

pub use crate::core::RetryPolicy;

/// A configuration value was refused by [`CoordinatorConfigBuilder::build`]
/// or [`RetryPolicy::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count that must be at least one was zero.
    #[error("{setting} must be at least 1")]
    Zero {
        /// The setting's name.
        setting: &'static str,
    },
    /// A duration that must be positive was zero.
    #[error("{setting} must be longer than zero")]
    ZeroDuration {
        /// The setting's name.
        setting: &'static str,
    },
    /// A duration is below the smallest the timers can honour.
    #[error("{setting} must be at least {min:?}")]
    TooShort {
        /// The setting's name.
        setting: &'static str,
        /// The smallest value accepted.
        min: Duration,
    },
    /// The backoff cap is smaller than the first backoff.
    #[error("max backoff {max:?} is shorter than the initial backoff {initial:?}")]
    BackoffCapBelowInitial {
        /// The initial backoff.
        initial: Duration,
        /// The cap.
        max: Duration,
    },
    /// The transaction deadline leaves no time to prepare.
    #[error(
        "transaction deadline {deadline:?} must exceed the prepare timeout {prepare_timeout:?}"
    )]
    DeadlineShorterThanPrepare {
        /// The transaction deadline.
        deadline: Duration,
        /// The prepare timeout.
        prepare_timeout: Duration,
    },
}

/// Validated construction (see [`RetryPolicy`]).
impl RetryPolicy {
    /// A policy of at most `max_attempts` attempts, waiting `initial_backoff`
    /// before the second and doubling up to `max_backoff`, with the default
    /// time budget ([`DEFAULT_MAX_ELAPSED`](Self::DEFAULT_MAX_ELAPSED); see
    /// [`with_max_elapsed`](Self::with_max_elapsed)).
    pub fn new(
        max_attempts: u32,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Result<Self, ConfigError> {
        if max_attempts == 0 {
            return Err(ConfigError::Zero {
                setting: "max_attempts",
            });
        }
        if max_backoff < initial_backoff {
            return Err(ConfigError::BackoffCapBelowInitial {
                initial: initial_backoff,
                max: max_backoff,
            });
        }
        Ok(Self {
            max_attempts,
            initial_backoff,
            max_backoff,
            max_elapsed: Self::DEFAULT_MAX_ELAPSED,
        })
    }

    /// The same policy, giving up on a participant once `max_elapsed` has
    /// passed since the decision (checked when an attempt fails, so the
    /// attempt in flight then always ends first). No wait between attempts
    /// extends past the budget: a participant's phase 2 ends within
    /// `max_elapsed` plus one call's timeout. `Duration::MAX` means
    /// attempts alone bound the retries.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero budget.
    pub fn with_max_elapsed(self, max_elapsed: Duration) -> Result<Self, ConfigError> {
        if max_elapsed.is_zero() {
            return Err(ConfigError::ZeroDuration {
                setting: "max_elapsed",
            });
        }
        Ok(Self {
            max_elapsed,
            ..self
        })
    }
}

/// Every limit and timeout of a [`TransactionCoordinator`](crate::TransactionCoordinator).
///
/// Build one with [`CoordinatorConfig::builder`]; the builder refuses
/// nonsense (zero limits, zero timeouts, a sweep interval below the timers'
/// resolution, a deadline shorter than the prepare timeout) with a
/// [`ConfigError`].
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `max_transactions` | 1000 | unfinished transactions at once; `begin_transaction` beyond it fails with `CapacityExceeded` |
/// | `max_participants` | 100 | participants per transaction; more fail with `TooManyParticipants` |
/// | `prepare_timeout` | 5 s | per `prepare` call; a late vote counts as `Aborted` |
/// | `phase2_timeout` | 5 s | per `commit`/`rollback` attempt; a late answer counts as a failed attempt |
/// | `retry` | 30 attempts, 100 ms → 5 s, at most 60 s | phase-2 retry policy, see [`RetryPolicy`] |
/// | `transaction_deadline` | 60 s | from begin; a transaction still Active or Prepared then is rolled back |
/// | `retention_period` | 5 min | how long finished transactions still answer queries |
/// | `retention_count` | 10 000 | at most this many finished transactions are remembered |
/// | `sweep_interval` | 250 ms | the background task sleeps until the next deadline or retention expiry, but sweeps at most this often (at least 1 ms): deadlines are enforced at most this late, and many close together cost one sweep |
///
/// Every duration may be as large as `Duration::MAX`: deadlines too far
/// in the future for the clock saturate to about 30 years.
///
/// ```
/// use std::time::Duration;
/// use dtxn::{CoordinatorConfig, TransactionCoordinator};
///
/// let config = CoordinatorConfig::builder()
///     .max_transactions(5_000)
///     .prepare_timeout(Duration::from_secs(2))
///     .build()?;
/// let coordinator = TransactionCoordinator::with_config(config);
/// # Ok::<(), dtxn::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoordinatorConfig {
    pub(crate) max_transactions: usize,
    pub(crate) max_participants: usize,
    pub(crate) prepare_timeout: Duration,
    pub(crate) phase2_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) transaction_deadline: Duration,
    pub(crate) retention_period: Duration,
    pub(crate) retention_count: usize,
    pub(crate) sweep_interval: Duration,
    pub(crate) jitter_seed: Option<u64>,
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted_bug: Option<crate::core::PlantedBug>,
}

impl CoordinatorConfig {
    /// Default `max_transactions`.
    pub const DEFAULT_MAX_TRANSACTIONS: usize = 1000;
    /// Default `max_participants`.
    pub const DEFAULT_MAX_PARTICIPANTS: usize = crate::core::Limits::DEFAULT_MAX_PARTICIPANTS;
    /// Default `prepare_timeout`.
    pub const DEFAULT_PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `phase2_timeout`.
    pub const DEFAULT_PHASE2_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `transaction_deadline`.
    pub const DEFAULT_TRANSACTION_DEADLINE: Duration = Duration::from_secs(60);
    /// Default `retention_period`.
    pub const DEFAULT_RETENTION_PERIOD: Duration = Duration::from_secs(300);
    /// Default `retention_count`.
    pub const DEFAULT_RETENTION_COUNT: usize = 10_000;
    /// Default `sweep_interval`.
    pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_millis(250);
    /// The shortest sweep interval accepted (the timers' resolution).
    pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(1);

    /// A builder starting from the defaults.
    pub fn builder() -> CoordinatorConfigBuilder {
        CoordinatorConfigBuilder {
            config: Self::default(),
        }
    }

    /// Maximum unfinished transactions at once.
    pub fn max_transactions(&self) -> usize {
        self.max_transactions
    }
    /// Maximum participants per transaction.
    pub fn max_participants(&self) -> usize {
        self.max_participants
    }
    /// Timeout of one `prepare` call.
    pub fn prepare_timeout(&self) -> Duration {
        self.prepare_timeout
    }
    /// Timeout of one `commit` or `rollback` attempt.
    pub fn phase2_timeout(&self) -> Duration {
        self.phase2_timeout
    }
    /// The phase-2 retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }
    /// Time from begin after which an Active or Prepared transaction is rolled back.
    pub fn transaction_deadline(&self) -> Duration {
        self.transaction_deadline
    }
    /// How long a finished transaction is remembered.
    pub fn retention_period(&self) -> Duration {
        self.retention_period
    }
    /// How many finished transactions are remembered at most.
    pub fn retention_count(&self) -> usize {
        self.retention_count
    }
    /// The least time between two background sweeps.
    pub fn sweep_interval(&self) -> Duration {
        self.sweep_interval
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            max_transactions: Self::DEFAULT_MAX_TRANSACTIONS,
            max_participants: Self::DEFAULT_MAX_PARTICIPANTS,
            prepare_timeout: Self::DEFAULT_PREPARE_TIMEOUT,
            phase2_timeout: Self::DEFAULT_PHASE2_TIMEOUT,
            retry: RetryPolicy::default(),
            transaction_deadline: Self::DEFAULT_TRANSACTION_DEADLINE,
            retention_period: Self::DEFAULT_RETENTION_PERIOD,
            retention_count: Self::DEFAULT_RETENTION_COUNT,
            sweep_interval: Self::DEFAULT_SWEEP_INTERVAL,
            jitter_seed: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

/// Builds a [`CoordinatorConfig`]; see there for the settings and defaults.
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a configuration"]
pub struct CoordinatorConfigBuilder {
    config: CoordinatorConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl CoordinatorConfigBuilder {
    setter!(
        /// Maximum unfinished transactions at once (≥ 1).
        max_transactions: usize
    );
    setter!(
        /// Maximum participants per transaction (≥ 1).
        max_participants: usize
    );
    setter!(
        /// Timeout of one `prepare` call (> 0).
        prepare_timeout: Duration
    );
    setter!(
        /// Timeout of one `commit`/`rollback` attempt (> 0).
        phase2_timeout: Duration
    );
    setter!(
        /// The phase-2 retry policy.
        retry: RetryPolicy
    );
    setter!(
        /// Time from begin after which an Active or Prepared transaction is
        /// rolled back (> prepare timeout).
        transaction_deadline: Duration
    );
    setter!(
        /// How long finished transactions are remembered (may be zero).
        retention_period: Duration
    );
    setter!(
        /// How many finished transactions are remembered (may be zero).
        retention_count: usize
    );
    setter!(
        /// The least time between two background sweeps, which otherwise
        /// wait for the next deadline or retention expiry (at least
        /// [`MIN_SWEEP_INTERVAL`](CoordinatorConfig::MIN_SWEEP_INTERVAL)).
        sweep_interval: Duration
    );

    /// Seeds the generator of the phase-2 retry jitter, for runs that must
    /// replay exactly (a seeded simulation). Each transaction draws from its
    /// own generator, seeded from this seed and its sequence number. By
    /// default every coordinator instance picks a random seed.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// Plants a deliberate protocol bug in every transaction (verification
    /// only; requires the `planted-bugs` feature).
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub fn planted_bug(mut self, bug: crate::core::PlantedBug) -> Self {
        self.config.planted_bug = Some(bug);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<CoordinatorConfig, ConfigError> {
        let c = self.config;
        if c.max_transactions == 0 {
            return Err(ConfigError::Zero {
                setting: "max_transactions",
            });
        }
        if c.max_participants == 0 {
            return Err(ConfigError::Zero {
                setting: "max_participants",
            });
        }
        for (setting, d) in [
            ("prepare_timeout", c.prepare_timeout),
            ("phase2_timeout", c.phase2_timeout),
            ("transaction_deadline", c.transaction_deadline),
            ("sweep_interval", c.sweep_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { setting });
            }
        }
        if c.sweep_interval < CoordinatorConfig::MIN_SWEEP_INTERVAL {
            // Tokio's timers tick in milliseconds: a shorter interval would
            // only make the sweeper spin.
            return Err(ConfigError::TooShort {
                setting: "sweep_interval",
                min: CoordinatorConfig::MIN_SWEEP_INTERVAL,
            });
        }
        if c.transaction_deadline <= c.prepare_timeout {
            return Err(ConfigError::DeadlineShorterThanPrepare {
                deadline: c.transaction_deadline,
                prepare_timeout: c.prepare_timeout,
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_nonsense() {
        assert!(matches!(
            CoordinatorConfig::builder().max_transactions(0).build(),
            Err(ConfigError::Zero { .. })
        ));
        assert!(matches!(
            CoordinatorConfig::builder()
                .prepare_timeout(Duration::ZERO)
                .build(),
            Err(ConfigError::ZeroDuration { .. })
        ));
        assert!(matches!(
            CoordinatorConfig::builder()
                .transaction_deadline(Duration::from_secs(1))
                .prepare_timeout(Duration::from_secs(2))
                .build(),
            Err(ConfigError::DeadlineShorterThanPrepare { .. })
        ));
        assert!(RetryPolicy::new(0, Duration::ZERO, Duration::ZERO).is_err());
        assert!(RetryPolicy::new(3, Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn defaults_match_the_brief() {
        let c = CoordinatorConfig::builder().build().unwrap();
        assert_eq!(c.max_transactions(), 1000);
        assert_eq!(c.max_participants(), 100);
    }

    #[test]
    fn backoff_is_capped_and_jitter_stays_in_range() {
        let p = RetryPolicy::new(50, Duration::from_millis(1), Duration::from_secs(1)).unwrap();
        assert_eq!(p.backoff(1), Duration::ZERO);
        assert_eq!(p.backoff(40), Duration::from_secs(1));
        let d = Duration::from_millis(100);
        assert_eq!(RetryPolicy::jitter(d, 0.0), Duration::from_millis(50));
        assert!(RetryPolicy::jitter(d, 0.999) < d);
    }
}
