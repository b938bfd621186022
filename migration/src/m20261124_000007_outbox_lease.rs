use sea_orm_migration::prelude::*;

/// Publish on commit: the instance that writes an event publishes it itself right after its
/// commit, and leases the row meanwhile (`leased_until`), so that no relay (its own safety net or
/// another instance's) publishes it a second time while it is in flight. A row without a lease
/// (written by an instance that does not publish, or released after a failed publish) is any
/// relay's at once; a leased row becomes any relay's when its lease runs out (its writer stopped
/// before publishing it).
///
/// The `NOTIFY` that wakes other instances' relays fires only for rows without a lease: the others
/// could not take a leased row anyway, and each notification costs the committing statement and
/// every listener (BENCHMARKS.md, "Settings that matter").
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE outbox ADD COLUMN leased_until TIMESTAMPTZ;
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.leased_until IS NULL) EXECUTE FUNCTION outbox_notify();
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
DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
ALTER TABLE outbox DROP COLUMN leased_until;
"#,
            )
            .await?;
        Ok(())
    }
}
