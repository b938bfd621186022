//! Live status: every committed change of an order's status, streamed to the clients that
//! follow it (Server-Sent Events), across every instance of the service.
//!
//! The carrier is the database all instances share. A statement writing history rows notifies
//! `order_status_history` (PostgreSQL delivers a NOTIFY only on commit, to every listening
//! session); on that wake-up, or every `poll_interval` should a notification be lost with its
//! connection, each instance's tailer reads the rows its last snapshot did not show, under a new
//! snapshot, and fans them out to its connections. Nothing new to run or to keep consistent: a
//! change is streamed if and only if it committed, whichever instance wrote it, and a client
//! resumes on any instance from its last event id, a snapshot ([`snapshot`]).
//!
//! Bounds: each instance holds at most `max_connections` streams (more are refused with 503),
//! keeps the last [`BATCHES`] batches for its connections, and queues at most [`QUEUED`] events
//! per connection; a connection that falls behind either is closed (its client reconnects with
//! its last event id and misses nothing).

pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgListener};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use messaging::meter::{Counter, Gauge, Meter};

use crate::configuration::LiveSettings;
use crate::domain::OrderStatus;
use snapshot::{Cursor, Snapshot};

/// The channel the history trigger notifies.
const CHANNEL: &str = "order_status_history";
/// Batches kept for connections that have not taken them yet.
const BATCHES: usize = 32;
/// Events queued for one connection at most.
const QUEUED: usize = 64;
/// Changes one catch-up sends at most; a client further behind gets them in pages, reconnecting
/// after each (the stream ends, its last event id says where it is).
const CATCH_UP: i64 = 1000;
/// The shortest time between two reads of the tailer: wake-ups in between share one read.
const MIN_GAP: Duration = Duration::from_millis(20);

/// One status change, as streamed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatusChange {
    /// The history entry's id: unique, but not in commit order.
    pub seq: i64,
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: OrderStatus,
    /// Why, for `rejected` and `failed`.
    pub reason: Option<String>,
    /// RFC 3339, UTC.
    pub at: DateTime<Utc>,
    #[serde(skip)]
    xid: u64,
}

/// Changes that committed after the tailer's previous snapshot and before `snapshot`.
struct Batch {
    snapshot: Snapshot,
    changes: Vec<StatusChange>,
}

/// Whose changes a stream carries.
#[derive(Clone, Debug)]
pub enum Follow {
    Order(Uuid),
    Customer(String),
    Everyone,
}

