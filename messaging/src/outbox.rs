//! The transactional outbox and its relay.
//!
//! A service writes an event with [`enqueue`] (or its own group statement) inside the transaction
//! that changes its state, so the two commit or roll back together. Then:
//!
//! - **Publish on commit** (the fast path): the writer leases the row to itself (`leased_until`)
//!   and, once committed, hands the event to its [`Handoff`]; the relay publishes it from memory
//!   with the confirms of everything handed over meanwhile in flight together, and marks the
//!   confirmed rows sent in one statement for many (a little later: the mark is off the path of
//!   the event). A crash before the mark only means the row is published again (consumers are
//!   idempotent); a row whose publish failed is released at once.
//! - **The relay's claim** (the safety net, and the only path of an instance that does not
//!   publish on commit): unsent rows that nobody leases are claimed in batches with one statement
//!   (`FOR UPDATE SKIP LOCKED`, so several instances share the work) that also marks them sent;
//!   the batch is published with all its confirms in flight, any row the broker did not confirm
//!   is put back unsent, and only then the transaction commits: the mark becomes visible, and
//!   permanent, only for rows the broker confirmed. A crash before the commit rolls the marks
//!   back, and the rows are published again.
//!
//! The claim runs when the writer released rows, when another instance commits rows without a
//! lease (PostgreSQL `NOTIFY outbox`, fired by a trigger on insert), and on a slow poll (which
//! also finds rows whose lease ran out: their writer stopped before publishing them).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set, sqlx,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::column;
use crate::broker::{Broker, OutgoingMessage, PublishError, Publisher};
use crate::database;
use crate::events::{Envelope, Event};
use crate::meter::OutboxMetrics;
use crate::settings::OutboxSettings;
use crate::shutdown::{reconnect_backoff, sleep_unless_cancelled};
use crate::trace::TraceContext;

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
        pub leased_until: Option<DateTimeUtc>,
        pub traceparent: Option<String>,
        pub tracestate: Option<String>,
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
    /// The context of the span the row is written in (`None` outside any trace).
    pub trace: Option<TraceContext>,
}

impl OutboxRow {
    /// The row of `event`, in the trace of the current span.
    pub fn new<P: Event>(event: &Envelope<P>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            routing_key: P::ROUTING_KEY.to_owned(),
            correlation_id: event.correlation_id,
            body: event.encode()?,
            created_at: event.occurred_at,
            trace: TraceContext::current(),
        })
    }

    /// `traceparent`, for the column of that name.
    pub fn traceparent(&self) -> Option<&str> {
        self.trace.as_ref().map(|trace| trace.traceparent.as_str())
    }

    /// `tracestate`, for the column of that name (null when empty).
    pub fn tracestate(&self) -> Option<&str> {
        self.trace
            .as_ref()
            .map(|trace| trace.tracestate.as_str())
            .filter(|state| !state.is_empty())
    }

    /// The message this row goes out as.
    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            routing_key: self.routing_key.clone(),
            correlation_id: Some(self.correlation_id),
            body: self.body.clone(),
            trace: self.trace.clone(),
        }
    }
}

