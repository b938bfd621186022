//! The transactional outbox and its relay.
//!
//! A service writes an event with [`enqueue`] inside the transaction that changes its state, so
//! the two commit or roll back together. The [`Relay`] claims unsent rows in batches with one
//! statement (`FOR UPDATE SKIP LOCKED`, so several instances share the work) that also marks
//! them sent, publishes each batch with all its confirms in flight, puts back unsent any row the
//! broker did not confirm, and only then commits: the mark becomes visible, and permanent, only
//! for rows the broker confirmed. A crash anywhere before the commit rolls the marks back, and the
//! rows are published again: consumers are idempotent.
//!
//! The relay is woken at once by a commit: in process through [`Relay::waker`], from other
//! instances through PostgreSQL `NOTIFY outbox` (fired by a trigger on insert). A slow poll is the
//! safety net.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set, sqlx,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, OutgoingMessage, PublishError, Publisher};
use crate::configuration::OutboxSettings;
use crate::database;
use crate::events::{Envelope, Event};
use crate::shutdown::{reconnect_backoff, sleep_unless_cancelled};

/// The PostgreSQL channel the insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "outbox";

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: Uuid,
        pub event_type: String,
        pub routing_key: String,
        pub correlation_id: Option<Uuid>,
        pub body: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("could not encode the event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// An event ready for the `outbox` table: its body encoded once, here.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub routing_key: String,
    pub correlation_id: uuid::Uuid,
    pub body: Vec<u8>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl OutboxRow {
    pub fn new<P: Event>(event: &Envelope<P>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            routing_key: P::ROUTING_KEY.to_owned(),
            correlation_id: event.correlation_id,
            body: event.encode()?,
            created_at: event.occurred_at,
        })
    }
}

/// Writes `event` to the outbox on `db`, which should be the transaction of the state change.
pub async fn enqueue<C: ConnectionTrait, P: Event>(
    db: &C,
    event: &Envelope<P>,
) -> Result<(), OutboxError> {
    let row = OutboxRow::new(event)?;
    let row = entity::ActiveModel {
        event_id: Set(row.event_id),
        event_type: Set(row.event_type),
        routing_key: Set(row.routing_key),
        correlation_id: Set(Some(row.correlation_id)),
        body: Set(row.body),
        created_at: Set(row.created_at),
        sent_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        ..Default::default()
    };
    entity::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("cannot open a publishing channel: {0}")]
    Broker(#[from] lapin::Error),
    #[error("{failed} of {total} messages not confirmed, first: {first}")]
    Publish {
        failed: usize,
        total: usize,
        first: PublishError,
    },
}

