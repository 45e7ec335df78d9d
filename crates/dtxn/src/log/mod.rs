//! The optional decision log: Commit decisions that survive a coordinator
//! crash (PROTOCOL.md rule 16, presumed abort).
//!
//! Without a log (the default) a coordinator keeps everything in memory,
//! and one that dies between its Commit decision and the last
//! acknowledgement loses the decision. With one, started by
//! [`TransactionCoordinator::recover`](crate::TransactionCoordinator::recover):
//!
//! * a Commit decision, with the participants to deliver it to (each by
//!   its [`recovery_key`](crate::Participant::recovery_key), with its
//!   [`Payload`]), is durable before any `commit` call is sent. Concurrent
//!   decisions share one sync of the log (group commit).
//! * Abort decisions are not logged: whatever the log does not hold was
//!   not committed (*presumed abort*).
//! * When every participant has acknowledged, the decision is removed from
//!   the log, lazily and in batches. A decision with a participant given up
//!   on (a heuristic hazard) stays until an operator resolves it.
//! * On start, [`recover`](crate::TransactionCoordinator::recover) reads
//!   the decisions still in the log and delivers them again (phase 2 is
//!   idempotent), finding each participant again by its key through a
//!   [`ParticipantResolver`], such as a [`ParticipantRegistry`] that the
//!   application fills at start.
//! * Outcome queries answer `aborted` for an id that this log's
//!   coordinators issued and no longer hold: presumed abort, now safe.
//!
//! What survives which crash: everything a participant was told. A
//! participant that voted `Ready` and heard nothing learns the decision from
//! a redelivered `commit`, or, when there was none, from an outcome query
//! (`aborted`). A client whose `commit_transaction` had not returned when
//! the coordinator died does not know the outcome; it asks
//! ([`TransactionCoordinator::outcome`](crate::TransactionCoordinator::outcome)).
//! It should ask soon: presumed abort is exact for participants in doubt,
//! not for clients. A Commit whose phase 2 ended, every participant
//! acknowledging, leaves the log; once the coordinator has also forgotten
//! it (after its retention), or restarted, the answer for that id is
//! `aborted` too. Nobody who acted on the decision asks any more then,
//! but a client that never heard the answer would be misled.
//!
//! Backends: `SqliteLog` (feature `sqlite`), an embedded file needing no
//! server; `PostgresLog` (feature `postgres`) for shared deployments,
//! including a cluster of coordinators on one database with leases and
//! takeover (`PostgresLog::join_cluster`,
//! [`TransactionCoordinator::join_cluster`](crate::TransactionCoordinator::join_cluster),
//! [`Lease`], PROTOCOL.md rule 17); and anything implementing
//! [`DecisionLog`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Participant, Payload, TransactionId};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod group;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::{ClusterOptions, ClusterView, NodeInfo, PostgresLog};
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteLog;

/// The future of a [`DecisionLog`] operation. It borrows nothing, so a
/// coordinator can hold it beside its participant calls.
pub type LogFuture<T> = Pin<Box<dyn Future<Output = Result<T, LogError>> + Send + 'static>>;

/// A logged Commit decision: what recovery needs to deliver it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The transaction.
    pub txn: TransactionId,
    /// The participants to deliver `commit` to: those that voted `Ready`,
    /// in registration order.
    pub participants: Vec<LoggedParticipant>,
}

/// One participant of a [`CommitRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedParticipant {
    /// Its [`recovery_key`](crate::Participant::recovery_key).
    pub key: Arc<str>,
    /// The payload registered with it, handed to it again with `commit`.
    pub payload: Option<Payload>,
}

/// What a decision log holds when a coordinator opens it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogContents {
    /// Commit decisions whose phase 2 has not ended with every
    /// participant acknowledged, in transaction id order.
    pub in_doubt: Vec<CommitRecord>,
    /// The nonces of every coordinator that opened the log, this one
    /// included: the transaction ids they issued are this log's, and an
    /// unknown one of them was not committed.
    pub incarnations: Vec<u64>,
}