/// Writes `event` to the outbox on `db`, which should be the transaction of the state change.
pub async fn enqueue<C: ConnectionTrait, P: Event>(
    db: &C,
    event: &Envelope<P>,
) -> Result<(), OutboxError> {
    let row = OutboxRow::new(event)?;
    let (traceparent, tracestate) = (
        row.traceparent().map(str::to_owned),
        row.tracestate().map(str::to_owned),
    );
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
        // No lease: the relay takes it (woken by the caller's `Handoff::wake` or the NOTIFY).
        leased_until: Set(None),
        traceparent: Set(traceparent),
        tracestate: Set(tracestate),
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

/// Claims up to `$1` unsent rows that nobody leases, oldest first, skipping those another relay
/// holds, and marks them sent; the caller commits once the broker confirmed them. One SQL text,
/// so PostgreSQL parses and plans it once per connection.
const CLAIM: &str = r#"
UPDATE outbox SET sent_at = now()
WHERE id IN (
    SELECT id FROM outbox
    WHERE sent_at IS NULL AND (leased_until IS NULL OR leased_until < now())
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, event_id, event_type, routing_key, correlation_id, body, traceparent, tracestate
"#;

/// Puts claimed rows (`$1`) back unsent, counting the failed attempt and keeping each one's
/// error (`$2`): one statement for all the failures of a batch.
const UNCLAIM: &str = r#"
UPDATE outbox o SET sent_at = NULL, attempts = o.attempts + 1, last_error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f (id, error)
WHERE o.id = f.id
"#;

/// Marks rows published on commit as sent (unless a relay's claim got there first).
const MARK_SENT: &str = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL";

/// Ends the lease of rows published on commit that the broker did not confirm (`$1`), counting
/// the failed attempt and keeping each one's error (`$2`): the relay's claim takes them from here.
const RELEASE_FAILED: &str = r#"
UPDATE outbox o SET leased_until = NULL, attempts = o.attempts + 1, last_error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f (id, error)
WHERE o.id = f.id AND o.sent_at IS NULL
"#;

/// Ends the lease of rows that were never handed to a publisher.
const RELEASE: &str =
    "UPDATE outbox SET leased_until = NULL WHERE id = ANY($1) AND sent_at IS NULL";

/// Rows marked sent by one statement at most.
const MARK_CHUNK: usize = 5000;
/// How long confirmed rows wait to be marked sent together: one statement for many at any rate.
/// Only a crash within this window publishes them again.
const MARK_EVERY: Duration = Duration::from_millis(50);
/// Handed-over batches (one per committing statement) waiting for the publisher at most; when
/// it is that far behind, further rows are released to the relay's claim instead.
const HANDOFF_BATCHES: usize = 64;

/// An event its writer committed, with the id of its outbox row.
#[derive(Clone, Debug)]
pub struct Committed {
    pub id: i64,
    pub message: OutgoingMessage,
}

/// What a writer of outbox rows holds: whether (and for how long) to lease the rows it writes,
/// and where to hand them once committed. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    db: DatabaseConnection,
    wake: Arc<Notify>,
    /// `None` when this instance does not publish on commit.
    direct: Option<(mpsc::Sender<Vec<Committed>>, f64)>,
}

impl Handoff {
    /// The lease, in seconds, to write on new rows (`leased_until = now() + lease`): `None` when
    /// this instance does not publish on commit, and rows go to the relay's claim.
    pub fn lease_seconds(&self) -> Option<f64> {
        self.direct.as_ref().map(|(_, lease)| *lease)
    }

    /// After the commit of rows written with [`Handoff::lease_seconds`]: publishes them now. If
    /// the publisher is too far behind (or stopped), their lease ends instead and the relay's
    /// claim takes them.
    pub async fn committed(&self, rows: Vec<Committed>) {
        if rows.is_empty() {
            return;
        }
        let Some((sender, _)) = &self.direct else {
            self.wake();
            return;
        };
        let rows = match sender.try_send(rows) {
            Ok(()) => return,
            Err(
                mpsc::error::TrySendError::Full(rows) | mpsc::error::TrySendError::Closed(rows),
            ) => rows,
        };
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        tracing::debug!(rows = ids.len(), "publisher busy; events left to the relay");
        if let Err(error) = sqlx::query(RELEASE)
            .bind(&ids)
            .execute(self.db.get_postgres_connection_pool())
            .await
        {
            // They stay leased: the relay takes them when the lease runs out.
            tracing::warn!(%error, rows = ids.len(), "could not release outbox rows; they go out when their lease ends");
        }
        self.wake();
    }

    /// After the commit of rows written without a lease: the relay claims them now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// A row [`CLAIM`] took.
struct ClaimedRow {
    id: i64,
    message: OutgoingMessage,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ClaimedRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            message: OutgoingMessage {
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                routing_key: row.try_get("routing_key")?,
                correlation_id: row.try_get("correlation_id")?,
                body: row.try_get("body")?,
                // A stored context that does not parse is dropped, not a failed claim.
                trace: TraceContext::parse(row.try_get("traceparent")?, row.try_get("tracestate")?),
            },
        })
    }
}

pub struct Relay {
    db: DatabaseConnection,
    broker: Arc<Broker>,
    settings: OutboxSettings,
    wake: Arc<Notify>,
    handoff: Handoff,
    committed: Option<mpsc::Receiver<Vec<Committed>>>,
    metrics: OutboxMetrics,
}

impl Relay {
    pub fn new(db: DatabaseConnection, broker: Arc<Broker>, settings: OutboxSettings) -> Self {
        let wake = Arc::new(Notify::new());
        let (direct, committed) = if settings.relay_enabled && settings.publish_on_commit {
            let (sender, receiver) = mpsc::channel(HANDOFF_BATCHES);
            let lease = settings.lease.as_secs_f64();
            (Some((sender, lease)), Some(receiver))
        } else {
            (None, None)
        };
        let handoff = Handoff {
            db: db.clone(),
            wake: wake.clone(),
            direct,
        };
        Self {
            db,
            broker,
            settings,
            wake,
            handoff,
            committed,
            metrics: OutboxMetrics::disabled(),
        }
    }

