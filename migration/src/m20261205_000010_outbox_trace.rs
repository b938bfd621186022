use sea_orm_migration::prelude::*;

/// The W3C trace context of the span that wrote an event (`traceparent`, and `tracestate` when
/// it has one), so that whoever publishes the row, whenever, continues the trace of the request
/// or delivery that caused it. Null for rows written outside any trace.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE outbox ADD COLUMN traceparent TEXT, ADD COLUMN tracestate TEXT;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE outbox DROP COLUMN traceparent, DROP COLUMN tracestate;",
            )
            .await?;
        Ok(())
    }
}