impl LogContents {
    /// Contents with `in_doubt` decisions and `incarnations`.
    pub fn new(in_doubt: Vec<CommitRecord>, incarnations: Vec<u64>) -> Self {
        Self {
            in_doubt,
            incarnations,
        }
    }
}

/// Where Commit decisions are made durable (see the [module docs](self)).
///
/// Implementations must make [`log_commit`](Self::log_commit) durable
/// before its future completes with `Ok`, and should let concurrent calls
/// share one sync (group commit). Every method may be called from any
/// thread; the futures must not borrow the log.
pub trait DecisionLog: Send + Sync + 'static {
    /// Opens the log for a coordinator whose transaction ids carry
    /// `incarnation` (their upper 64 bits): records it durably among the
    /// log's incarnations, and returns what the log holds.
    ///
    /// # Errors
    ///
    /// [`LogError::Locked`] when another coordinator has it open;
    /// [`LogError::NewerFormat`], [`LogError::Corrupt`] or
    /// [`LogError::Backend`] when it cannot be read.
    fn open(&self, incarnation: u64) -> LogFuture<LogContents>;

    /// Makes `record` durable; writing the same record again is harmless.
    ///
    /// # Errors
    ///
    /// Any [`LogError`]: the record may or may not be durable, and the
    /// coordinator writes it again until it is.
    fn log_commit(&self, record: CommitRecord) -> LogFuture<()>;

    /// Records that `txn`'s phase 2 ended with every participant
    /// acknowledged, so its decision can be dropped. May be lazy and
    /// batched: an end lost in a crash only makes recovery deliver
    /// `commit` again, which participants accept (it is idempotent).
    fn log_end(&self, txn: TransactionId);

    /// The lease this log holds on behalf of its coordinator, when several
    /// coordinators share the log (see [`PostgresLog::join_cluster`]). A
    /// coordinator whose lease is not held sends no participant call
    /// (PROTOCOL.md rule 17). `None` (the default): the log is this
    /// coordinator's alone, and ownership is never lost.
    ///
    /// [`PostgresLog::join_cluster`]: https://docs.rs/dtxn/latest/dtxn/log/struct.PostgresLog.html#method.join_cluster
    fn lease(&self) -> Option<Lease> {
        None
    }

    /// Takes over one coordinator of the shared log whose lease expired,
    /// if there is one: in one storage transaction, its undelivered Commit
    /// decisions and its transaction ids become this coordinator's, and it
    /// is fenced out. Exactly one caller gets each dead coordinator. The
    /// default (a log of one coordinator): `Ok(None)`.
    ///
    /// # Errors
    ///
    /// [`LogError::Fenced`] when this coordinator itself lost its lease;
    /// [`LogError::Backend`] when the storage failed (nothing was taken).
    fn take_over(&self) -> LogFuture<Option<Takeover>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// What [`DecisionLog::take_over`] took from a coordinator whose lease
/// expired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Takeover {
    /// The coordinator taken over (its node id).
    pub node: String,
    /// Its Commit decisions not yet delivered: now this coordinator's, to
    /// deliver again.
    pub in_doubt: Vec<CommitRecord>,
    /// The incarnations (upper 64 bits of transaction ids) it owned, whose
    /// outcome queries this coordinator now answers.
    pub incarnations: Vec<u64>,
}

impl Takeover {
    /// A takeover of `node`.
    pub fn new(node: String, in_doubt: Vec<CommitRecord>, incarnations: Vec<u64>) -> Self {
        Self {
            node,
            in_doubt,
            incarnations,
        }
    }
}

