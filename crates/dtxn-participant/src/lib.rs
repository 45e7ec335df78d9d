//! The participant side of dtxn: a **barrier** that makes prepare, commit
//! and rollback idempotent with one call inside the service's own database
//! transaction.
//!
//! A coordinator retries, networks duplicate and reorder, and so a
//! participant service sees three kinds of trouble (the names are DTM's and
//! Seata's, whose sub-transaction barrier and TCC fence this follows):
//!
//! - **duplicates**: the same prepare, commit or rollback arrives twice;
//! - **empty rollback**: a rollback arrives for a prepare that never ran
//!   (the prepare was lost, or is still on its way);
//! - **suspension**: that late prepare then arrives after its rollback. If
//!   it ran, it would reserve resources nobody will ever release.
//!
//! [`Barrier::enter`] records the call in the table `dtxn_barrier`, in the
//! same database transaction as the business write, and answers a
//! [`Decision`]: [`Execute`](Decision::Execute) the business operation, or
//! skip it because it is a [`Duplicate`](Decision::Duplicate), an
//! [`EmptyRollback`](Decision::EmptyRollback), or a prepare that must be
//! refused because its transaction was already rolled back
//! ([`Suspended`](Decision::Suspended)). Because the barrier row and the
//! business write commit or vanish together, a crash between them leaves
//! neither, and the retry executes.
//!
//! Most services need only [`Guarded`]: implement [`Branch`] (the business
//! side of prepare, commit and rollback, each given the database
//! transaction and dtxn's [`CallContext`](dtxn::CallContext)) and
//! `Guarded::new(pool, branch)` is a [`dtxn::Participant`] that enters the
//! barrier, runs the branch only when it should, and answers the
//! coordinator as the table below says. The rest of this page is the
//! barrier underneath, for services that want to drive it themselves.
//!
//! # Example
//!
//! ```
//! use dtxn_participant::{Barrier, Decision, Op};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A file path (`sqlite://orders.db?mode=rwc`) in a real service.
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! let barrier = Barrier::sqlite();
//! barrier.create_table(&pool).await?; // once, at start-up
//! sqlx::query("CREATE TABLE stock (item TEXT PRIMARY KEY, reserved INTEGER)")
//!     .execute(&pool)
//!     .await?;
//!
//! // The coordinator's call: transaction id, this participant's name, phase.
//! let (txn, branch) = ("0000000000000001-0000000000000007", "inventory");
//! for _attempt in 0..2 {
//!     let mut tx = pool.begin().await?;
//!     match barrier.enter(&mut tx, txn, branch, Op::Prepare).await? {
//!         Decision::Execute => {
//!             sqlx::query("INSERT INTO stock VALUES ('book', 1)")
//!                 .execute(&mut *tx)
//!                 .await?;
//!         }
//!         Decision::Suspended => { /* vote no */ }
//!         Decision::Duplicate | Decision::EmptyRollback => { /* answer as before */ }
//!     }
//!     tx.commit().await?;
//! }
//! // The retried prepare did not reserve twice.
//! let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM stock").fetch_one(&pool).await?;
//! assert_eq!(n, 1);
//!
//! // Or let the barrier own the transaction:
//! let done = barrier
//!     .run(&pool, txn, branch, Op::Commit, async |tx| {
//!         sqlx::query("UPDATE stock SET reserved = 0").execute(&mut **tx).await?;
//!         Ok::<_, sqlx::Error>(())
//!     })
//!     .await?;
//! assert_eq!(done, dtxn_participant::Outcome::Executed(()));
//! # Ok(())
//! # }
//! ```
//!
//! # What to answer the coordinator
//!
//! | operation | decision | answer |
//! |---|---|---|
//! | any | `Execute` | the business operation's own answer |
//! | prepare | `Duplicate` | what the first prepare answered (see below) |
//! | prepare | `Suspended` | no: the transaction was already rolled back |
//! | commit | `Duplicate` | done |
//! | rollback | `Duplicate` or `EmptyRollback` | done |
//!
//! A prepare that votes no should not commit its barrier row: roll the
//! transaction back (as [`Barrier::run`] does when the closure returns an
//! error), so a retried prepare runs again and votes again. Then a
//! committed prepare row always means "voted yes".
//!
//! # Choosing a backend
//!
//! The `sqlite` feature (on by default) stores the barrier in a SQLite file
//! next to the service's data: no server to run. Open the file in WAL mode
//! with a busy timeout (sqlx's defaults wait 5 s) so concurrent calls queue
//! instead of failing. The `postgres` feature stores it in PostgreSQL; use
//! the default `READ COMMITTED` isolation, under which a concurrent duplicate
//! waits for the first call's transaction and then sees its row.
//!
//! # Guarantees
//!
//! - For each (transaction id, branch, operation) at most one database
//!   transaction that entered the barrier with [`Decision::Execute`]
//!   commits, however many calls race.
//! - A rollback that commits before its prepare marks the prepare as rolled
//!   back; every later prepare for that key gets [`Decision::Suspended`].
//! - Nothing is recorded unless the caller's transaction commits.
//!
//! Call [`Barrier::enter`] first in the transaction: with SQLite, a
//! transaction that reads before it writes can fail with "database is
//! locked" when another writer got in between.
//!
//! The table grows by one to three rows per transaction and participant;
//! deleting rows older than the coordinator's longest retry window is the
//! operator's job.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod guarded;

