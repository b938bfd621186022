//! Reconciliation, the last safety net: an order still `pending` long after it was placed has
//! lost its way (a purged or deleted queue, a classic queue lost with its node, a retry message
//! dropped by a dead-letter exchange, a lost `order.processed`). The sweep publishes its
//! `order.created` again through the outbox, with the same event id; the processor decides it if
//! it never did, or announces its decision again if it did, so the order ends final either way.
//!
//! Each sweep, in one transaction under an advisory lock (one instance sweeps at a time, the
//! others skip):
//!
//! 1. orders placed since the last sweep's horizon and now older than `pending_after` that are
//!    still pending join `reconciliation`, due at once;
//! 2. up to `max_per_sweep` due rows are taken: an order that is final meanwhile leaves; a pending
//!    one gets its event written to the outbox again, and is due again after a backoff that
//!    doubles from `pending_after` up to `max_backoff`.

use chrono::{DateTime, Utc};
use contracts::events::{OrderCreated, OrderLine};
use messaging::meter::{Counter, Gauge, Meter};
use messaging::outbox::{self, Handoff};
use messaging::shutdown::sleep_unless_cancelled;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::ReconcileSettings;
use crate::store::order_created;

/// Any constant works, as long as every instance uses the same one.
const SWEEP_LOCK: i64 = 7_234_012;

/// Step 1: pending orders past the threshold since the last horizon join the table.
const ENLIST: &str = r#"
WITH horizon AS (
    SELECT now() - $1::float8 * interval '1 second' AS until
), state AS (
    SELECT swept_until FROM reconcile_state WHERE id = 1
), enlisted AS (
    INSERT INTO reconciliation (order_id, attempts, next_at)
    SELECT o.id, 0, now() FROM orders o, horizon, state
    WHERE o.created_at > state.swept_until AND o.created_at <= horizon.until
      AND o.status = 'pending'
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
UPDATE reconcile_state SET swept_until = (SELECT until FROM horizon)
WHERE id = 1 AND swept_until < (SELECT until FROM horizon)
RETURNING (SELECT count(*) FROM enlisted)
"#;

/// Step 2: due rows; final orders leave, pending ones are due again later and returned.
const TAKE_DUE: &str = r#"
WITH due AS (
    SELECT r.order_id, r.attempts, o.status
    FROM reconciliation r LEFT JOIN orders o ON o.id = r.order_id
    WHERE r.next_at <= now()
    ORDER BY r.next_at
    LIMIT $1
), settled AS (
    DELETE FROM reconciliation r USING due
    WHERE r.order_id = due.order_id AND due.status IS DISTINCT FROM 'pending'
), bumped AS (
    UPDATE reconciliation r
    SET attempts = r.attempts + 1,
        next_at = now() + least($3::float8, $2::float8 * 2 ^ least(r.attempts, 30))
                          * interval '1 second'
    FROM due
    WHERE r.order_id = due.order_id AND due.status = 'pending'
    RETURNING r.order_id, r.attempts
)
SELECT o.id, o.customer_id, o.items, o.total_amount, o.created_at, b.attempts
FROM bumped b JOIN orders o ON o.id = b.order_id
"#;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error("stored order {0} is corrupt: {1}")]
    Corrupt(Uuid, String),
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Whether this instance held the lock (another may be sweeping).
    pub ran: bool,
    /// Orders that newly joined the reconciliation table.
    pub enlisted: i64,
    /// Orders whose `order.created` was written to the outbox again.
    pub republished: usize,
}

/// Orders pending past the threshold, and how old the oldest is: what the last sample found.
const STUCK: &str = r#"
SELECT count(*),
       COALESCE(EXTRACT(EPOCH FROM now() - min(o.created_at))::float8, 0)
FROM reconciliation r JOIN orders o ON o.id = r.order_id
WHERE o.status = 'pending'
"#;

/// What the sweeps count, and what the sample after each finds.
struct ReconcileMetrics {
    republished: Counter,
    stuck: Gauge,
    oldest_stuck: Gauge,
}

