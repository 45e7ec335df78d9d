//! The SQL each database needs; the decision logic in [`crate::Barrier`] is
//! shared.

use std::future::Future;

/// The table, the same for every backend. The primary key is what makes the
/// barrier work: a second insert of (gid, branch, op) affects no row.
const DDL: &str = "CREATE TABLE IF NOT EXISTS dtxn_barrier (
    gid VARCHAR(128) NOT NULL,
    branch VARCHAR(128) NOT NULL,
    op VARCHAR(8) NOT NULL,
    reason VARCHAR(8) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (gid, branch, op)
)";

mod sealed {
    pub trait Sealed {}
}

/// A database the barrier can live in: `sqlx::Sqlite` (feature `sqlite`)
/// or `sqlx::Postgres` (feature `postgres`). Sealed.
pub trait Backend: sqlx::Database + sealed::Sealed {
    /// The `CREATE TABLE IF NOT EXISTS` statement of the barrier table, for
    /// services that keep their schema in migration files.
    const DDL: &'static str;

    /// Inserts the row unless its key exists; `true` if it inserted.
    #[doc(hidden)]
    fn insert<'c>(
        conn: &'c mut Self::Connection,
        txn: &'c str,
        branch: &'c str,
        op: &'static str,
        reason: &'static str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'c;

    /// The reason column of the row, if it exists.
    #[doc(hidden)]
    fn reason<'c>(
        conn: &'c mut Self::Connection,
        txn: &'c str,
        branch: &'c str,
        op: &'static str,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send + 'c;

    /// Creates the table if it does not exist.
    #[doc(hidden)]
    fn create_table(
        pool: &sqlx::Pool<Self>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + '_;
}

macro_rules! row_ops {
    ($insert:literal, $select:literal) => {
        fn insert<'c>(
            conn: &'c mut Self::Connection,
            txn: &'c str,
            branch: &'c str,
            op: &'static str,
            reason: &'static str,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'c {
            async move {
                let done = sqlx::query($insert)
                    .bind(txn)
                    .bind(branch)
                    .bind(op)
                    .bind(reason)
                    .execute(conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        fn reason<'c>(
            conn: &'c mut Self::Connection,
            txn: &'c str,
            branch: &'c str,
            op: &'static str,
        ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send + 'c {
            async move {
                let row: Option<(String,)> = sqlx::query_as($select)
                    .bind(txn)
                    .bind(branch)
                    .bind(op)
                    .fetch_optional(conn)
                    .await?;
                Ok(row.map(|(reason,)| reason))
            }
        }
    };
}

#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::Sqlite {}

#[cfg(feature = "sqlite")]
impl Backend for sqlx::Sqlite {
    const DDL: &'static str = DDL;

    row_ops!(
        "INSERT INTO dtxn_barrier (gid, branch, op, reason) VALUES (?, ?, ?, ?) \
         ON CONFLICT DO NOTHING",
        "SELECT reason FROM dtxn_barrier WHERE gid = ? AND branch = ? AND op = ?"
    );

    async fn create_table(pool: &sqlx::Pool<Self>) -> Result<(), sqlx::Error> {
        sqlx::query(DDL).execute(pool).await?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::Postgres {}

#[cfg(feature = "postgres")]
impl Backend for sqlx::Postgres {
    const DDL: &'static str = DDL;

    row_ops!(
        "INSERT INTO dtxn_barrier (gid, branch, op, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
        "SELECT reason FROM dtxn_barrier WHERE gid = $1 AND branch = $2 AND op = $3"
    );

    async fn create_table(pool: &sqlx::Pool<Self>) -> Result<(), sqlx::Error> {
        // Two services starting at once would both try to create the
        // table's catalog entries, and one would fail: serialise them.
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dtxn_barrier'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(DDL).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
