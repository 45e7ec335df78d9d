//! What the barrier costs per participant call.
//!
//! Times N sequential calls of one business write (`UPDATE` of one row) in
//! its own database transaction, bare and with [`Barrier::enter`] in the
//! same transaction, interleaved so both see the same machine, and prints
//! the median and 99th percentile of each.
//!
//! ```text
//! cargo run --release -p dtxn-participant --all-features --example barrier_cost -- [N]
//! ```
//!
//! SQLite runs on a temp file (WAL, `synchronous=NORMAL`, as a service
//! would); PostgreSQL runs when `DTXN_TEST_POSTGRES_URL` is set.

use dtxn_participant::{Backend, Barrier, Decision, Op};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(2000), |a| a.parse())?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let run = format!("{}-{nanos}", std::process::id());

    let dir = std::env::temp_dir().join(format!("dtxn-barrier-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("cost.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    measure(&sqlite, Barrier::sqlite(), n, "?", &run, "sqlite").await?;
    sqlite.close().await;
    std::fs::remove_dir_all(&dir)?;

    match std::env::var("DTXN_TEST_POSTGRES_URL") {
        Ok(url) => {
            let pg = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            measure(&pg, Barrier::postgres(), n, "$1", &run, "postgres").await?;
        }
        Err(_) => println!("postgres: skipped (DTXN_TEST_POSTGRES_URL is not set)"),
    }
    Ok(())
}

async fn measure<DB: Backend>(
    pool: &sqlx::Pool<DB>,
    barrier: Barrier<DB>,
    n: usize,
    placeholder: &str,
    run: &str,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    barrier.create_table(pool).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS cost_stock (item VARCHAR(16) PRIMARY KEY, reserved BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM cost_stock").execute(pool).await?;
    sqlx::query("INSERT INTO cost_stock VALUES ('book', 0)")
        .execute(pool)
        .await?;
    let update =
        format!("UPDATE cost_stock SET reserved = reserved + {placeholder} WHERE item = 'book'");

    let (mut bare, mut fenced, mut duplicate) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + n / 10 {
        let warm = i < n / 10;
        let txn = format!("cost-{run}-{i}");

        let start = Instant::now();
        let mut tx = pool.begin().await?;
        sqlx::query(&update).bind(1_i64).execute(&mut *tx).await?;
        tx.commit().await?;
        let t_bare = start.elapsed();

        let start = Instant::now();
        let mut tx = pool.begin().await?;
        if barrier
            .enter(&mut tx, &txn, "inventory", Op::Prepare)
            .await?
            == Decision::Execute
        {
            sqlx::query(&update).bind(1_i64).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let t_fenced = start.elapsed();

        // The retry of the same call: the barrier answers Duplicate.
        let start = Instant::now();
        let mut tx = pool.begin().await?;
        let d = barrier
            .enter(&mut tx, &txn, "inventory", Op::Prepare)
            .await?;
        assert_eq!(d, Decision::Duplicate);
        tx.commit().await?;
        let t_dup = start.elapsed();

        if !warm {
            bare.push(t_bare);
            fenced.push(t_fenced);
            duplicate.push(t_dup);
        }
    }
    let (b50, b99) = stats(&mut bare);
    let (f50, f99) = stats(&mut fenced);
    let (d50, d99) = stats(&mut duplicate);
    println!("{name}: {n} calls, one UPDATE per transaction");
    println!(
        "  bare transaction        median {:>8.1} µs  p99 {:>8.1} µs",
        us(b50),
        us(b99)
    );
    println!(
        "  with barrier (execute)  median {:>8.1} µs  p99 {:>8.1} µs",
        us(f50),
        us(f99)
    );
    println!(
        "  duplicate (skipped)     median {:>8.1} µs  p99 {:>8.1} µs",
        us(d50),
        us(d99)
    );
    println!(
        "  barrier cost per call   median {:>+8.1} µs",
        us(f50) - us(b50)
    );
    Ok(())
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