impl Follow {
    fn wants(&self, change: &StatusChange) -> bool {
        match self {
            Self::Order(id) => change.order_id == *id,
            Self::Customer(customer) => change.customer_id == *customer,
            Self::Everyone => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("too many live connections")]
    Full,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// What live status counts.
#[derive(Clone)]
struct LiveMetrics {
    open: Gauge,
    refused: Counter,
    dropped: Counter,
}

impl LiveMetrics {
    fn new(meter: &Meter) -> Self {
        Self {
            open: meter.gauge(
                "live_streams_open",
                "Live status streams open on this instance.",
                &[],
            ),
            refused: meter.counter(
                "live_streams_refused_total",
                "Live status streams refused because LIVE__MAX_CONNECTIONS were open.",
                &[],
            ),
            dropped: meter.counter(
                "live_streams_dropped_total",
                "Live status streams closed because their client fell behind.",
                &[],
            ),
        }
    }
}

/// A stream's place among the open ones: counted while it is held.
struct Place {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Place {
    fn new(permit: OwnedSemaphorePermit, open: &Gauge) -> Self {
        open.increment(1.0);
        Self {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// The fan-out of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    reads: PgPool,
    url: String,
    batches: broadcast::Sender<Arc<Batch>>,
    connections: Arc<Semaphore>,
    metrics: LiveMetrics,
    poll_interval: Duration,
    heartbeat: Duration,
    /// The tailer's first snapshot, taken before any stream opens: every change after it is
    /// in a batch.
    first: Snapshot,
    /// Tripped when the service stops: every stream ends.
    closing: CancellationToken,
}

impl Live {
    /// Reads on `reads`; listens on a connection of its own to `database_url`; counts in `meter`.
    pub async fn new(
        reads: PgPool,
        database_url: &str,
        settings: &LiveSettings,
        meter: &Meter,
    ) -> Result<Self, sqlx::Error> {
        let mut txn = begin_snapshot(&reads).await?;
        let first = current_snapshot(&mut txn).await?;
        txn.commit().await?;
        Ok(Self {
            reads,
            url: messaging::database::with_ssl_mode(database_url),
            batches: broadcast::channel(BATCHES).0,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            metrics: LiveMetrics::new(meter),
            poll_interval: settings.poll_interval,
            heartbeat: settings.heartbeat,
            first,
            closing: CancellationToken::new(),
        })
    }

    /// The tailer, until `shutdown`: then every stream ends.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut last = self.first.clone();
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let woken = async {
                match listener.as_mut() {
                    Some(listening) => listening.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                woken = woken => {
                    if let Err(error) = woken {
                        tracing::warn!(%error, "live status lost its notifications; reading every poll interval until it listens again");
                        listener = None;
                    }
                    tokio::time::sleep(MIN_GAP).await;
                }
                _ = tick.tick() => {}
            }
            match self.tail(&last).await {
                Ok(snapshot) => last = snapshot,
                Err(error) => {
                    tracing::warn!(%error, "live status could not read the changes; trying again")
                }
            }
        }
        self.closing.cancel();
    }

    async fn listen(&self) -> Option<PgListener> {
        let listening = async {
            let mut listener = PgListener::connect(&self.url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "live status cannot listen for changes; reading every poll interval");
                None
            }
        }
    }

    /// Reads what committed since `last` and hands it to the connections. Without connections
    /// it only takes a new snapshot, so that the first one to come does not wait for a backlog.
    async fn tail(&self, last: &Snapshot) -> Result<Snapshot, sqlx::Error> {
        let mut txn = begin_snapshot(&self.reads).await?;
        let snapshot = current_snapshot(&mut txn).await?;
        if self.batches.receiver_count() == 0 {
            txn.commit().await?;
            return Ok(snapshot);
        }
        let changes = changes_since(&mut txn, &Follow::Everyone, last, None).await?;
        txn.commit().await?;
        // No receiver: it left meanwhile; nothing is lost (the next one catches up by itself).
        let _ = self.batches.send(Arc::new(Batch {
            snapshot: snapshot.clone(),
            changes,
        }));
        Ok(snapshot)
    }

    /// A stream of `follow`'s changes, from `cursor` (`None`: from now on, but an order's stream
    /// starts with its whole history). Refused ([`LiveError::Full`]) past `max_connections`.
    pub async fn open(
        &self,
        follow: Follow,
        cursor: Option<Cursor>,
    ) -> Result<mpsc::Receiver<Bytes>, LiveError> {
        let permit = self.connections.clone().try_acquire_owned().map_err(|_| {
            self.metrics.refused.increment(1);
            LiveError::Full
        })?;
        // Subscribed first: a change committing during the catch-up is in a later batch.
        let batches = self.batches.subscribe();
        let mut txn = begin_snapshot(&self.reads).await?;
        let now = current_snapshot(&mut txn).await?;
        let cursor = match (cursor, &follow) {
            (Some(cursor), _) => cursor,
            (None, Follow::Order(_)) => Cursor::at(Snapshot::nothing()),
            (None, _) => Cursor::at(now.clone()),
        };
        let pending = changes_since(&mut txn, &follow, &cursor.seen, Some(CATCH_UP + 1)).await?;
        txn.commit().await?;
        let (sender, receiver) = mpsc::channel(QUEUED + CATCH_UP as usize + 2);
        let _ = sender.try_send(Bytes::from_static(b"retry: 2000\n: live\n\n"));
        let mut missing: Vec<&StatusChange> = pending
            .iter()
            .filter(|change| !cursor.has(change.seq, change.xid))
            .collect();
        let complete = missing.len() <= CATCH_UP as usize;
        missing.truncate(CATCH_UP as usize);
        // The channel holds the whole page: nothing is dropped here.
        let seen = send_batch(
            &sender,
            &self.metrics.dropped,
            &cursor.seen,
            &now,
            &missing,
            complete,
        );
        if let (true, Some(seen)) = (complete, seen) {
            tokio::spawn(forward(
                Connection {
                    follow,
                    sender,
                    _place: Place::new(permit, &self.metrics.open),
                    dropped: self.metrics.dropped.clone(),
                },
                seen,
                batches,
                self.heartbeat,
                self.closing.clone(),
            ));
        }
        // Else the stream ends after this page: the client comes back for the next one.
        Ok(receiver)
    }
}

/// One open stream: what it follows, where its events go, and its place among the open ones.
struct Connection {
    follow: Follow,
    sender: mpsc::Sender<Bytes>,
    _place: Place,
    dropped: Counter,
}

/// Sends the connection's changes of each batch until its client goes, falls behind or the
/// service stops; `seen` is what the client has.
async fn forward(
    connection: Connection,
    mut seen: Snapshot,
    mut batches: broadcast::Receiver<Arc<Batch>>,
    heartbeat: Duration,
    closing: CancellationToken,
) {
    let Connection {
        follow,
        sender,
        dropped,
        ..
    } = &connection;
    let mut heartbeat = tokio::time::interval(heartbeat);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            () = closing.cancelled() => return,
            () = sender.closed() => return,
            _ = heartbeat.tick() => {
                if !deliver(sender, dropped, Bytes::from_static(b": keep-alive\n\n")) {
                    return;
                }
            }
            batch = batches.recv() => {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        dropped.increment(1);
                        tracing::info!(missed, "live client too slow; its stream is closed");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let mut changes: Vec<&StatusChange> = batch
                    .changes
                    .iter()
                    .filter(|change| follow.wants(change) && !seen.shows(change.xid))
                    .collect();
                changes.sort_by_key(|change| change.seq);
                match send_batch(sender, dropped, &seen, &batch.snapshot, &changes, true) {
                    Some(next) => seen = next,
                    None => return,
                }
            }
        }
    }
}

/// Sends `changes` (in history id order, all shown by `batch`) to a client that has `seen`.
/// Each event's id is what the client has once it got that event: `seen` and `batch` up to
/// that change; the last one, when the batch is `complete`, `seen` and all of `batch`. Answers
/// what the client has after the last (`seen` ∪ `batch`), or `None` if the client went or fell
/// behind.
fn send_batch(
    sender: &mpsc::Sender<Bytes>,
    dropped: &Counter,
    seen: &Snapshot,
    batch: &Snapshot,
    changes: &[&StatusChange],
    complete: bool,
) -> Option<Snapshot> {
    let next = seen.union(batch);
    for (index, change) in changes.iter().enumerate() {
        let id = if complete && index + 1 == changes.len() {
            Cursor::at(next.clone())
        } else {
            Cursor {
                seen: seen.clone(),
                partial: Some((batch.clone(), change.seq)),
            }
        };
        if !deliver(sender, dropped, event(&id, change)) {
            return None;
        }
    }
    Some(next)
}

/// Queues `bytes` for the client; `false` if it went, or fell behind (its queue is full: the
/// stream is closed, counted in `dropped`).
fn deliver(sender: &mpsc::Sender<Bytes>, dropped: &Counter, bytes: Bytes) -> bool {
    match sender.try_send(bytes) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.increment(1);
            tracing::info!("live client too slow; its stream is closed");
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// One SSE event: `id`, `event: status`, and the change as JSON.
fn event(id: &Cursor, change: &StatusChange) -> Bytes {
    let data = serde_json::to_string(change).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("id: {id}\nevent: status\ndata: {data}\n\n"))
}

/// A read-only transaction whose statements share one snapshot.
pub(crate) async fn begin_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut txn = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *txn)
        .await?;
    Ok(txn)
}

