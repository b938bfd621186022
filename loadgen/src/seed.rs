//! `loadgen seed`: bulk-loads completed orders, each with its two history rows, into the order
//! service's (migrated) database, in server-side batches. The history looks like one the service
//! wrote itself: `created_at` a month in the past (new orders stay first in the listing), ids
//! UUIDv7 of that time, as the service makes them (so that new orders still land at the right
//! edge of the primary-key index), and the customers loadgen posts for (so that their new orders
//! go between their old ones in the per-customer index). No outbox rows: the purge removes sent
//! ones long before a month.

use std::time::Instant;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

use crate::orders::CUSTOMERS;

const BATCH: u64 = 100_000;

pub async fn seed(database_url: &str, orders: u64) -> anyhow::Result<f64> {
    let mut options = ConnectOptions::new(database_url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    let started = Instant::now();
    let mut done = 0;
    while done < orders {
        let count = (orders - done).min(BATCH);
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            r#"
WITH series AS (
    SELECT g, now() - interval '30 days' + g * interval '1 millisecond' AS at,
           md5(g::text || random()::text) AS r
    FROM generate_series($1::bigint, $2::bigint) AS g
), seeded AS (
    INSERT INTO orders (id, customer_id, items, total_amount, status, error_message, created_at, updated_at)
    -- UUIDv7: 48 bits of Unix milliseconds, version 7, 12 random bits, variant 10, 62 random bits.
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '7' || substr(r, 1, 3) || '8' || substr(r, 4, 15))::uuid,
           'customer-' || (1 + g % $3),
           '[{"product_id":"seed-product","quantity":2,"price":"10.50"}]'::jsonb,
           21.00,
           'completed',
           NULL,
           at,
           at
    FROM series
    RETURNING id, created_at
)
INSERT INTO order_status_history (order_id, status, reason, at)
SELECT id, 'pending', NULL, created_at FROM seeded
UNION ALL
SELECT id, 'completed', NULL, created_at FROM seeded
"#,
            [
                (done as i64).into(),
                ((done + count - 1) as i64).into(),
                (CUSTOMERS as i64).into(),
            ],
        ))
        .await?;
        done += count;
        eprintln!("seeded {done}/{orders}");
    }
    db.execute_unprepared("ANALYZE orders; ANALYZE order_status_history;")
        .await?;
    db.close().await?;
    Ok(orders as f64 / started.elapsed().as_secs_f64())
}

/// `VACUUM ANALYZE` of a whole database (what autovacuum would have done meanwhile).
pub async fn vacuum(database_url: &str) -> anyhow::Result<()> {
    execute(database_url, "VACUUM ANALYZE").await
}

/// Lets the disk settle before a run: a `CHECKPOINT` writes PostgreSQL's dirty pages, then
/// `sync(1)` writes whatever else the kernel still holds (RabbitMQ's files, the WAL segments).
/// Without it a run pays for the write-back of the runs before it: the kernel writes dirty data
/// about 30 s after it was written, i.e. in the middle of the next run (BENCHMARKS.md).
pub async fn settle(database_url: &str) -> anyhow::Result<()> {
    execute(database_url, "CHECKPOINT").await?;
    let status = tokio::process::Command::new("sync").status().await?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

async fn execute(database_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut options = ConnectOptions::new(database_url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    db.execute_unprepared(sql).await?;
    db.close().await?;
    Ok(())
}