    /// Counts what the relay publishes with `metrics`.
    pub fn with_metrics(mut self, metrics: OutboxMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// For the writers of outbox rows: how to lease them and where to hand them once committed.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    /// Relays until `shutdown` trips; the batch in flight then is finished, not abandoned, and so
    /// are the events handed over before it tripped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let listener = tokio::spawn(listen_for_commits(
            self.db.clone(),
            self.wake.clone(),
            shutdown.clone(),
        ));
        // The handoff this relay holds must not keep its own publisher waiting at shutdown.
        self.handoff.direct = None;
        let on_commit = self.committed.take().map(|committed| {
            let (marks, marked) = mpsc::unbounded_channel();
            let marker = tokio::spawn(mark_sent(self.db.clone(), marked));
            let publisher = tokio::spawn(publish_committed(
                committed,
                Outlet {
                    broker: self.broker.clone(),
                    db: self.db.clone(),
                    wake: self.wake.clone(),
                    confirm_timeout: self.settings.confirm_timeout,
                    metrics: self.metrics.clone(),
                },
                marks,
                shutdown.clone(),
            ));
            (publisher, marker)
        });
        let poll = self.settings.poll_interval;
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
        if let Some((publisher, marker)) = on_commit {
            finish("publisher of committed events", publisher).await;
            finish("marker of sent events", marker).await;
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
        // The channel first, outside the transaction: opening it waits for the broker.
        let publisher =
            open_publisher(publisher, &self.broker, self.settings.confirm_timeout).await?;
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
        // In the order they were written (RETURNING has no order).
        rows.sort_unstable_by_key(|row| row.id);
        let total = rows.len();
        let (ids, messages): (Vec<i64>, Vec<OutgoingMessage>) =
            rows.into_iter().map(|row| (row.id, row.message)).unzip();
        let results = publisher.publish_all(&messages).await;
        self.metrics.batch_size.record(total as f64);
        let mut failures = Vec::new();
        let mut failed_ids = Vec::new();
        for ((id, message), result) in ids.into_iter().zip(&messages).zip(results) {
            if let Err(error) = result {
                log_unconfirmed(message, &error);
                failed_ids.push(id);
                failures.push(error);
            }
        }
        if !failed_ids.is_empty() {
            sqlx::query(UNCLAIM)
                .bind(&failed_ids)
                .bind(column(&failures, |error| error.to_string()))
                .execute(&mut *txn)
                .await
                .map_err(database::from_sqlx)?;
        }
        txn.commit().await.map_err(database::from_sqlx)?;
        tracing::debug!(published = total - failures.len(), "outbox batch relayed");
        let failed = failures.len();
        self.metrics.published.increment((total - failed) as u64);
        self.metrics.publish_failures.increment(failed as u64);
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
        match purge_sent(&self.db, self.settings.retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "purged sent outbox rows"),
            Err(error) => tracing::warn!(%error, "could not purge sent outbox rows"),
        }
    }
}

/// The open publisher in `slot`, opening one first if there is none or it broke; opening waits
/// for the broker `confirm_timeout` at most.
async fn open_publisher<'a>(
    slot: &'a mut Option<Publisher>,
    broker: &Broker,
    confirm_timeout: Duration,
) -> Result<&'a Publisher, lapin::Error> {
    let publisher = match slot.take() {
        Some(open) if open.is_open() => open,
        stale => {
            if let Some(stale) = stale {
                // Closing waits for the broker, which may be the one not answering.
                tokio::spawn(stale.close());
            }
            tokio::time::timeout(confirm_timeout, Publisher::open(broker, confirm_timeout))
                .await
                .map_err(|_| {
                    lapin::Error::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the broker did not open a channel in time",
                    ))
                })??
        }
    };
    Ok(slot.insert(publisher))
}

fn log_unconfirmed(message: &OutgoingMessage, error: &PublishError) {
    tracing::warn!(event_id = %message.event_id, order_id = ?message.correlation_id, %error, "event not confirmed; it stays in the outbox");
}

async fn finish(name: &str, task: JoinHandle<()>) {
    if let Err(error) = task.await {
        tracing::error!(%error, "the outbox {name} failed");
    }
}

/// What the publisher of committed events publishes with, and where it releases what failed.
struct Outlet {
    broker: Arc<Broker>,
    db: DatabaseConnection,
    /// Wakes the relay's claim for released rows.
    wake: Arc<Notify>,
    confirm_timeout: Duration,
    metrics: OutboxMetrics,
}