/// A coordinator's lease on a shared decision log: while it is held the
/// coordinator owns its transactions; once it lapses or is lost, it sends
/// no participant call (PROTOCOL.md rule 17) and another coordinator may
/// take its decisions over.
///
/// The log renews it (with every write, and when idle); it is held until
/// the moment the renewing transaction was *sent*, plus seven eighths of
/// the lease time, on this process's monotonic clock. The store counts
/// the lease from the moment it *ran* that transaction, later, so this
/// process stops acting before any other coordinator may take over (the
/// eighth is the margin for the two clocks' rates). A paused process
/// (`SIGSTOP`) finds its lease lapsed when it resumes, before it acts.
///
/// Clones share one lease.
///
/// ```
/// use std::time::Duration;
/// use dtxn::log::Lease;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lease = Lease::new(Duration::from_secs(8));
/// assert!(!lease.is_held()); // until its first renewal
/// lease.renewed(tokio::time::Instant::now());
/// assert!(lease.is_held());
/// tokio::time::advance(Duration::from_secs(7)).await;
/// assert!(!lease.is_held()); // 7/8 of 8 s: lapsed
/// lease.lose();
/// lease.renewed(tokio::time::Instant::now());
/// assert!(lease.is_lost() && !lease.is_held()); // lost for good
/// # }
/// ```
#[derive(Clone)]
pub struct Lease(Arc<LeaseState>);

struct LeaseState {
    duration: Duration,
    base: Instant,
    /// Nanoseconds from `base` until which the lease is held (0: never
    /// renewed yet).
    held_until: AtomicU64,
    lost: AtomicBool,
}

impl Lease {
    /// A lease of `duration`, not held until its first renewal.
    pub fn new(duration: Duration) -> Self {
        Self(Arc::new(LeaseState {
            duration,
            base: Instant::now(),
            held_until: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        }))
    }

    /// The lease time.
    pub fn duration(&self) -> Duration {
        self.0.duration
    }

    /// Records a renewal whose storage transaction was sent at `sent`: held
    /// until `sent` plus 7/8 of the lease time (never moved back). No
    /// effect once lost.
    pub fn renewed(&self, sent: Instant) {
        if self.is_lost() {
            return;
        }
        let held = self.0.duration - self.0.duration / 8;
        let nanos = self
            .nanos(sent)
            .saturating_add(u64::try_from(held.as_nanos()).unwrap_or(u64::MAX));
        self.0.held_until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Loses the lease for good: another coordinator took over, or this
    /// one stopped acting. Renewals no longer count.
    pub fn lose(&self) {
        self.0.lost.store(true, Ordering::Release);
    }

    /// Whether the lease is lost for good.
    pub fn is_lost(&self) -> bool {
        self.0.lost.load(Ordering::Acquire)
    }

    /// Whether the lease is held now: renewed recently enough and not
    /// lost.
    pub fn is_held(&self) -> bool {
        !self.is_lost() && self.nanos(Instant::now()) < self.0.held_until.load(Ordering::Acquire)
    }

    /// How long it stays held without another renewal (zero when not
    /// held).
    pub fn remaining(&self) -> Duration {
        if self.is_lost() {
            return Duration::ZERO;
        }
        let until = self.0.held_until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.nanos(Instant::now())))
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("duration", &self.0.duration)
            .field("held", &self.is_held())
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// A decision log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Another coordinator has the log open.
    #[error("the decision log {location} is in use by another coordinator")]
    Locked {
        /// Where the log is.
        location: String,
    },
    /// The log was written by a newer version of dtxn.
    #[error("the decision log is in format {found}, newer than this dtxn's {supported}")]
    NewerFormat {
        /// The log's format.
        found: u32,
        /// The newest this version reads.
        supported: u32,
    },
    /// A record could not be decoded.
    #[error("the decision log holds a damaged record: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
    },
    /// A PostgreSQL schema name that is not a plain lowercase identifier.
    #[error("invalid decision log schema {schema:?}: lowercase letters, digits and _, starting with a letter, at most 63 bytes")]
    InvalidSchema {
        /// The name given.
        schema: String,
    },
    /// A cluster node id that is not a plain lowercase identifier (letters,
    /// digits and `_`, starting with a letter) short enough to name its
    /// schema.
    #[error("invalid node id {node:?}: lowercase letters, digits and _, starting with a letter, at most {max} bytes")]
    InvalidNodeId {
        /// The id given.
        node: String,
        /// The longest id the cluster's schema name leaves room for.
        max: usize,
    },
    /// A cluster lease outside the range a node accepts.
    #[error("a lease of {lease:?} is outside {min:?}..={max:?}")]
    InvalidLease {
        /// The lease given.
        lease: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// This coordinator no longer owns its part of a shared log: its lease
    /// expired and another coordinator took its decisions over (or it was
    /// given up by this process). Nothing was written; the coordinator
    /// acts on nothing any more (PROTOCOL.md rule 17).
    #[error("the decision log fenced out node {node}: its lease was lost and another coordinator owns its transactions")]
    Fenced {
        /// This coordinator's node id.
        node: String,
    },
    /// The log was closed (its background writer stopped).
    #[error("the decision log is closed")]
    Closed,
    /// The storage refused an operation (I/O error, disk full, read-only
    /// file, lost connection).
    #[error("decision log: {message}")]
    Backend {
        /// The storage's error.
        message: String,
    },
}

