use sea_orm_migration::prelude::*;

/// `Idempotency-Key` on `POST /orders`: the key a client sent with an order, unique per customer,
/// so that a retried request finds the order it placed instead of placing another.
///
/// The index is partial: orders placed without a key (NULL) have no entry in it, cost it nothing
/// and never conflict. Adding a nullable column without a default is a change to the catalogue
/// only; building the index reads the table once (all NULL on an existing database, so the index
/// itself is empty).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE orders ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX orders_idempotency_key_idx ON orders (customer_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
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
DROP INDEX orders_idempotency_key_idx;
ALTER TABLE orders DROP COLUMN idempotency_key;
"#,
            )
            .await?;
        Ok(())
    }
}