pub use backend::Backend;
pub use guarded::{Branch, Guarded, SUSPENDED_REASON};

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

/// The name of the table the barrier keeps its rows in.
pub const TABLE: &str = "dtxn_barrier";

/// The longest transaction id or branch name [`Barrier::enter`] accepts, in
/// bytes (the columns are sized for it).
pub const MAX_KEY_LEN: usize = 128;

/// A phase of two-phase commit, as the participant receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Phase one: do the work tentatively and vote.
    Prepare,
    /// Phase two, decided commit: make the prepared work final.
    Commit,
    /// Phase two, decided abort: undo the prepared work.
    Rollback,
}

impl Op {
    /// The name stored in the barrier table: `prepare`, `commit` or
    /// `rollback`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Prepare => "prepare",
            Op::Commit => "commit",
            Op::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not `prepare`, `commit` or `rollback`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {found:?}: expected prepare, commit or rollback")]
pub struct ParseOpError {
    /// The text that was given.
    pub found: String,
}

impl FromStr for Op {
    type Err = ParseOpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prepare" => Ok(Op::Prepare),
            "commit" => Ok(Op::Commit),
            "rollback" => Ok(Op::Rollback),
            other => Err(ParseOpError {
                found: other.to_owned(),
            }),
        }
    }
}

/// What the service should do with the call it just received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// First time this (transaction, branch, operation) reached the
    /// barrier: run the business operation in the same database
    /// transaction, then commit it.
    Execute,
    /// The operation already ran and committed: skip it and answer as the
    /// first time (yes to a prepare, done to a commit or rollback).
    Duplicate,
    /// A rollback for a prepare that never ran here: there is nothing to
    /// undo, so skip it and answer done. The barrier has recorded it, so
    /// the late prepare will be [`Suspended`](Decision::Suspended).
    EmptyRollback,
    /// A prepare that arrived after its transaction was rolled back: refuse
    /// it (vote no) and do not touch any resource.
    Suspended,
}

impl Decision {
    /// `true` only for [`Decision::Execute`].
    pub const fn should_execute(self) -> bool {
        matches!(self, Decision::Execute)
    }
}

/// The result of [`Barrier::run`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome<T> {
    /// The business closure ran and its transaction committed with the
    /// barrier row; here is what it returned.
    Executed(T),
    /// The closure did not run; the barrier's decision says why (never
    /// [`Decision::Execute`]). The transaction was committed all the same,
    /// so an empty rollback is on record.
    Skipped(Decision),
}

/// The barrier could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The database failed (connection lost, lock timeout, missing table,
    /// ...). Nothing the barrier did is committed; retrying is safe.
    #[error("barrier database error during {during}: {source}")]
    Database {
        /// The step that failed.
        during: Step,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// A transaction id or branch name was empty or longer than
    /// [`MAX_KEY_LEN`] bytes.
    #[error("{field} must be 1 to {max} bytes long, got {len}", max = MAX_KEY_LEN)]
    InvalidKey {
        /// `"transaction id"` or `"branch"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The prepare row holds a reason this version does not write: the
    /// table is shared with something else, or was edited by hand.
    #[error("barrier row for {txn}/{branch} prepare has unexpected reason {reason:?}")]
    CorruptRow {
        /// The transaction id.
        txn: String,
        /// The branch.
        branch: String,
        /// The reason column as found.
        reason: String,
    },
}

/// The database step a [`BarrierError::Database`] happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Creating the barrier table.
    CreateTable,
    /// Beginning the transaction ([`Barrier::run`] only).
    Begin,
    /// Inserting the barrier row.
    Insert,
    /// Reading back the reason of an existing prepare row.
    ReadReason,
    /// Committing the transaction ([`Barrier::run`] only). Whether it
    /// committed is unknown; the barrier makes the retry safe either way.
    Commit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::CreateTable => "create table",
            Step::Begin => "begin",
            Step::Insert => "insert",
            Step::ReadReason => "read reason",
            Step::Commit => "commit",
        })
    }
}

