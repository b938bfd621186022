use sea_orm_migration::prelude::*;

/// `Idempotency-Key`s expire: the keyed orders by age, for the sweep that releases the keys older
/// than `INTAKE__IDEMPOTENCY_KEY_HOURS`. Partial like the unique index: orders without a key have
/// no entry in it and cost it nothing; an order whose key was released leaves it.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX orders_keyed_created_idx ON orders (created_at) \
                 WHERE idempotency_key IS NOT NULL;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX orders_keyed_created_idx;")
            .await?;
        Ok(())
    }
}