/// Publishes the events handed over after their commit, all that wait together with their
/// confirms in flight, and hands the confirmed ids to the marker. A row the broker did not
/// confirm is released (with its error) to the relay's claim, which retries with backoff. At
/// shutdown it stops taking new events and publishes those already handed over.
async fn publish_committed(
    mut committed: mpsc::Receiver<Vec<Committed>>,
    outlet: Outlet,
    marks: mpsc::UnboundedSender<Vec<i64>>,
    shutdown: CancellationToken,
) {
    let Outlet {
        broker,
        db,
        wake,
        confirm_timeout,
        metrics,
    } = outlet;
    let mut publisher: Option<Publisher> = None;
    let mut batches = Vec::with_capacity(HANDOFF_BATCHES);
    loop {
        let received = tokio::select! {
            biased;
            received = committed.recv_many(&mut batches, HANDOFF_BATCHES) => received,
            () = shutdown.cancelled() => {
                // Later handoffs fail and release their rows; these go out first.
                committed.close();
                committed.recv_many(&mut batches, HANDOFF_BATCHES).await
            }
        };
        if received == 0 {
            break;
        }
        let (ids, messages): (Vec<i64>, Vec<OutgoingMessage>) = batches
            .drain(..)
            .flatten()
            .map(|row| (row.id, row.message))
            .unzip();
        let results: Vec<Result<(), PublishError>> = match open_publisher(
            &mut publisher,
            &broker,
            confirm_timeout,
        )
        .await
        {
            Ok(open) => open.publish_all(&messages).await,
            Err(error) => {
                tracing::warn!(%error, rows = ids.len(), "cannot publish; events left to the relay");
                messages
                    .iter()
                    .map(|_| Err(PublishError::from(error.clone())))
                    .collect()
            }
        };
        metrics.batch_size.record(ids.len() as f64);
        let mut confirmed = Vec::with_capacity(ids.len());
        let (mut failed_ids, mut errors) = (Vec::new(), Vec::new());
        for ((id, message), result) in ids.into_iter().zip(&messages).zip(results) {
            match result {
                Ok(()) => confirmed.push(id),
                Err(error) => {
                    log_unconfirmed(message, &error);
                    failed_ids.push(id);
                    errors.push(error.to_string());
                }
            }
        }
        metrics.published.increment(confirmed.len() as u64);
        metrics.publish_failures.increment(failed_ids.len() as u64);
        if !failed_ids.is_empty() {
            if let Err(error) = sqlx::query(RELEASE_FAILED)
                .bind(&failed_ids)
                .bind(&errors)
                .execute(db.get_postgres_connection_pool())
                .await
            {
                tracing::warn!(%error, rows = failed_ids.len(), "could not release outbox rows; they go out when their lease ends");
            }
            wake.notify_one();
        }
        if !confirmed.is_empty() {
            // The marker outlives this task: it stops when this sender is dropped.
            let _ = marks.send(confirmed);
        }
    }
    if let Some(publisher) = publisher {
        publisher.close().await;
    }
}

/// Marks published rows sent, many per statement: what was confirmed over [`MARK_EVERY`] goes
/// together. A failed mark is retried; once every sender is gone it marks what is left and stops.
async fn mark_sent(db: DatabaseConnection, mut marked: mpsc::UnboundedReceiver<Vec<i64>>) {
    let mut pending: Vec<i64> = Vec::new();
    let mut backoff = reconnect_backoff();
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match marked.recv().await {
                Some(ids) => pending.extend(ids),
                None => break,
            }
        }
        if open {
            // Let the next confirms join this statement.
            tokio::time::sleep(MARK_EVERY).await;
            loop {
                match marked.try_recv() {
                    Ok(ids) => pending.extend(ids),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        let chunk = pending.len().min(MARK_CHUNK);
        match sqlx::query(MARK_SENT)
            .bind(&pending[..chunk])
            .execute(db.get_postgres_connection_pool())
            .await
        {
            Ok(_) => {
                pending.drain(..chunk);
                backoff = reconnect_backoff();
            }
            Err(error) => {
                tracing::warn!(%error, rows = pending.len(), "could not mark published events sent; retrying");
                if !open {
                    // Stopping: they stay unsent and go out again after their lease (duplicates
                    // that consumers ignore).
                    break;
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
            }
        }
    }
}

/// What waits in an outbox.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    /// Rows not yet confirmed by the broker.
    pub unsent: i64,
    /// Age of the oldest of them (zero when none waits).
    pub oldest_age: Duration,
}

/// Reads the outbox's [`Backlog`]: both through the partial index on unsent rows.
pub async fn backlog(db: &DatabaseConnection) -> Result<Backlog, DbErr> {
    let row: (i64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL), \
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - created_at)::float8 FROM outbox \
                          WHERE sent_at IS NULL ORDER BY id LIMIT 1), 0)",
    )
    .fetch_one(db.get_postgres_connection_pool())
    .await
    .map_err(database::from_sqlx)?;
    Ok(Backlog {
        unsent: row.0,
        oldest_age: Duration::try_from_secs_f64(row.1.max(0.0)).unwrap_or_default(),
    })
}

/// Deletes the rows sent more than `retention` ago; unsent rows stay whatever their age.
/// Returns how many rows it deleted. The relay calls it every minute.
pub async fn purge_sent(db: &DatabaseConnection, retention: Duration) -> Result<u64, DbErr> {
    use entity::{Column, Entity};
    let cutoff = chrono::TimeDelta::from_std(retention)
        .ok()
        .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
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
