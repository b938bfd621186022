//! The figures of `GET /stats`, from the rollup the order statements keep
//! (`order_figures`, `order_latencies`, and their deltas; see the migration
//! `m20261207_000013_order_figures`): orders by status, revenue of completed orders, orders
//! placed per minute, create→decision percentiles. A read costs one row per minute and customer
//! of the window (plus the deltas not compacted yet), however many orders it holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sqlx::{self, PgPool, Row};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

/// Latency buckets: bucket `b` holds [2^(b/2), 2^((b+1)/2)) ms (`store`'s `latency_bucket!`).
pub const BUCKETS: usize = 44;
/// How often deltas are moved into the rollup.
const COMPACT_EVERY: Duration = Duration::from_secs(5);
/// Any constant works as long as every instance uses the same one.
const COMPACTION_LOCK: i64 = 7_234_013;

/// Which orders' figures: those created in the minutes starting in `[since, until)`, of one
/// customer or of everyone.
#[derive(Clone, Debug)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub customer_id: Option<String>,
}

/// Orders by their status now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ByStatus {
    pub pending: i64,
    pub completed: i64,
    pub rejected: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// Orders placed in one minute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct MinuteCount {
    /// The minute's start, RFC 3339, UTC.
    pub minute: DateTime<Utc>,
    pub orders: i64,
}

/// Time from creation to the processor's first decision (`completed`, `rejected` or `failed`;
/// not a cancellation), estimated from buckets each √2 wide: the true percentile lies in the
/// same bucket, so an estimate is within a factor √2 of it (−29% to +41%), and closer within
/// the bucket by interpolation.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Latency {
    /// Orders decided.
    pub orders: i64,
    /// Null without decided orders.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The figures of a window.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Figures {
    /// RFC 3339, UTC: the first minute counted.
    pub since: DateTime<Utc>,
    /// RFC 3339, UTC: orders created from here on are not counted.
    pub until: DateTime<Utc>,
    /// Orders placed.
    pub orders: i64,
    pub by_status: ByStatus,
    /// Sum of the completed orders' totals, exact decimal as a string.
    #[schema(value_type = String, example = "1234.50")]
    pub completed_revenue: Decimal,
    /// Orders placed per minute over the window, on average.
    pub orders_per_minute: f64,
    /// Orders placed in each minute that had any, oldest first.
    pub placed_per_minute: Vec<MinuteCount>,
    pub create_to_decision: Latency,
}

/// The window's rows of `table` and of its deltas (`$1`, `$2`: the window; `$3`: the customer,
/// when `filter` names one).
macro_rules! window_rows {
    ($table:literal, $columns:literal, $filter:literal) => {
        concat!(
            "SELECT ",
            $columns,
            " FROM ",
            $table,
            " WHERE ",
            $filter,
            " UNION ALL SELECT ",
            $columns,
            " FROM ",
            $table,
            "_delta WHERE ",
            $filter
        )
    };
}

/// The three reads, over `filter`'s rows.
macro_rules! reads {
    ($filter:literal) => {
        [
            concat!(
                "SELECT coalesce(sum(placed), 0)::bigint AS placed, ",
                "coalesce(sum(completed), 0)::bigint AS completed, ",
                "coalesce(sum(rejected), 0)::bigint AS rejected, ",
                "coalesce(sum(failed), 0)::bigint AS failed, ",
                "coalesce(sum(cancelled), 0)::bigint AS cancelled, ",
                "coalesce(sum(revenue), 0) AS revenue FROM (",
                window_rows!(
                    "order_figures",
                    "placed, completed, rejected, failed, cancelled, revenue",
                    $filter
                ),
                ") f"
            ),
            concat!(
                "SELECT minute, sum(placed)::bigint AS orders FROM (",
                window_rows!("order_figures", "minute, placed", $filter),
                ") f GROUP BY minute HAVING sum(placed) <> 0 ORDER BY minute"
            ),
            concat!(
                "SELECT bucket, sum(orders)::bigint AS orders FROM (",
                window_rows!("order_latencies", "bucket, orders", $filter),
                ") f GROUP BY bucket"
            ),
        ]
    };
}

/// Totals, placed per minute, latency buckets: of everyone, of one customer.
const EVERYONE: [&str; 3] = reads!("minute >= $1 AND minute < $2");
const CUSTOMER: [&str; 3] = reads!("customer_id = $3 AND minute >= $1 AND minute < $2");

