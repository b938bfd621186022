use sea_orm_migration::prelude::*;

/// Drops `processing_event_idx`: no query reads processing records by event id (they are keyed
/// by order), and each new record paid for it (BENCHMARKS.md, "Decisions, measured").
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX processing_event_idx;")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX processing_event_idx ON processing (event_id);")
            .await?;
        Ok(())
    }
}
