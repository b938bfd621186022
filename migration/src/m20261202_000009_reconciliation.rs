use sea_orm_migration::prelude::*;

/// Reconciliation: the order service publishes `order.created` again for an order still `pending`
/// long after it was placed.
///
/// - `reconciliation` holds the orders a sweep found pending past the threshold, each with its
///   count of re-publications and when it is due again (backoff per order); a row goes once its
///   order is final.
/// - `reconcile_state` remembers up to which `created_at` the sweeps have looked, so that each
///   sweep reads only the orders placed since the last one (a range of `orders_created_idx`), not
///   the whole history, and `orders` needs no index on `status` (its verdicts stay heap-only
///   updates). It starts at `-infinity`: on an existing database the first sweep reads the
///   history once.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE reconciliation (
    order_id  UUID        PRIMARY KEY,
    attempts  INT         NOT NULL DEFAULT 0,
    next_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX reconciliation_next_at_idx ON reconciliation (next_at);
CREATE TABLE reconcile_state (
    id           INT         PRIMARY KEY CHECK (id = 1),
    swept_until  TIMESTAMPTZ NOT NULL
);
INSERT INTO reconcile_state (id, swept_until) VALUES (1, '-infinity');
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE reconcile_state; DROP TABLE reconciliation;")
            .await?;
        Ok(())
    }
}