/// Claims up to `$1` unsent rows, oldest first, skipping those another relay holds, and marks
/// them sent; the caller commits once the broker confirmed them. One SQL text, so PostgreSQL
/// parses and plans it once per connection.
const CLAIM: &str = r#"
UPDATE outbox SET sent_at = now()
WHERE id IN (
    SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, event_id, event_type, routing_key, correlation_id, body
"#;

/// Puts a claimed row back unsent, counting the failed attempt and keeping its error.
const UNCLAIM: &str =
    "UPDATE outbox SET sent_at = NULL, attempts = attempts + 1, last_error = $2 WHERE id = $1";

/// `(id, event_id, event_type, routing_key, correlation_id, body)` of a claimed row.
type ClaimedRow = (i64, uuid::Uuid, String, String, Option<uuid::Uuid>, Vec<u8>);

pub struct Relay {
    db: DatabaseConnection,
    broker: Arc<Broker>,
    settings: OutboxSettings,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(db: DatabaseConnection, broker: Arc<Broker>, settings: OutboxSettings) -> Self {
        Self {
            db,
            broker,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notify this after committing outbox rows, to have them published at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Relays until `shutdown` trips; the batch in flight then is finished, not abandoned.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener = tokio::spawn(listen_for_commits(
            self.db.clone(),
            self.wake.clone(),
            shutdown.clone(),
        ));
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut publisher: Option<Publisher> = None;
        let mut backoff = reconnect_backoff();
        let mut last_purge = tokio::time::Instant::now();
        loop {
            match self.relay_batch(&mut publisher).await {
                // A full batch: more may be waiting.
                Ok(count) if count == self.settings.batch_size as usize => {
                    backoff = reconnect_backoff();
                    if shutdown.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Ok(_) => backoff = reconnect_backoff(),
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; retrying");
                    if publisher.as_ref().is_some_and(|p| !p.is_open()) {
                        publisher = None;
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    if !sleep_unless_cancelled(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                self.purge_sent().await;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => break,
            }
        }
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
        listener.abort();
        tracing::info!("outbox relay stopped");
    }

    /// Publishes one batch of unsent rows; returns how many rows it took.
    ///
    /// One statement claims the batch and marks it sent ([`CLAIM`]); the transaction commits only
    /// after the broker confirmed the messages, and a row the broker did not confirm is put back
    /// unsent (with its error) first. Until the commit, other relays skip the claimed rows, and a
    /// crash rolls the marks back.
    async fn relay_batch(&self, publisher: &mut Option<Publisher>) -> Result<usize, RelayError> {
        let mut txn = self
            .db
            .get_postgres_connection_pool()
            .begin()
            .await
            .map_err(database::from_sqlx)?;
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM)
            .bind(i64::from(self.settings.batch_size))
            .fetch_all(&mut *txn)
            .await
            .map_err(database::from_sqlx)?;
        if rows.is_empty() {
            txn.commit().await.map_err(database::from_sqlx)?;
            return Ok(0);
        }
        let publisher = match publisher {
            Some(open) if open.is_open() => open,
            slot => slot.insert(Publisher::open(&self.broker).await?),
        };
        // In the order they were written (RETURNING has no order).
        rows.sort_unstable_by_key(|row| row.0);
        let total = rows.len();
        let (ids, messages): (Vec<i64>, Vec<OutgoingMessage>) = rows
            .into_iter()
            .map(
                |(id, event_id, event_type, routing_key, correlation_id, body)| {
                    let message = OutgoingMessage {
                        event_id,
                        event_type,
                        routing_key,
                        correlation_id,
                        body,
                    };
                    (id, message)
                },
            )
            .unzip();
        let results = publisher.publish_all(&messages).await;
        let mut failures = Vec::new();
        for ((id, message), result) in ids.into_iter().zip(&messages).zip(results) {
            if let Err(error) = result {
                tracing::warn!(event_id = %message.event_id, order_id = ?message.correlation_id, %error, "event not confirmed; it stays in the outbox");
                sqlx::query(UNCLAIM)
                    .bind(id)
                    .bind(error.to_string())
                    .execute(&mut *txn)
                    .await
                    .map_err(database::from_sqlx)?;
                failures.push(error);
            }
        }
        txn.commit().await.map_err(database::from_sqlx)?;
        tracing::debug!(published = total - failures.len(), "outbox batch relayed");
        let failed = failures.len();
        match failures.into_iter().next() {
            None => Ok(total),
            Some(first) => Err(RelayError::Publish {
                failed,
                total,
                first,
            }),
        }
    }

    async fn purge_sent(&self) {
        match purge_sent(&self.db, self.settings.retention_hours).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "purged sent outbox rows"),
            Err(error) => tracing::warn!(%error, "could not purge sent outbox rows"),
        }
    }
}

/// Deletes the rows sent more than `retention_hours` ago; unsent rows stay whatever their age.
/// Returns how many rows it deleted. The relay calls it every minute.
pub async fn purge_sent(db: &DatabaseConnection, retention_hours: u32) -> Result<u64, DbErr> {
    use entity::{Column, Entity};
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(i64::from(retention_hours));
    let result = Entity::delete_many()
        // Sent before the cutoff, so also written before it: `created_at` narrows the search
        // through its BRIN index.
        .filter(Column::CreatedAt.lt(cutoff))
        .filter(Column::SentAt.lt(cutoff))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Wakes the relay on every `NOTIFY outbox` (commits from any instance on this database).
async fn listen_for_commits(
    db: DatabaseConnection,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    while !shutdown.is_cancelled() {
        let pool = db.get_postgres_connection_pool();
        let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for outbox commits; polling meanwhile");
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                if !sleep_unless_cancelled(delay, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(%error, "cannot LISTEN for outbox commits; polling meanwhile");
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            if !sleep_unless_cancelled(delay, &shutdown).await {
                return;
            }
            continue;
        }
        backoff = reconnect_backoff();
        loop {
            tokio::select! {
                notification = listener.recv() => match notification {
                    Ok(_) => wake.notify_one(),
                    Err(error) => {
                        tracing::warn!(%error, "outbox LISTEN connection lost");
                        // The rows may have been committed while we were not listening.
                        wake.notify_one();
                        break;
                    }
                },
                () = shutdown.cancelled() => return,
            }
        }
    }
}