async fn current_snapshot(
    txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
) -> Result<Snapshot, sqlx::Error> {
    let text: String = sqlx::query_scalar("SELECT pg_current_snapshot()::text")
        .fetch_one(&mut **txn)
        .await?;
    Snapshot::parse(&text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "pg_current_snapshot".into(),
        source: format!("not a snapshot: {text:?}").into(),
    })
}

/// `follow`'s changes that `seen` does not show, in history id order (at most `limit`).
async fn changes_since(
    txn: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    follow: &Follow,
    seen: &Snapshot,
    limit: Option<i64>,
) -> Result<Vec<StatusChange>, sqlx::Error> {
    let xmin = seen.xmin().to_string();
    let seen = seen.to_string();
    let limit = limit.unwrap_or(i64::MAX);
    let query = match follow {
        // By the order's own index: its whole history is a few rows.
        Follow::Order(id) => sqlx::query(concat!(
            "SELECT h.id, h.order_id, o.customer_id, h.status, h.reason, h.at, h.xid::text AS xid ",
            "FROM order_status_history h JOIN orders o ON o.id = h.order_id ",
            "WHERE h.order_id = $1 AND NOT pg_visible_in_snapshot(h.xid, $2::text::pg_snapshot) ",
            "ORDER BY h.id LIMIT $3"
        ))
        .bind(*id)
        .bind(seen)
        .bind(limit),
        Follow::Customer(customer) => sqlx::query(concat!(
            "SELECT h.id, h.order_id, o.customer_id, h.status, h.reason, h.at, h.xid::text AS xid ",
            "FROM order_status_history h JOIN orders o ON o.id = h.order_id ",
            "WHERE h.xid >= $1::text::xid8 AND NOT pg_visible_in_snapshot(h.xid, $2::text::pg_snapshot) ",
            "AND o.customer_id = $3 ORDER BY h.id LIMIT $4"
        ))
        .bind(xmin)
        .bind(seen)
        .bind(customer.as_str())
        .bind(limit),
        Follow::Everyone => sqlx::query(concat!(
            "SELECT h.id, h.order_id, o.customer_id, h.status, h.reason, h.at, h.xid::text AS xid ",
            "FROM order_status_history h JOIN orders o ON o.id = h.order_id ",
            "WHERE h.xid >= $1::text::xid8 AND NOT pg_visible_in_snapshot(h.xid, $2::text::pg_snapshot) ",
            "ORDER BY h.id LIMIT $3"
        ))
        .bind(xmin)
        .bind(seen)
        .bind(limit),
    };
    let rows = query.fetch_all(&mut **txn).await?;
    rows.iter().map(change_of).collect()
}

fn change_of(row: &sqlx::postgres::PgRow) -> Result<StatusChange, sqlx::Error> {
    let decode = |index: &str, message: String| sqlx::Error::ColumnDecode {
        index: index.into(),
        source: message.into(),
    };
    let status: String = row.try_get("status")?;
    let xid: String = row.try_get("xid")?;
    Ok(StatusChange {
        seq: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode("status", format!("no such status: {status:?}")))?,
        reason: row.try_get("reason")?,
        at: row.try_get("at")?,
        xid: xid
            .parse()
            .map_err(|_| decode("xid", format!("not a transaction id: {xid:?}")))?,
    })
}
