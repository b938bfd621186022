use sea_orm_migration::prelude::*;

/// The transactional outbox: an event is written here in the same transaction as the state change
/// it announces, and the relay publishes it with publisher confirms, then sets `sent_at`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    event_id       UUID         NOT NULL UNIQUE,
    event_type     VARCHAR(64)  NOT NULL,
    routing_key    VARCHAR(255) NOT NULL,
    correlation_id UUID,
    -- The envelope exactly as it goes on the wire: encoded once, at write time.
    body           BYTEA        NOT NULL,
    created_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    sent_at        TIMESTAMPTZ,
    -- Failed publishing attempts (nack, unroutable, broker gone) and the last error: visible to
    -- an operator while a row is stuck.
    attempts       INTEGER      NOT NULL DEFAULT 0,
    last_error     TEXT
);
-- The relay reads only unsent rows, oldest first: this index stays as small as the backlog.
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
-- Retention purge of sent rows.
CREATE INDEX outbox_sent_at_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wakes every relay listening on this database when a transaction that wrote events commits
-- (NOTIFY is delivered at commit, and duplicates within a transaction are folded into one).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE outbox; DROP FUNCTION outbox_notify();")
            .await?;
        Ok(())
    }
}
