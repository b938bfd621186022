use sea_orm_migration::prelude::*;

/// The figures of `GET /stats`, kept by the statements that change orders: per minute of an
/// order's creation and customer, the orders placed, the change of each final status's count,
/// the revenue of completed orders, and the create→decision latencies in buckets. Writers only
/// append deltas (no row is updated by two writers, so none waits for another); a compaction
/// moves them into the rollup tables. Readers add both.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE order_figures (
    minute      TIMESTAMPTZ    NOT NULL,
    customer_id VARCHAR(64)    NOT NULL,
    placed      BIGINT         NOT NULL DEFAULT 0,
    completed   BIGINT         NOT NULL DEFAULT 0,
    rejected    BIGINT         NOT NULL DEFAULT 0,
    failed      BIGINT         NOT NULL DEFAULT 0,
    cancelled   BIGINT         NOT NULL DEFAULT 0,
    revenue     NUMERIC(30, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, customer_id)
);
CREATE INDEX order_figures_customer_idx ON order_figures (customer_id, minute);
CREATE TABLE order_figures_delta (LIKE order_figures INCLUDING DEFAULTS);
CREATE TABLE order_latencies (
    minute      TIMESTAMPTZ NOT NULL,
    customer_id VARCHAR(64) NOT NULL,
    bucket      SMALLINT    NOT NULL,
    orders      BIGINT      NOT NULL,
    PRIMARY KEY (minute, customer_id, bucket)
);
CREATE INDEX order_latencies_customer_idx ON order_latencies (customer_id, minute);
CREATE TABLE order_latencies_delta (LIKE order_latencies);
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP TABLE order_latencies_delta, order_latencies, order_figures_delta, order_figures;",
            )
            .await?;
        Ok(())
    }
}
