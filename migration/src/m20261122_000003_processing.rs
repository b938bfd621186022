use sea_orm_migration::prelude::*;

/// The processor's idempotency record: one row per order, claimed by the first delivery of its
/// `order.created` event; `decision` is set exactly once.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE processing (
    order_id      UUID PRIMARY KEY,
    -- The event that first claimed the order. Indexed but not unique: under concurrency PostgreSQL
    -- raises a second unique index's violation instead of taking the ON CONFLICT (order_id) path.
    event_id      UUID        NOT NULL,
    decision      VARCHAR(16) CHECK (decision IN ('completed', 'rejected', 'failed')),
    reason        TEXT,
    attempts      INTEGER     NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    first_seen_at TIMESTAMPTZ NOT NULL,
    decided_at    TIMESTAMPTZ,
    CHECK ((decision IS NULL) = (decided_at IS NULL))
);
CREATE INDEX processing_event_idx ON processing (event_id);
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE processing;")
            .await?;
        Ok(())
    }
}
