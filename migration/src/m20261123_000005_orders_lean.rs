use sea_orm_migration::prelude::*;

/// Cheaper status changes and history rows (measured in BENCHMARKS.md, "Decisions, measured").
///
/// - No index contains `status` any more, and `orders` pages keep 30% free: a verdict changes only
///   columns no index reads (`status`, `error_message`, `updated_at`), so PostgreSQL can write it
///   as a heap-only (HOT) update on the same page, without a new entry in each of the indexes.
///   Listing by status walks `orders_created_idx` newest first and filters, which is quick for
///   the statuses most orders have; `customer_id` + `status` still uses the customer index.
/// - `order_status_history` is keyed by `(order_id, id)`: the one index its reads (an order's
///   history, in order) need, instead of a primary key on `id` plus that index.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
DROP INDEX orders_status_created_idx;
ALTER TABLE orders SET (fillfactor = 70);
ALTER TABLE order_status_history DROP CONSTRAINT order_status_history_pkey,
    ADD PRIMARY KEY (order_id, id);
DROP INDEX order_status_history_order_idx;
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id);
ALTER TABLE order_status_history DROP CONSTRAINT order_status_history_pkey,
    ADD PRIMARY KEY (id);
ALTER TABLE orders RESET (fillfactor);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
"#,
            )
            .await?;
        Ok(())
    }
}