/// The error of [`Barrier::run`]: the barrier's or the business closure's.
/// Either way the transaction was rolled back.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E> {
    /// The barrier failed (see [`BarrierError`]).
    #[error(transparent)]
    Barrier(#[from] BarrierError),
    /// The business closure returned this error.
    #[error("business operation failed: {0}")]
    Business(#[source] E),
}

/// The idempotency barrier for one database backend.
///
/// It holds no connection and no state: build one with
/// `Barrier::sqlite()` (feature `sqlite`) or `Barrier::postgres()` (feature
/// `postgres`) and copy it where needed.
pub struct Barrier<DB: Backend> {
    _db: PhantomData<fn() -> DB>,
}

impl<DB: Backend> Clone for Barrier<DB> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<DB: Backend> Copy for Barrier<DB> {}

impl<DB: Backend> fmt::Debug for Barrier<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("backend", &<DB as sqlx::Database>::NAME)
            .field("table", &TABLE)
            .finish()
    }
}

impl<DB: Backend> Default for Barrier<DB> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "sqlite")]
impl Barrier<sqlx::Sqlite> {
    /// The barrier in SQLite.
    pub const fn sqlite() -> Self {
        Self::new()
    }
}

#[cfg(feature = "postgres")]
impl Barrier<sqlx::Postgres> {
    /// The barrier in PostgreSQL.
    pub const fn postgres() -> Self {
        Self::new()
    }
}

/// The reason stored on a prepare row: the prepare itself ran.
const REASON_PREPARE: &str = "prepare";
/// The reason stored on a prepare row written by a rollback: the prepare
/// must never run.
const REASON_ROLLBACK: &str = "rollback";

impl<DB: Backend> Barrier<DB> {
    /// The barrier for backend `DB`.
    pub const fn new() -> Self {
        Self { _db: PhantomData }
    }

    /// Creates the barrier table if it does not exist. Call it once at
    /// start-up (or put the same DDL in your migrations: [`Backend::DDL`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the statement either ran or did not; call it again.
    pub async fn create_table(&self, pool: &sqlx::Pool<DB>) -> Result<(), BarrierError> {
        DB::create_table(pool)
            .await
            .map_err(|source| BarrierError::Database {
                during: Step::CreateTable,
                source,
            })
    }