impl ReconcileMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            republished: meter.counter(
                "orders_republished_total",
                "order.created events the reconciliation published again for orders still pending.",
                &[],
            ),
            stuck: meter.gauge(
                "orders_stuck_pending",
                "Orders still pending RECONCILE__PENDING_AFTER_SECONDS after they were placed, sampled after each sweep.",
                &[],
            ),
            oldest_stuck: meter.gauge(
                "orders_stuck_pending_oldest_age_seconds",
                "Age of the oldest of those orders (0 when there is none).",
                &[],
            ),
        }
    }
}

pub struct Reconciler {
    db: DatabaseConnection,
    outbox: Handoff,
    settings: ReconcileSettings,
    metrics: ReconcileMetrics,
}

impl Reconciler {
    pub fn new(db: DatabaseConnection, outbox: Handoff, settings: ReconcileSettings) -> Self {
        Self {
            db,
            outbox,
            settings,
            metrics: ReconcileMetrics::new(&Meter::disabled()),
        }
    }

    /// Counts what the sweeps do, and samples the stuck orders, in `meter`.
    pub fn with_metrics(mut self, meter: &Meter) -> Self {
        self.metrics = ReconcileMetrics::new(meter);
        self
    }

    /// Sweeps every `interval` until `shutdown` trips, sampling the stuck orders after each.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.settings.interval;
        self.sample().await;
        while sleep_unless_cancelled(interval, &shutdown).await {
            match self.sweep().await {
                Ok(swept) => self.metrics.republished.increment(swept.republished as u64),
                Err(error) => {
                    tracing::warn!(%error, "reconciliation sweep failed; trying again at the next");
                }
            }
            self.sample().await;
        }
    }

    /// Samples the orders stuck in `pending` (every instance does: it only reads).
    async fn sample(&self) {
        let stuck: Result<(i64, f64), _> = sea_orm::sqlx::query_as(STUCK)
            .fetch_one(self.db.get_postgres_connection_pool())
            .await;
        match stuck {
            Ok((count, age)) => {
                self.metrics.stuck.set(count as f64);
                self.metrics.oldest_stuck.set(age);
            }
            Err(error) => tracing::debug!(%error, "could not sample the stuck orders"),
        }
    }

    /// One sweep (see the module's documentation).
    pub async fn sweep(&self) -> Result<Swept, ReconcileError> {
        let txn = self.db.begin().await?;
        let backend = txn.get_database_backend();
        let locked = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT pg_try_advisory_xact_lock($1)",
                [SWEEP_LOCK.into()],
            ))
            .await?
            .map(|row| row.try_get_by_index::<bool>(0))
            .transpose()?
            .unwrap_or(false);
        if !locked {
            txn.rollback().await?;
            return Ok(Swept::default());
        }
        let pending_after = self.settings.pending_after.as_secs_f64();
        let enlisted = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                ENLIST,
                [pending_after.into()],
            ))
            .await?
            .map(|row| row.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        let due = txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                TAKE_DUE,
                [
                    i64::from(self.settings.max_per_sweep).into(),
                    pending_after.into(),
                    self.settings.max_backoff.as_secs_f64().into(),
                ],
            ))
            .await?;
        let mut republished = Vec::with_capacity(due.len());
        for row in due {
            let id: Uuid = row.try_get_by_index(0)?;
            let items: serde_json::Value = row.try_get_by_index(2)?;
            let items: Vec<OrderLine> = serde_json::from_value(items)
                .map_err(|error| ReconcileError::Corrupt(id, error.to_string()))?;
            let created_at: DateTime<Utc> = row.try_get_by_index(4)?;
            let attempts: i32 = row.try_get_by_index(5)?;
            let event = order_created(OrderCreated {
                order_id: id,
                customer_id: row.try_get_by_index(1)?,
                items,
                total_amount: row.try_get_by_index::<Decimal>(3)?,
                created_at,
            });
            outbox::enqueue(&txn, &event).await?;
            republished.push((id, attempts, created_at));
        }
        txn.commit().await?;
        if !republished.is_empty() {
            self.outbox.wake();
        }
        for (order_id, attempts, created_at) in &republished {
            tracing::warn!(
                %order_id,
                event_id = %order_id,
                attempts,
                pending_for_seconds = (Utc::now() - *created_at).num_seconds(),
                "order still pending; order.created published again"
            );
        }
        Ok(Swept {
            ran: true,
            enlisted,
            republished: republished.len(),
        })
    }
}
