use sea_orm_migration::prelude::*;

/// Orders can be `cancelled` while pending. Each history row keeps the id of the transaction
/// that wrote it (`xid`), so that a reader can resume after the changes a database snapshot
/// showed it even when they commit out of id order; a statement writing history notifies
/// `order_status_history` (delivered on commit), which wakes every instance's tailer.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE orders DROP CONSTRAINT orders_status_check,
    ADD CONSTRAINT orders_status_check
        CHECK (status IN ('pending', 'completed', 'rejected', 'failed', 'cancelled'));
ALTER TABLE order_status_history ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX order_status_history_xid_idx ON order_status_history (xid);
CREATE FUNCTION order_status_history_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_status_history', '');
    RETURN NULL;
END $$;
CREATE TRIGGER order_status_history_notify AFTER INSERT ON order_status_history
    FOR EACH STATEMENT EXECUTE FUNCTION order_status_history_notify();
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
DROP TRIGGER order_status_history_notify ON order_status_history;
DROP FUNCTION order_status_history_notify();
DROP INDEX order_status_history_xid_idx;
ALTER TABLE order_status_history DROP COLUMN xid;
ALTER TABLE orders DROP CONSTRAINT orders_status_check,
    ADD CONSTRAINT orders_status_check
        CHECK (status IN ('pending', 'completed', 'rejected', 'failed'));
"#,
            )
            .await?;
        Ok(())
    }
}