    /// Records `op` for (`txn`, `branch`) in the caller's transaction and
    /// says whether to run the business operation. Run it (or not) in the
    /// same transaction, then commit: the decision holds only if the
    /// transaction commits.
    ///
    /// `txn` is the coordinator's transaction id as text (`dtxn`'s
    /// `TransactionId` displays and parses as such); `branch` names this
    /// participant. Both are 1 to [`MAX_KEY_LEN`] bytes.
    ///
    /// A concurrent call for the same key waits (PostgreSQL: on the row;
    /// SQLite: on the database write lock) until this transaction ends.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe on its own: if the future is dropped, the caller's
    /// transaction may or may not hold the row, and no decision was
    /// returned. Do not commit that transaction; drop it or roll it back
    /// (which discards the row), and a retry decides afresh.
    pub async fn enter(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        txn: &str,
        branch: &str,
        op: Op,
    ) -> Result<Decision, BarrierError> {
        check_key("transaction id", txn)?;
        check_key("branch", branch)?;
        let conn: &mut DB::Connection = tx;
        let insert = |source| BarrierError::Database {
            during: Step::Insert,
            source,
        };
        match op {
            Op::Rollback => {
                // Mark the prepare as rolled back first: if it never ran,
                // this row makes every later prepare refuse.
                let marked = DB::insert(conn, txn, branch, Op::Prepare.as_str(), REASON_ROLLBACK)
                    .await
                    .map_err(insert)?;
                let first = DB::insert(conn, txn, branch, Op::Rollback.as_str(), REASON_ROLLBACK)
                    .await
                    .map_err(insert)?;
                Ok(if !first {
                    Decision::Duplicate
                } else if marked {
                    Decision::EmptyRollback
                } else {
                    Decision::Execute
                })
            }
            Op::Commit => {
                let first = DB::insert(conn, txn, branch, Op::Commit.as_str(), Op::Commit.as_str())
                    .await
                    .map_err(insert)?;
                Ok(if first {
                    Decision::Execute
                } else {
                    Decision::Duplicate
                })
            }
            Op::Prepare => {
                if DB::insert(conn, txn, branch, Op::Prepare.as_str(), REASON_PREPARE)
                    .await
                    .map_err(insert)?
                {
                    return Ok(Decision::Execute);
                }
                let reason = DB::reason(conn, txn, branch, Op::Prepare.as_str())
                    .await
                    .map_err(|source| BarrierError::Database {
                        during: Step::ReadReason,
                        source,
                    })?;
                match reason.as_deref() {
                    Some(REASON_PREPARE) => Ok(Decision::Duplicate),
                    Some(REASON_ROLLBACK) => Ok(Decision::Suspended),
                    other => Err(BarrierError::CorruptRow {
                        txn: txn.to_owned(),
                        branch: branch.to_owned(),
                        reason: other.unwrap_or("<row missing>").to_owned(),
                    }),
                }
            }
        }
    }

    /// Begins a transaction on `pool`, enters the barrier, runs `business`
    /// in the transaction only on [`Decision::Execute`], and commits.
    ///
    /// If `business` fails, the transaction is rolled back (barrier row
    /// included) and its error returned, so the coordinator's retry
    /// executes again. A skipped call still commits, which records an
    /// empty rollback.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in effect: a dropped future drops the transaction, which
    /// rolls back; nothing is recorded and a retry decides afresh. If it is
    /// dropped while the commit is in flight, whether it committed is
    /// unknown, and the retry (a duplicate or a fresh execution) is still
    /// correct.
    pub async fn run<T, E, F>(
        &self,
        pool: &sqlx::Pool<DB>,
        txn: &str,
        branch: &str,
        op: Op,
        business: F,
    ) -> Result<Outcome<T>, RunError<E>>
    where
        F: AsyncFnOnce(&mut sqlx::Transaction<'static, DB>) -> Result<T, E>,
    {
        let mut tx = pool
            .begin()
            .await
            .map_err(|source| BarrierError::Database {
                during: Step::Begin,
                source,
            })?;
        let outcome = match self.enter(&mut tx, txn, branch, op).await? {
            Decision::Execute => {
                Outcome::Executed(business(&mut tx).await.map_err(RunError::Business)?)
            }
            skipped => Outcome::Skipped(skipped),
        };
        tx.commit().await.map_err(|source| BarrierError::Database {
            during: Step::Commit,
            source,
        })?;
        Ok(outcome)
    }
}

fn check_key(field: &'static str, value: &str) -> Result<(), BarrierError> {
    if value.is_empty() || value.len() > MAX_KEY_LEN {
        return Err(BarrierError::InvalidKey {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_round_trips_through_text() {
        for op in [Op::Prepare, Op::Commit, Op::Rollback] {
            assert_eq!(op.to_string().parse::<Op>(), Ok(op));
        }
        assert_eq!(
            "abort".parse::<Op>(),
            Err(ParseOpError {
                found: "abort".into()
            })
        );
    }

    #[test]
    fn only_execute_executes() {
        assert!(Decision::Execute.should_execute());
        for d in [
            Decision::Duplicate,
            Decision::EmptyRollback,
            Decision::Suspended,
        ] {
            assert!(!d.should_execute());
        }
    }

    const fn assert_send_sync<T: Send + Sync>() {}
    #[allow(dead_code)]
    const _: () = {
        assert_send_sync::<BarrierError>();
        assert_send_sync::<Decision>();
        #[cfg(feature = "sqlite")]
        assert_send_sync::<Barrier<sqlx::Sqlite>>();
        #[cfg(feature = "postgres")]
        assert_send_sync::<Barrier<sqlx::Postgres>>();
    };
}
