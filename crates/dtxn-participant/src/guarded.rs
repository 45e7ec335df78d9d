//! [`Guarded`]: a [`dtxn::Participant`] that runs the service's business
//! code ([`Branch`]) behind the [`Barrier`], one database transaction per
//! call.

use std::fmt;

use dtxn::{CallContext, Participant, ParticipantError, Phase, PreparedResult, TransactionId};

use crate::{Backend, Barrier, BarrierError, Decision, Op};

/// The vote [`Guarded`] answers to a prepare that arrives after its
/// transaction was rolled back here ([`Decision::Suspended`]).
pub const SUSPENDED_REASON: &str = "rolled back before it was prepared";

/// The business side of a participant: what it does in each phase, run
/// inside a database transaction that the [`Barrier`] guards. Wrap it in
/// [`Guarded`] to get a [`dtxn::Participant`].
///
/// Each method runs at most once per transaction id (and is not run at
/// all for duplicates, empty rollbacks and suspended prepares), in the
/// transaction `tx` that also holds the barrier row: do every database
/// write of the phase through `tx` (`sqlx::query(..).execute(&mut **tx)`),
/// so the write and the barrier row commit or vanish together. Do not
/// commit or roll back `tx` yourself.
///
/// The [`CallContext`] carries the transaction id, the attempt number and
/// the [`Payload`](dtxn::Payload) registered with the participant.
///
/// Implement it with [`dtxn::async_trait`], as `Participant` is. See
/// [`Guarded`] for an example.
#[dtxn::async_trait]
pub trait Branch<DB: Backend>: Send + Sync + 'static {
    /// The branch name: the second part of the barrier key (the first is
    /// the transaction id) and the participant's [`name`](Participant::name).
    /// 1 to [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, and the same on
    /// every call and every restart.
    fn name(&self) -> &str;

    /// Phase 1: do the work tentatively in `tx` and vote.
    ///
    /// [`Ready`](PreparedResult::Ready) and
    /// [`ReadOnly`](PreparedResult::ReadOnly) commit `tx`;
    /// [`Aborted`](PreparedResult::Aborted) rolls it back, barrier row
    /// included, so a retried prepare runs again. An `Err` rolls it back
    /// too and fails the call: the coordinator aborts the transaction and
    /// sends `rollback`, which finds nothing prepared (an empty rollback).
    async fn prepare(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError>;

    /// Phase 2 after a Commit decision: make the prepared work final in
    /// `tx`. An `Err` rolls `tx` back (barrier row included) and is handed
    /// to the coordinator, which retries unless it is
    /// [permanent](ParticipantError::permanent).
    async fn commit(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError>;

    /// Phase 2 after an Abort decision: undo the prepared work in `tx`.
    /// Only called when the prepare ran and committed here. An `Err` rolls
    /// `tx` back and is handed to the coordinator, as for
    /// [`commit`](Self::commit).
    async fn rollback(
        &self,
        tx: &mut sqlx::Transaction<'static, DB>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError>;
}

/// A [`dtxn::Participant`] that runs a [`Branch`] behind the [`Barrier`]:
/// the one line that makes a service's participant safe against duplicate
/// calls, empty rollbacks and suspended prepares.
///
/// Every call begins a transaction on the pool, enters the barrier with
/// the transaction id and the branch's [`name`](Branch::name), runs the
/// branch's method only on [`Decision::Execute`], and commits:
///
/// | call | decision | branch runs | answer |
/// |---|---|---|---|
/// | prepare | `Execute` | `prepare` | its vote (`Aborted` or `Err`: nothing is committed) |
/// | prepare | `Duplicate` | no | `Ready` |
/// | prepare | `Suspended` | no | `Aborted(`[`SUSPENDED_REASON`]`)` |
/// | commit | `Execute` | `commit` | its answer |
/// | commit | `Duplicate` | no | `Ok` |
/// | rollback | `Execute` | `rollback` | its answer |
/// | rollback | `EmptyRollback`, `Duplicate` | no | `Ok` (recorded) |
///
/// A failed database step (begin, barrier, commit) is a
/// [transient](ParticipantError::transient) error naming the step, so the
/// coordinator retries; a barrier that can never succeed (an invalid branch
/// name, a corrupt barrier row) is a [permanent](ParticipantError::permanent)
/// one. The messages hold the phase, the step and the database's error,
/// never the branch's data.
///
/// A duplicate prepare answers `Ready`, because only a yes vote commits
/// its barrier row; a branch that votes `ReadOnly` commits its row too, so
/// a *duplicate* of that prepare also answers `Ready`, and a commit may then
/// reach the branch: let `commit` accept a transaction that changed nothing.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use dtxn::{async_trait, CallContext, ParticipantError, PreparedResult, TransactionCoordinator};
/// use dtxn_participant::{Branch, Guarded};
/// use sqlx::{Sqlite, Transaction};
///
/// /// Reserves stock: the payload is `{"sku":"..."}`.
/// struct Inventory;
///
/// fn db_error(e: sqlx::Error) -> ParticipantError {
///     ParticipantError::transient(format!("inventory database: {e}"))
/// }
///
/// #[async_trait]
/// impl Branch<Sqlite> for Inventory {
///     fn name(&self) -> &str {
///         "inventory"
///     }
///     async fn prepare(
///         &self,
///         tx: &mut Transaction<'static, Sqlite>,
///         cx: &CallContext,
///     ) -> Result<PreparedResult, ParticipantError> {
///         // JSON-ish: a real service would use serde_json.
///         let text = cx.payload().and_then(|p| p.as_str()).unwrap_or_default();
///         let Some(sku) = text
///             .strip_prefix(r#"{"sku":""#)
///             .and_then(|rest| rest.strip_suffix(r#""}"#))
///         else {
///             return Ok(PreparedResult::Aborted("no sku in the payload".into()));
///         };
///         sqlx::query("INSERT INTO reservations (txn, sku, state) VALUES (?, ?, 'held')")
///             .bind(cx.transaction_id().to_string())
///             .bind(sku)
///             .execute(&mut **tx)
///             .await
///             .map_err(db_error)?;
///         Ok(PreparedResult::Ready)
///     }
///     async fn commit(
///         &self,
///         tx: &mut Transaction<'static, Sqlite>,
///         cx: &CallContext,
///     ) -> Result<(), ParticipantError> {
///         sqlx::query("UPDATE reservations SET state = 'sold' WHERE txn = ?")
///             .bind(cx.transaction_id().to_string())
///             .execute(&mut **tx)
///             .await
///             .map_err(db_error)?;
///         Ok(())
///     }
///     async fn rollback(
///         &self,
///         tx: &mut Transaction<'static, Sqlite>,
///         cx: &CallContext,
///     ) -> Result<(), ParticipantError> {
///         sqlx::query("DELETE FROM reservations WHERE txn = ?")
///             .bind(cx.transaction_id().to_string())
///             .execute(&mut **tx)
///             .await
///             .map_err(db_error)?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A file (`sqlite://inventory.db?mode=rwc`) in a real service; an
/// // in-memory database lives in one connection.
/// let pool = sqlx::sqlite::SqlitePoolOptions::new()
///     .max_connections(1)
///     .connect("sqlite::memory:")
///     .await?;
/// sqlx::query("CREATE TABLE reservations (txn TEXT PRIMARY KEY, sku TEXT, state TEXT)")
///     .execute(&pool)
///     .await?;
/// // Creates the barrier table too.
/// let inventory = Arc::new(Guarded::with_table(pool.clone(), Inventory).await?);
///
/// let coordinator = TransactionCoordinator::new();
/// let txn = coordinator.begin_transaction()?;
/// coordinator.register_participant_with_payload(txn, inventory, r#"{"sku":"book"}"#)?;
/// assert!(coordinator.prepare_transaction(txn).await?.is_prepared());
/// assert!(coordinator.commit_transaction(txn).await?.is_committed());
///
/// let (state,): (String,) = sqlx::query_as("SELECT state FROM reservations WHERE sku = 'book'")
///     .fetch_one(&pool)
///     .await?;
/// assert_eq!(state, "sold");
/// # Ok(())
/// # }
/// ```
///
/// To serve it to a remote coordinator over HTTP, hand it to the
/// `dtxn-http` crate (not a dependency of this one):
///
/// ```text
/// let app = dtxn_http::participant_router(Arc::new(Guarded::new(pool, Inventory)));
/// ```
pub struct Guarded<DB: Backend, B> {
    pool: sqlx::Pool<DB>,
    branch: B,
    barrier: Barrier<DB>,
}

impl<DB: Backend, B: Branch<DB>> Guarded<DB, B> {
    /// Runs `branch` on `pool`. The barrier table must exist: create it
    /// with [`Barrier::create_table`] or your migrations
    /// ([`Backend::DDL`]), or use [`with_table`](Self::with_table).
    pub fn new(pool: sqlx::Pool<DB>, branch: B) -> Self {
        Self {
            pool,
            branch,
            barrier: Barrier::new(),
        }
    }

    /// As [`new`](Self::new), after creating the barrier table if it does
    /// not exist.
    ///
    /// # Errors
    ///
    /// [`BarrierError::Database`] if the table cannot be created.
    pub async fn with_table(pool: sqlx::Pool<DB>, branch: B) -> Result<Self, BarrierError> {
        let guarded = Self::new(pool, branch);
        guarded.barrier.create_table(&guarded.pool).await?;
        Ok(guarded)
    }

    /// The pool each call begins its transaction on.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// The business side.
    pub fn branch(&self) -> &B {
        &self.branch
    }

    /// Begins the call's transaction and enters the barrier.
    async fn enter(
        &self,
        cx: &CallContext,
        op: Op,
    ) -> Result<(sqlx::Transaction<'static, DB>, Decision), ParticipantError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| database_error(op, "begin", &e))?;
        let decision = self
            .barrier
            .enter(
                &mut tx,
                &cx.transaction_id().to_string(),
                self.branch.name(),
                op,
            )
            .await
            .map_err(|e| barrier_error(op, &e))?;
        Ok((tx, decision))
    }

    /// Commits the call's transaction.
    async fn commit_tx(
        &self,
        tx: sqlx::Transaction<'static, DB>,
        op: Op,
    ) -> Result<(), ParticipantError> {
        tx.commit()
            .await
            .map_err(|e| database_error(op, "commit", &e))
    }

    /// Runs phase 2 (`op` is commit or rollback).
    async fn phase2(&self, cx: &CallContext, op: Op) -> Result<(), ParticipantError> {
        let (mut tx, decision) = self.enter(cx, op).await?;
        if decision == Decision::Execute {
            let done = match op {
                Op::Rollback => self.branch.rollback(&mut tx, cx).await,
                _ => self.branch.commit(&mut tx, cx).await,
            };
            if let Err(e) = done {
                // Nothing of this call is kept: a retry executes again.
                // Dropping the transaction rolls it back if this fails.
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        // Skipped calls commit too: that records an empty rollback.
        self.commit_tx(tx, op).await
    }
}

impl<DB: Backend, B> fmt::Debug for Guarded<DB, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("backend", &<DB as sqlx::Database>::NAME)
            .field("branch", &std::any::type_name::<B>())
            .finish_non_exhaustive()
    }
}

/// A database step of `op` failed: worth retrying.
fn database_error(op: Op, step: &str, e: &sqlx::Error) -> ParticipantError {
    ParticipantError::transient(format!("{op}: database error during {step}: {e}"))
}

/// The barrier failed: retrying helps unless the key or the table is wrong.
fn barrier_error(op: Op, e: &BarrierError) -> ParticipantError {
    let message = format!("{op}: barrier: {e}");
    match e {
        BarrierError::InvalidKey { .. } | BarrierError::CorruptRow { .. } => {
            ParticipantError::permanent(message)
        }
        _ => ParticipantError::transient(message),
    }
}

#[dtxn::async_trait]
impl<DB: Backend, B: Branch<DB>> Participant for Guarded<DB, B> {
    fn name(&self) -> &str {
        self.branch.name()
    }

    /// Never called by the coordinator (it calls
    /// [`prepare_with`](Participant::prepare_with)). A failed call votes
    /// `Aborted`; prefer [`try_prepare`](Participant::try_prepare), which
    /// returns the error.
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        match self.try_prepare(txn).await {
            Ok(vote) => vote,
            Err(e) => PreparedResult::Aborted(e.message().to_owned()),
        }
    }

    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        self.prepare_with(&CallContext::new(txn, Phase::Prepare))
            .await
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.commit_with(&CallContext::new(txn, Phase::Commit))
            .await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.rollback_with(&CallContext::new(txn, Phase::Rollback))
            .await
    }

    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        let op = Op::Prepare;
        let (mut tx, decision) = self.enter(cx, op).await?;
        let vote = match decision {
            Decision::Execute => match self.branch.prepare(&mut tx, cx).await {
                Ok(vote @ (PreparedResult::Ready | PreparedResult::ReadOnly)) => vote,
                Ok(aborted @ PreparedResult::Aborted(_)) => {
                    // A no vote keeps nothing, not even the barrier row, so
                    // a committed prepare row always means "voted yes".
                    let _ = tx.rollback().await;
                    return Ok(aborted);
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            },
            Decision::Duplicate => PreparedResult::Ready,
            // `EmptyRollback` is never a prepare's decision.
            Decision::Suspended | Decision::EmptyRollback => {
                PreparedResult::Aborted(SUSPENDED_REASON.to_owned())
            }
        };
        self.commit_tx(tx, op).await?;
        Ok(vote)
    }

    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.phase2(cx, Op::Commit).await
    }

    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.phase2(cx, Op::Rollback).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn assert_participant<P: Participant>() {}

    struct Nothing;

    #[dtxn::async_trait]
    impl<DB: Backend> Branch<DB> for Nothing {
        fn name(&self) -> &str {
            "nothing"
        }
        async fn prepare(
            &self,
            _: &mut sqlx::Transaction<'static, DB>,
            _: &CallContext,
        ) -> Result<PreparedResult, ParticipantError> {
            Ok(PreparedResult::ReadOnly)
        }
        async fn commit(
            &self,
            _: &mut sqlx::Transaction<'static, DB>,
            _: &CallContext,
        ) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(
            &self,
            _: &mut sqlx::Transaction<'static, DB>,
            _: &CallContext,
        ) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    #[allow(dead_code)]
    const _: () = {
        #[cfg(feature = "sqlite")]
        assert_participant::<Guarded<sqlx::Sqlite, Nothing>>();
        #[cfg(feature = "postgres")]
        assert_participant::<Guarded<sqlx::Postgres, Nothing>>();
    };

    #[test]
    fn invalid_keys_are_permanent_and_database_errors_transient() {
        let key = BarrierError::InvalidKey {
            field: "branch",
            len: 0,
        };
        assert!(barrier_error(Op::Prepare, &key).is_permanent());
        let db = BarrierError::Database {
            during: crate::Step::Insert,
            source: sqlx::Error::PoolClosed,
        };
        let e = barrier_error(Op::Commit, &db);
        assert!(!e.is_permanent());
        assert!(
            e.message().starts_with("commit: barrier: "),
            "{}",
            e.message()
        );
        assert!(e.message().contains("insert"), "{}", e.message());
    }
}
