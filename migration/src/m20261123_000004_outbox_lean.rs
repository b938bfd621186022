use sea_orm_migration::prelude::*;

/// Fewer indexes on the outbox. Every event pays for each of its indexes twice: once when it is
/// written, once when the relay marks it sent (that update changes `sent_at`, which the partial
/// index on unsent rows depends on, so it cannot be a heap-only update and writes a new entry in
/// every index). Measured in BENCHMARKS.md ("lean indexes").
///
/// - `event_id` loses its unique index: event ids are UUIDs the writer generates (never read from
///   input), and nothing looks a row up by them; consumers deduplicate by their own keys.
/// - The retention purge finds old rows through a BRIN index on `created_at` (rows are appended in
///   time order, so a few pages of summary cover the table) instead of a B-tree on `sent_at`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
DROP INDEX outbox_sent_at_idx;
CREATE INDEX outbox_created_at_brin ON outbox USING brin (created_at);
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
DROP INDEX outbox_created_at_brin;
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id);
"#,
            )
            .await?;
        Ok(())
    }
}
