//! `Idempotency-Key`s expire. A key names the order it placed for at least
//! `INTAKE__IDEMPOTENCY_KEY_HOURS`; every `INTAKE__KEY_SWEEP_INTERVAL_MS` a sweep releases the
//! keys of older orders (sets them to NULL), in batches, so that such a key places a new order
//! again and the unique index holds only the keys a client may still retry with. Every instance
//! sweeps: `SKIP LOCKED` keeps them off each other's rows, and releasing a key twice is harmless.

use std::time::Duration;

use messaging::meter::{Counter, Meter};
use messaging::shutdown::sleep_unless_cancelled;
use sea_orm::{DatabaseConnection, DbErr, sqlx};
use tokio_util::sync::CancellationToken;

/// Keys of orders placed more than `$1` seconds ago, oldest first, `$2` at most.
const RELEASE: &str = r#"
UPDATE orders SET idempotency_key = NULL
WHERE id IN (
    SELECT id FROM orders
    WHERE idempotency_key IS NOT NULL AND created_at < now() - $1::float8 * interval '1 second'
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"#;

/// Keys released by one statement at most: short transactions, however many expire at once.
const BATCH: i64 = 1000;

/// Releases every key older than `ttl`; answers how many.
pub async fn release_expired(db: &DatabaseConnection, ttl: Duration) -> Result<u64, DbErr> {
    let mut released = 0;
    loop {
        let done = sqlx::query(RELEASE)
            .bind(ttl.as_secs_f64())
            .bind(BATCH)
            .execute(db.get_postgres_connection_pool())
            .await
            .map_err(messaging::database::from_sqlx)?
            .rows_affected();
        released += done;
        if done < BATCH as u64 {
            return Ok(released);
        }
    }
}

/// The sweep every `interval` until `shutdown` trips.
pub struct KeySweep {
    db: DatabaseConnection,
    ttl: Duration,
    interval: Duration,
    released: Counter,
}

impl KeySweep {
    pub fn new(db: DatabaseConnection, ttl: Duration, interval: Duration, meter: &Meter) -> Self {
        Self {
            db,
            ttl,
            interval,
            released: meter.counter(
                "idempotency_keys_released_total",
                "Idempotency-Keys released after INTAKE__IDEMPOTENCY_KEY_HOURS: they place a new order again.",
                &[],
            ),
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        while sleep_unless_cancelled(self.interval, &shutdown).await {
            match release_expired(&self.db, self.ttl).await {
                Ok(0) => {}
                Ok(released) => {
                    self.released.increment(released);
                    tracing::info!(released, "expired idempotency keys released");
                }
                Err(error) => {
                    tracing::warn!(%error, "releasing expired idempotency keys failed; trying again at the next sweep");
                }
            }
        }
    }
}
