use sea_orm_migration::prelude::*;

/// Orders and their status history.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE orders (
    id            UUID PRIMARY KEY,
    customer_id   VARCHAR(64)    NOT NULL,
    items         JSONB          NOT NULL,
    total_amount  NUMERIC(20, 2) NOT NULL CHECK (total_amount >= 0),
    status        VARCHAR(16)    NOT NULL
                  CHECK (status IN ('pending', 'completed', 'rejected', 'failed')),
    error_message TEXT,
    created_at    TIMESTAMPTZ    NOT NULL,
    updated_at    TIMESTAMPTZ    NOT NULL
);
-- Keyset pagination, newest first: (created_at, id) DESC, optionally filtered.
CREATE INDEX orders_created_idx          ON orders (created_at DESC, id DESC);
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx   ON orders (status, created_at DESC, id DESC);

CREATE TABLE order_status_history (
    id       BIGSERIAL PRIMARY KEY,
    order_id UUID        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    status   VARCHAR(16) NOT NULL,
    reason   TEXT,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id);
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE order_status_history; DROP TABLE orders;")
            .await?;
        Ok(())
    }
}