/// Finds a participant again after a restart, by its
/// [`recovery_key`](crate::Participant::recovery_key). Implemented by
/// [`ParticipantRegistry`] and by closures
/// `Fn(&str) -> Option<Arc<dyn Participant>>` (to make a remote participant
/// from a URL, say).
pub trait ParticipantResolver: Send + Sync {
    /// The participant registered under `key`, if any.
    fn resolve(&self, key: &str) -> Option<Arc<dyn Participant>>;
}

impl<F> ParticipantResolver for F
where
    F: Fn(&str) -> Option<Arc<dyn Participant>> + Send + Sync,
{
    fn resolve(&self, key: &str) -> Option<Arc<dyn Participant>> {
        self(key)
    }
}

/// In-process participants by [`recovery_key`](crate::Participant::recovery_key),
/// filled by the application at start so that
/// [`recover`](crate::TransactionCoordinator::recover) can deliver logged
/// decisions to them.
///
/// ```
/// use std::sync::Arc;
/// use dtxn::log::ParticipantRegistry;
/// # use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
/// # struct Inventory;
/// # #[async_trait]
/// # impl Participant for Inventory {
/// #     fn recovery_key(&self) -> Option<&str> { Some("inventory") }
/// #     async fn prepare(&self, _: TransactionId) -> PreparedResult { PreparedResult::Ready }
/// #     async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// #     async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// # }
///
/// let mut registry = ParticipantRegistry::new();
/// registry.insert(Arc::new(Inventory))?;
/// assert!(registry.get("inventory").is_some());
/// # Ok::<(), dtxn::log::RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct ParticipantRegistry {
    by_key: HashMap<Arc<str>, Arc<dyn Participant>>,
}

/// A participant could not be added to a [`ParticipantRegistry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// It has no [`recovery_key`](crate::Participant::recovery_key).
    #[error("participant {name} has no recovery key")]
    NoKey {
        /// Its name.
        name: String,
    },
    /// Another participant has the same key.
    #[error("two participants share the recovery key {key:?}")]
    Duplicate {
        /// The key.
        key: String,
    },
}

impl ParticipantRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `participant` under its recovery key.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoKey`] or [`RegistryError::Duplicate`].
    pub fn insert(&mut self, participant: Arc<dyn Participant>) -> Result<(), RegistryError> {
        let Some(key) = participant.recovery_key().map(Arc::<str>::from) else {
            return Err(RegistryError::NoKey {
                name: participant.name().to_owned(),
            });
        };
        if self.by_key.contains_key(&key) {
            return Err(RegistryError::Duplicate {
                key: key.to_string(),
            });
        }
        self.by_key.insert(key, participant);
        Ok(())
    }

    /// The participant registered under `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<dyn Participant>> {
        self.by_key.get(key)
    }

    /// How many participants are registered.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl fmt::Debug for ParticipantRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.by_key.keys()).finish()
    }
}

impl ParticipantResolver for ParticipantRegistry {
    fn resolve(&self, key: &str) -> Option<Arc<dyn Participant>> {
        self.get(key).cloned()
    }
}

/// What [`recover`](crate::TransactionCoordinator::recover) found in the
/// log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Logged Commit decisions whose phase 2 is being delivered again.
    pub redelivering: Vec<TransactionId>,
    /// Participants of those decisions that no resolver knew: they are
    /// given up on (a heuristic hazard each) and their decision stays in
    /// the log for the next start. (transaction, recovery key)
    pub unresolved: Vec<(TransactionId, String)>,
}
