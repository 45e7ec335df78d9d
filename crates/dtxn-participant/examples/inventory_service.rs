//! A complete participant service in one file: an inventory that reserves
//! stock in `prepare`, takes it in `commit` and releases it in `rollback`,
//! keeping its state in a SQLite file behind the barrier, served over HTTP
//! for a `dtxn serve` coordinator.
//!
//! ```sh
//! cargo run --release -p dtxn-participant --example inventory_service -- 127.0.0.1:7002 inventory.db
//! ```
//!
//! Register it in a transaction with a payload saying what to reserve:
//! `{"name": "inventory", "url": "http://127.0.0.1:7002/2pc/",
//!   "payload": {"sku": "book", "qty": 2}}`. `GET /stock` shows the stock.
//! The walkthrough in docs/NETWORK.md drives it with curl.

use std::sync::Arc;

use axum::routing::get;
use axum::Json;
use dtxn::{async_trait, CallContext, ParticipantError, PreparedResult};
use dtxn_participant::{Branch, Guarded};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// What a transaction asks of the inventory: its payload.
struct Reservation {
    sku: String,
    qty: i64,
}

impl Reservation {
    fn of(cx: &CallContext) -> Result<Self, String> {
        let payload = cx.payload().ok_or("no payload: say what to reserve")?;
        let value: Value =
            serde_json::from_slice(payload.as_bytes()).map_err(|e| format!("payload: {e}"))?;
        let sku = value["sku"]
            .as_str()
            .ok_or("payload: no \"sku\"")?
            .to_owned();
        let qty = value["qty"]
            .as_i64()
            .filter(|q| *q > 0)
            .ok_or("payload: \"qty\" must be a positive integer")?;
        Ok(Self { sku, qty })
    }
}

struct Inventory;

fn db(e: sqlx::Error) -> ParticipantError {
    // Transient: the coordinator retries phase 2; a failed prepare aborts.
    ParticipantError::transient(format!("database: {e}"))
}

#[async_trait]
impl Branch<Sqlite> for Inventory {
    fn name(&self) -> &str {
        "inventory"
    }

    /// Moves `qty` from `available` to `reserved`, or votes no.
    async fn prepare(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        let r = match Reservation::of(cx) {
            Ok(r) => r,
            Err(why) => return Ok(PreparedResult::Aborted(why)),
        };
        let reserved = sqlx::query(
            "UPDATE stock SET available = available - ?2, reserved = reserved + ?2 \
             WHERE sku = ?1 AND available >= ?2",
        )
        .bind(&r.sku)
        .bind(r.qty)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if reserved.rows_affected() == 0 {
            return Ok(PreparedResult::Aborted(format!("not enough {}", r.sku)));
        }
        Ok(PreparedResult::Ready)
    }

    /// The reservation is taken: it leaves `reserved` for good.
    async fn commit(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        let r = Reservation::of(cx).map_err(ParticipantError::permanent)?;
        sqlx::query("UPDATE stock SET reserved = reserved - ?2, sold = sold + ?2 WHERE sku = ?1")
            .bind(&r.sku)
            .bind(r.qty)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The reservation goes back to `available`. The barrier calls this
    /// only after a prepare that reserved: empty rollbacks skip it.
    async fn rollback(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        cx: &CallContext,
    ) -> Result<(), ParticipantError> {
        let r = Reservation::of(cx).map_err(ParticipantError::permanent)?;
        sqlx::query(
            "UPDATE stock SET reserved = reserved - ?2, available = available + ?2 WHERE sku = ?1",
        )
        .bind(&r.sku)
        .bind(r.qty)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

async fn stock(pool: &SqlitePool) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT sku, available, reserved, sold FROM stock ORDER BY sku")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, available, reserved, sold)| {
            (
                sku,
                json!({"available": available, "reserved": reserved, "sold": sold}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7002".to_owned());
    let file = args.next().unwrap_or_else(|| "inventory.db".to_owned());

    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new().connect_with(options).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, \
         available INTEGER NOT NULL, reserved INTEGER NOT NULL, sold INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT OR IGNORE INTO stock VALUES ('book', 10, 0, 0), ('pen', 3, 0, 0)")
        .execute(&pool)
        .await?;

    // The one line that makes it a safe participant: the barrier guards
    // every call, and the router speaks the wire contract.
    let participant = Arc::new(Guarded::with_table(pool.clone(), Inventory).await?);
    let app = axum::Router::new()
        .nest("/2pc", dtxn_http::participant_router(participant))
        .route(
            "/stock",
            get(move || {
                let pool = pool.clone();
                async move { stock(&pool).await.map(Json).map_err(|e| e.to_string()) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "inventory on http://{}/2pc/ (stock: GET /stock), state in {file}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
