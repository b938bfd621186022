use sea_orm_migration::prelude::*;

/// The processor records an order's cancellation as its decision `cancelled`, also before any
/// delivery of its `order.created` (then with no attempts).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE processing DROP CONSTRAINT processing_decision_check,
    ADD CONSTRAINT processing_decision_check
        CHECK (decision IN ('completed', 'rejected', 'failed', 'cancelled')),
    DROP CONSTRAINT processing_attempts_check,
    ADD CONSTRAINT processing_attempts_check CHECK (attempts >= 0);
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
ALTER TABLE processing DROP CONSTRAINT processing_decision_check,
    ADD CONSTRAINT processing_decision_check
        CHECK (decision IN ('completed', 'rejected', 'failed')),
    DROP CONSTRAINT processing_attempts_check,
    ADD CONSTRAINT processing_attempts_check CHECK (attempts >= 1);
"#,
            )
            .await?;
        Ok(())
    }
}