/// Reads the figures of `window` under one snapshot.
pub async fn read(pool: &PgPool, window: &Window) -> Result<Figures, sqlx::Error> {
    let since = window.since;
    let query = |index: usize| {
        let query = match &window.customer_id {
            Some(_) => sqlx::query(CUSTOMER[index]),
            None => sqlx::query(EVERYONE[index]),
        }
        .bind(since)
        .bind(window.until);
        match &window.customer_id {
            Some(customer) => query.bind(customer.clone()),
            None => query,
        }
    };
    let mut txn = crate::live::begin_snapshot(pool).await?;
    let row = query(0).fetch_one(&mut *txn).await?;
    let placed: i64 = row.try_get("placed")?;
    let (completed, rejected, failed, cancelled): (i64, i64, i64, i64) = (
        row.try_get("completed")?,
        row.try_get("rejected")?,
        row.try_get("failed")?,
        row.try_get("cancelled")?,
    );
    // Every order placed is in one status; those not in a final one are pending.
    let by_status = ByStatus {
        pending: placed - completed - rejected - failed - cancelled,
        completed,
        rejected,
        failed,
        cancelled,
    };
    let revenue: Decimal = row.try_get("revenue")?;
    let placed_per_minute = query(1)
        .fetch_all(&mut *txn)
        .await?
        .iter()
        .map(|row| {
            Ok(MinuteCount {
                minute: row.try_get("minute")?,
                orders: row.try_get("orders")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut buckets = [0_i64; BUCKETS];
    for row in query(2).fetch_all(&mut *txn).await? {
        let bucket: i16 = row.try_get("bucket")?;
        let orders: i64 = row.try_get("orders")?;
        if let Some(slot) = usize::try_from(bucket)
            .ok()
            .and_then(|b| buckets.get_mut(b))
        {
            *slot = slot.saturating_add(orders);
        }
    }
    txn.commit().await?;
    let minutes = ((window.until - since).num_seconds() as f64 / 60.0).max(1.0);
    Ok(Figures {
        since,
        until: window.until,
        orders: placed,
        by_status,
        completed_revenue: revenue,
        orders_per_minute: (placed as f64 / minutes * 100.0).round() / 100.0,
        placed_per_minute,
        create_to_decision: Latency {
            orders: buckets.iter().sum(),
            p50_ms: percentile(&buckets, 0.50),
            p99_ms: percentile(&buckets, 0.99),
        },
    })
}

/// The `q` quantile of the latencies counted in `buckets`, in ms: found in its bucket, then
/// interpolated within it (geometrically; linearly in the first, which starts at 0). The last
/// bucket is open: its lower bound.
pub fn percentile(buckets: &[i64; BUCKETS], q: f64) -> Option<f64> {
    let total: i64 = buckets.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = (q * total as f64).max(1.0);
    let mut below = 0_i64;
    for (bucket, &count) in buckets.iter().enumerate() {
        if count <= 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let fraction = (rank - below as f64) / count as f64;
            let lower = 2_f64.powf(bucket as f64 / 2.0);
            let upper = 2_f64.powf((bucket + 1) as f64 / 2.0);
            let estimate = match bucket {
                0 => upper * fraction,
                b if b == BUCKETS - 1 => lower,
                _ => lower * (upper / lower).powf(fraction),
            };
            return Some((estimate * 1000.0).round() / 1000.0);
        }
        below += count;
    }
    None
}

/// Moves the deltas into the rollup every few seconds, on one instance at a time (an advisory
/// lock), until `shutdown`. Readers add both, so it changes no figure, only their cost.
pub async fn compact_until(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(COMPACT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(error) = compact(&pool).await {
            tracing::warn!(%error, "could not compact the figures; trying again");
        }
    }
}

async fn compact(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut txn = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(COMPACTION_LOCK)
        .fetch_one(&mut *txn)
        .await?;
    if !locked {
        return txn.rollback().await;
    }
    sqlx::query(COMPACT_FIGURES).execute(&mut *txn).await?;
    sqlx::query(COMPACT_LATENCIES).execute(&mut *txn).await?;
    txn.commit().await
}

const COMPACT_FIGURES: &str = r#"
WITH moved AS (DELETE FROM order_figures_delta RETURNING *)
INSERT INTO order_figures (minute, customer_id, placed, completed, rejected, failed, cancelled, revenue)
SELECT minute, customer_id, sum(placed), sum(completed), sum(rejected), sum(failed), sum(cancelled),
       sum(revenue)
FROM moved GROUP BY 1, 2
ON CONFLICT (minute, customer_id) DO UPDATE SET
    placed = order_figures.placed + EXCLUDED.placed,
    completed = order_figures.completed + EXCLUDED.completed,
    rejected = order_figures.rejected + EXCLUDED.rejected,
    failed = order_figures.failed + EXCLUDED.failed,
    cancelled = order_figures.cancelled + EXCLUDED.cancelled,
    revenue = order_figures.revenue + EXCLUDED.revenue
"#;

const COMPACT_LATENCIES: &str = r#"
WITH moved AS (DELETE FROM order_latencies_delta RETURNING *)
INSERT INTO order_latencies (minute, customer_id, bucket, orders)
SELECT minute, customer_id, bucket, sum(orders) FROM moved GROUP BY 1, 2, 3
ON CONFLICT (minute, customer_id, bucket) DO UPDATE SET
    orders = order_latencies.orders + EXCLUDED.orders
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentile_lies_in_the_bucket_of_the_true_value() {
        // 100 latencies of 10 ms: bucket 6 ([8, 11.3) ms).
        let mut buckets = [0; BUCKETS];
        buckets[6] = 100;
        let p50 = percentile(&buckets, 0.5).unwrap();
        assert!((8.0..11.32).contains(&p50), "{p50}");
        // 99 fast and 1 slow: p99 is the fast bucket's top, p99.9 would be the slow one.
        let mut buckets = [0; BUCKETS];
        buckets[2] = 99;
        buckets[20] = 1;
        let p99 = percentile(&buckets, 0.99).unwrap();
        assert!((2.0..=2.83).contains(&p99), "{p99}");
        assert!(percentile(&buckets, 1.0).unwrap() >= 1024.0);
        assert_eq!(percentile(&[0; BUCKETS], 0.5), None);
        let mut open = [0; BUCKETS];
        open[BUCKETS - 1] = 3;
        assert_eq!(
            percentile(&open, 0.5),
            Some((2_f64.powf(21.5) * 1000.0).round() / 1000.0)
        );
    }
}
