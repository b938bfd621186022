//! The order service's database work. Every state change and the event announcing it are written
//! in one transaction.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use contracts::events::{Envelope, OrderCancelled, OrderCreated, OrderLine, OrderProcessed};
use messaging::batch::{GroupWrite, GroupWriter, Grouping, column, in_request_order};
use messaging::failure::{Classify, FailureClass};
use messaging::outbox::{Committed, Handoff, OutboxError, OutboxRow};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sqlx,
};
use uuid::Uuid;

use crate::domain::{IdempotencyKey, NewOrder, OrderStatus};
use crate::entities::{order, order_status_history as history};
use crate::metrics::OrderMetrics;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox error: {0}")]
    Outbox(#[from] OutboxError),
    #[error("stored order {0} is corrupt: {1}")]
    Corrupt(Uuid, String),
    /// Too many new orders already wait to be stored: refused, not queued.
    #[error("too many orders waiting to be stored")]
    Overloaded,
    /// The customer placed another order under this `Idempotency-Key`.
    #[error("Idempotency-Key already used for order {0}, with other items")]
    KeyReused(Uuid),
}

impl Classify for StoreError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Db(db) | Self::Outbox(OutboxError::Db(db)) => db.class(),
            // Shed load: the client retries later, like any other 503.
            Self::Overloaded => FailureClass::Unavailable,
            _ => FailureClass::Error,
        }
    }
}

/// The `order.created` event of an order. Its id is the order's (time-ordered, like every event
/// id), so that reconciliation can publish the same event again from the order alone.
pub fn order_created(order: OrderCreated) -> Envelope<OrderCreated> {
    Envelope::with_id(order.order_id, order.order_id, order.created_at, order)
}

/// A position in the newest-first listing: the last order of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// What [`Cursor::decode`] takes, empty included (the first page): the microseconds since
    /// 1970 of the last order's creation and its id, `1795700000000000-785c6cf7-...`.
    pub const PATTERN: &'static str =
        "^([0-9]{1,16}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$";

    pub fn encode(&self) -> String {
        format!(
            "{}-{}",
            self.created_at.timestamp_micros(),
            self.id.hyphenated()
        )
    }

    /// A cursor of [`Cursor::encode`]'s form, and nothing else.
    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('-')?;
        if micros.is_empty() || micros.len() > 16 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id = Uuid::try_parse(id).ok()?;
        if id.hyphenated().to_string() != text[micros.len() + 1..] {
            return None;
        }
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id,
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub customer_id: Option<String>,
    pub status: Option<OrderStatus>,
    pub limit: u64,
    pub after: Option<Cursor>,
}

/// What placing an order did.
#[derive(Clone, Debug, PartialEq)]
pub enum Placed {
    /// A new order, stored and announced.
    New(order::Model),
    /// The order the customer placed earlier with the same `Idempotency-Key` and items, as it is
    /// now: nothing new was stored or announced.
    Existing(order::Model),
}

/// What storing one new order row did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Created,
    /// The customer already has an order under its `Idempotency-Key`: nothing written.
    KeyTaken,
}

/// What applying an `order.processed` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Moved {
        from_final: bool,
    },
    /// Duplicate or late: the order already is where the event would take it, or further.
    Ignored,
    UnknownOrder,
}

/// What cancelling an order did.
#[derive(Clone, Debug, PartialEq)]
pub enum Cancelled {
    /// It was pending: it is cancelled now, and `order.cancelled` is in the outbox.
    Now(order::Model),
    /// It was cancelled before: nothing changed.
    Before(order::Model),
    /// It is decided (`completed`, `rejected` or `failed`): it cannot be cancelled.
    Decided(order::Model),
    /// No such order in the caller's scope.
    NotFound,
}

#[derive(Clone)]
pub struct OrderStore {
    db: DatabaseConnection,
    outbox: Handoff,
    metrics: OrderMetrics,
    /// The read-only pool of the API's reads ([`messaging::database::connect_reads`]).
    reads: DatabaseConnection,
    verdicts: GroupWriter<VerdictWriter>,
    new_orders: GroupWriter<NewOrderWriter>,
}

/// Orders committed together at most.
const MAX_GROUP: usize = 256;
/// New-order statements in flight at once. With two, an order that arrives while a commit is in
/// flight starts its own instead of waiting for that one to end: a lower POST p99 at moderate
/// rates, and measured no slower at the maximum on 2 cores (BENCHMARKS.md).
pub const NEW_ORDER_WRITERS: usize = 2;
/// Verdict statements in flight at once: one keeps groups large (their deliveries linger anyway).
const VERDICT_WRITERS: usize = 1;

/// A new order: its row (the first history row repeats its id and time) and its event.
pub struct NewOrderRow {
    id: Uuid,
    customer_id: String,
    idempotency_key: Option<String>,
    items: serde_json::Value,
    total_amount: rust_decimal::Decimal,
    created_at: DateTime<Utc>,
    event: OutboxRow,
}

/// Writes new orders in groups (a group commit): the orders, their first history rows and their
/// events, one statement for all the orders waiting together. An order whose customer already
/// has one under its `Idempotency-Key` is not written ([`Stored::KeyTaken`]).
pub struct NewOrderWriter {
    db: DatabaseConnection,
    outbox: Handoff,
    metrics: OrderMetrics,
}

impl GroupWrite for NewOrderWriter {
    type Request = NewOrderRow;
    type Response = Stored;
    type Key = Uuid;
    const NAME: &'static str = "insert orders";

    fn key(row: &NewOrderRow) -> Uuid {
        row.id
    }

    async fn write(&self, rows: &[NewOrderRow]) -> Result<Vec<Stored>, DbErr> {
        // One array per column: the same SQL text for any number of orders. Checking keys costs
        // PostgreSQL about a tenth more per order (BENCHMARKS.md), so only a group that has one
        // pays for it.
        let sql = if rows.iter().any(|row| row.idempotency_key.is_some()) {
            INSERT_KEYED_ORDERS
        } else {
            INSERT_ORDERS
        };
        let events = bind_new_orders(sql, rows, self.outbox.lease_seconds())
            .fetch_all(self.db.get_postgres_connection_pool())
            .await
            .map_err(messaging::database::from_sqlx)?;
        // Committed: publish the events now.
        let ids: std::collections::HashMap<Uuid, i64> = events
            .into_iter()
            .map(|row| (row.event_id, row.id))
            .collect();
        self.metrics.created(ids.len());
        let committed = rows
            .iter()
            .filter_map(|row| {
                ids.get(&row.event.event_id).map(|&id| Committed {
                    id,
                    message: row.event.message(),
                })
            })
            .collect();
        self.outbox.committed(committed).await;
        // An order without an event was not written: its key was taken.
        Ok(rows
            .iter()
            .map(|row| {
                if ids.contains_key(&row.event.event_id) {
                    Stored::Created
                } else {
                    Stored::KeyTaken
                }
            })
            .collect())
    }
}

/// `sql` (one of the statements writing new orders) bound to `rows`, their events leased for
/// `lease_seconds` (None: to the relay).
fn bind_new_orders<'q>(
    sql: &'static str,
    rows: &'q [NewOrderRow],
    lease_seconds: Option<f64>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, OutboxIdRow, sqlx::postgres::PgArguments> {
    sqlx::query_as(sql)
        .bind(column(rows, |r| r.id))
        .bind(column(rows, |r| r.customer_id.as_str()))
        .bind(column(rows, |r| &r.items))
        .bind(column(rows, |r| r.total_amount))
        .bind(column(rows, |r| r.created_at))
        .bind(column(rows, |r| r.idempotency_key.as_deref()))
        .bind(column(rows, |r| r.event.event_id))
        .bind(column(rows, |r| r.event.event_type.as_str()))
        .bind(column(rows, |r| r.event.routing_key.as_str()))
        .bind(column(rows, |r| r.event.correlation_id))
        .bind(column(rows, |r| r.event.body.as_slice()))
        .bind(column(rows, |r| r.event.created_at))
        .bind(lease_seconds)
        .bind(column(rows, |r| r.event.traceparent()))
        .bind(column(rows, |r| r.event.tracestate()))
}

impl OrderStore {
    /// Also starts the group writers of new orders and of verdicts (they stop when the last clone
    /// of the store is dropped).
    /// At most `max_waiting` new orders wait for their group commit; [`OrderStore::create`]
    /// refuses more ([`StoreError::Overloaded`]). A new order never lingers (its client waits);
    /// a verdict waits up to `verdict_linger` for others to share its statement.
    pub fn new(
        db: DatabaseConnection,
        reads: DatabaseConnection,
        outbox: Handoff,
        max_waiting: usize,
        verdict_linger: Duration,
        metrics: OrderMetrics,
    ) -> Self {
        let new_orders = GroupWriter::start(
            NewOrderWriter {
                db: db.clone(),
                outbox: outbox.clone(),
                metrics: metrics.clone(),
            },
            Grouping::new(MAX_GROUP, NEW_ORDER_WRITERS).queue(max_waiting),
        );
        let verdicts = GroupWriter::start(
            VerdictWriter {
                db: db.clone(),
                metrics: metrics.clone(),
            },
            Grouping::new(MAX_GROUP, VERDICT_WRITERS).linger(verdict_linger),
        );
        Self {
            db,
            outbox,
            metrics,
            reads,
            verdicts,
            new_orders,
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The read pool's connections, for the reads written in SQL (`crate::figures`).
    pub fn reads_pool(&self) -> &sqlx::PgPool {
        self.reads.get_postgres_connection_pool()
    }

    /// Stores the order, its first history row and its `order.created` event, atomically. Given
    /// an `idempotency_key` the customer already placed an order under, stores nothing and answers
    /// that order if it has the same items ([`Placed::Existing`]), or
    /// [`StoreError::KeyReused`].
    #[tracing::instrument(name = "store new order", skip_all, fields(order_id = tracing::field::Empty, event_id = tracing::field::Empty))]
    pub async fn create(
        &self,
        new_order: &NewOrder,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Placed, StoreError> {
        // Time-ordered (v7): inserts land at the right edge of the primary-key index instead of a
        // random page, which keeps them cheap when the table is large (BENCHMARKS.md).
        let id = Uuid::now_v7();
        // PostgreSQL keeps microseconds: what we answer is what a later read returns.
        let now = Utc::now().trunc_subsecs(6);
        let lines: Vec<OrderLine> = new_order
            .lines()
            .iter()
            .map(|line| OrderLine {
                product_id: line.product_id.as_str().to_owned(),
                quantity: line.quantity.get(),
                price: line.price.get(),
            })
            .collect();
        let total = new_order.total();
        let event = order_created(OrderCreated {
            order_id: id,
            customer_id: new_order.customer_id().as_str().to_owned(),
            items: lines.clone(),
            total_amount: total,
            created_at: now,
        });
        let span = tracing::Span::current();
        span.record("order_id", tracing::field::display(id));
        span.record("event_id", tracing::field::display(event.event_id));
        let items =
            serde_json::to_value(&lines).map_err(|e| StoreError::Corrupt(id, e.to_string()))?;
        let outbox = OutboxRow::new(&event).map_err(OutboxError::from)?;
        let model = order::Model {
            id,
            customer_id: new_order.customer_id().as_str().to_owned(),
            items,
            total_amount: total,
            status: OrderStatus::Pending,
            error_message: None,
            created_at: now,
            updated_at: now,
            idempotency_key: idempotency_key.map(|key| key.as_str().to_owned()),
        };
        // The order, its first history row and its event are written by one statement, together
        // with the other orders that arrived meanwhile (a group commit): one round trip and one
        // commit for them all, and no wait when there are none.
        // A full queue refuses at once: the client retries later instead of waiting behind it.
        // A key found taken and then not found was released meanwhile (it expired,
        // `crate::idempotency`): written again, the order takes it.
        let mut outbox = Some(outbox);
        for _ in 0..2 {
            let event_row = match outbox.take() {
                Some(row) => row,
                None => OutboxRow::new(&event).map_err(OutboxError::from)?,
            };
            let stored = self
                .new_orders
                .try_write(NewOrderRow {
                    id,
                    customer_id: model.customer_id.clone(),
                    idempotency_key: model.idempotency_key.clone(),
                    items: model.items.clone(),
                    total_amount: model.total_amount,
                    created_at: now,
                    event: event_row,
                })
                .map_err(|_| StoreError::Overloaded)?
                .await?;
            match (stored, idempotency_key) {
                (Stored::Created, _) => {
                    tracing::info!(order_id = %id, event_id = %event.event_id, "order stored, order.created queued in the outbox");
                    return Ok(Placed::New(model));
                }
                (Stored::KeyTaken, Some(key)) => {
                    if let Some(placed) = self.placed_before(new_order, key, &lines).await? {
                        return Ok(placed);
                    }
                }
                // Only a key conflicts: an order without one is always written.
                (Stored::KeyTaken, None) => break,
            }
        }
        Err(StoreError::Db(DbErr::Custom(format!(
            "order {id} was not written, and no order holds its Idempotency-Key"
        ))))
    }

    /// Cancels order `id` if it is pending (and, given a `customer`, theirs): its status, its
    /// history row and its `order.cancelled` are one transaction. The update matches only a
    /// pending order, so it cannot overtake a verdict applied meanwhile (the row lock orders
    /// them), and a verdict arriving after it is ignored ([`OrderStatus::allowed_predecessors`]).
    #[tracing::instrument(name = "cancel order", skip(self, customer))]
    pub async fn cancel(&self, id: Uuid, customer: Option<&str>) -> Result<Cancelled, StoreError> {
        use sea_orm::{ActiveEnum, ConnectionTrait, Statement, TransactionTrait};
        let now = Utc::now().trunc_subsecs(6);
        let txn = self.db.begin().await?;
        let mut update = order::Entity::update_many()
            .col_expr(
                order::Column::Status,
                Expr::value(OrderStatus::Cancelled.to_value()),
            )
            .col_expr(order::Column::UpdatedAt, Expr::value(now))
            .filter(order::Column::Id.eq(id))
            .filter(order::Column::Status.eq(OrderStatus::Pending));
        if let Some(customer) = customer {
            update = update.filter(order::Column::CustomerId.eq(customer));
        }
        let moved = update.exec_with_returning(&txn).await?;
        let Some(order) = moved.into_iter().next() else {
            txn.rollback().await?;
            let order = order::Entity::find_by_id(id).one(&self.db).await?;
            return Ok(match order {
                Some(order) if customer.is_none_or(|own| order.customer_id == own) => {
                    match order.status {
                        OrderStatus::Cancelled => Cancelled::Before(order),
                        // Pending a moment ago and decided since: the verdict came first.
                        _ => Cancelled::Decided(order),
                    }
                }
                _ => Cancelled::NotFound,
            });
        };
        txn.execute_raw(Statement::from_sql_and_values(
            txn.get_database_backend(),
            CANCEL_STEPS,
            [
                id.into(),
                now.into(),
                order.customer_id.clone().into(),
                order.created_at.into(),
            ],
        ))
        .await?;
        let event = Envelope::new(
            id,
            OrderCancelled {
                order_id: id,
                cancelled_at: now,
            },
        );
        messaging::outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        // Written without a lease: the relay claims it.
        self.outbox.wake();
        self.metrics.finalized(
            OrderStatus::Cancelled,
            (now - order.created_at).to_std().unwrap_or_default(),
        );
        tracing::info!(order_id = %id, event_id = %event.event_id, "order cancelled, order.cancelled queued in the outbox");
        Ok(Cancelled::Now(order))
    }

    /// The order the customer placed under `key` ([`StoreError::KeyReused`] if it has other
    /// `lines`), or `None` if no order holds the key (released since the insert met it).
    async fn placed_before(
        &self,
        new_order: &NewOrder,
        key: &IdempotencyKey,
        lines: &[OrderLine],
    ) -> Result<Option<Placed>, StoreError> {
        let customer_id = new_order.customer_id().as_str();
        let Some(existing) = order::Entity::find()
            .filter(order::Column::CustomerId.eq(customer_id))
            .filter(order::Column::IdempotencyKey.eq(key.as_str()))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let stored: Vec<OrderLine> = serde_json::from_value(existing.items.clone())
            .map_err(|e| StoreError::Corrupt(existing.id, e.to_string()))?;
        // Exact decimals compare by value: a price sent as 10.5 then "10.50" is the same order.
        if stored != lines {
            return Err(StoreError::KeyReused(existing.id));
        }
        tracing::info!(order_id = %existing.id, "order placed before under this Idempotency-Key; answered again");
        Ok(Some(Placed::Existing(existing)))
    }

    /// The API's reads ([`OrderStore::get`], [`OrderStore::list`], [`OrderStore::history`]) run
    /// on the read pool: bounded in connections and in time.
    pub async fn get(&self, id: Uuid) -> Result<Option<order::Model>, StoreError> {
        Ok(order::Entity::find_by_id(id).one(&self.reads).await?)
    }

    /// A page of orders, newest first, and the cursor of the next page if there is one.
    pub async fn list(
        &self,
        filter: &ListFilter,
    ) -> Result<(Vec<order::Model>, Option<Cursor>), StoreError> {
        let mut query = order::Entity::find();
        if let Some(customer_id) = &filter.customer_id {
            query = query.filter(order::Column::CustomerId.eq(customer_id.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(order::Column::Status.eq(status));
        }
        if let Some(after) = filter.after {
            // A row comparison, so that PostgreSQL scans the (created_at, id) index from there.
            query = query.filter(Expr::cust_with_values(
                "(created_at, id) < ($1, $2)",
                [after.created_at.into(), sea_orm::Value::from(after.id)],
            ));
        }
        let mut rows = query
            .order_by_desc(order::Column::CreatedAt)
            .order_by_desc(order::Column::Id)
            .limit(filter.limit + 1)
            .all(&self.reads)
            .await?;
        let next = if rows.len() as u64 > filter.limit {
            rows.truncate(filter.limit as usize);
            rows.last().map(|last| Cursor {
                created_at: last.created_at,
                id: last.id,
            })
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The order's history, oldest first; `None` if the order does not exist.
    pub async fn history(&self, id: Uuid) -> Result<Option<Vec<history::Model>>, StoreError> {
        let rows = history::Entity::find()
            .filter(history::Column::OrderId.eq(id))
            .order_by_asc(history::Column::Id)
            .all(&self.reads)
            .await?;
        if rows.is_empty() && self.get(id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Applies the processor's verdict, once: the update only matches an order in a status the
    /// verdict may follow, so a duplicate or late event changes nothing. The update and its
    /// history row are one statement, shared with the verdicts applied at the same time.
    pub async fn apply_processed(&self, event: &OrderProcessed) -> Result<Applied, StoreError> {
        let target = OrderStatus::from(event.status);
        let reason = match target {
            OrderStatus::Completed => None,
            _ => event.reason.clone(),
        };
        Ok(self
            .verdicts
            .write(Verdict {
                order_id: event.order_id,
                target,
                reason,
                at: Utc::now().trunc_subsecs(6),
            })
            .await?)
    }
}

/// One verdict to apply.
pub struct Verdict {
    order_id: Uuid,
    target: OrderStatus,
    reason: Option<String>,
    at: DateTime<Utc>,
}

/// An outbox row a statement wrote: its id, and the event it carries.
struct OutboxIdRow {
    id: i64,
    event_id: Uuid,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for OutboxIdRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
        })
    }
}

/// What [`APPLY_VERDICTS`] answers for one verdict.
struct VerdictRow {
    id: Uuid,
    /// The order's status before the statement; `None`: no such order.
    previous: Option<String>,
    /// Whether the statement moved it.
    moved: bool,
    /// When the order was placed; `None`: no such order.
    created_at: Option<DateTime<Utc>>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for VerdictRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            previous: row.try_get("previous")?,
            moved: row.try_get("moved")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Applies verdicts in groups: one statement ([`APPLY_VERDICTS`]) updates the orders and writes
/// the history rows of those it moved.
pub struct VerdictWriter {
    db: DatabaseConnection,
    metrics: OrderMetrics,
}

impl GroupWrite for VerdictWriter {
    type Request = Verdict;
    type Response = Applied;
    type Key = Uuid;
    const NAME: &'static str = "apply verdicts";

    fn key(verdict: &Verdict) -> Uuid {
        verdict.order_id
    }

    async fn write(&self, verdicts: &[Verdict]) -> Result<Vec<Applied>, DbErr> {
        let allowed = column(verdicts, |verdict| {
            verdict
                .target
                .allowed_predecessors()
                .iter()
                .map(|status| status.as_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        let rows: Vec<VerdictRow> = sqlx::query_as(APPLY_VERDICTS)
            .bind(column(verdicts, |v| v.order_id))
            .bind(column(verdicts, |v| v.target.as_str()))
            .bind(column(verdicts, |v| v.reason.as_deref()))
            .bind(column(verdicts, |v| v.at))
            .bind(allowed)
            .fetch_all(self.db.get_postgres_connection_pool())
            .await
            .map_err(messaging::database::from_sqlx)?;
        let targets: std::collections::HashMap<Uuid, (OrderStatus, DateTime<Utc>)> = verdicts
            .iter()
            .map(|v| (v.order_id, (v.target, v.at)))
            .collect();
        let mut by_order = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            if let (true, Some(created_at), Some((target, at))) =
                (row.moved, row.created_at, targets.get(&row.id))
            {
                let elapsed = (*at - created_at).to_std().unwrap_or_default();
                self.metrics.finalized(*target, elapsed);
            }
            let applied = match (row.previous, row.moved) {
                (None, _) => Applied::UnknownOrder,
                (Some(previous), true) => Applied::Moved {
                    from_final: previous != OrderStatus::Pending.as_str(),
                },
                (Some(_), false) => Applied::Ignored,
            };
            by_order.insert(row.id, applied);
        }
        in_request_order::<Self>(verdicts, by_order)
    }
}

/// The history row and the figures of a cancellation.
const CANCEL_STEPS: &str = r#"
WITH step AS (
    INSERT INTO order_status_history (order_id, status, reason, at) VALUES ($1, 'cancelled', NULL, $2)
)
INSERT INTO order_figures_delta (minute, customer_id, cancelled)
VALUES (date_trunc('minute', $4::timestamptz, 'UTC'), $3, 1)
"#;

/// The SQL of the create→decision latency bucket of an interval: bucket `b` holds
/// [2^(b/2), 2^((b+1)/2)) ms, 0 everything under 1.41 ms, the last ([`crate::figures::BUCKETS`]
/// − 1) everything from 2^21.5 ms (about 50 minutes) on.
macro_rules! latency_bucket {
    ($interval:literal) => {
        concat!(
            "LEAST(43, GREATEST(0, floor(2 * log(2.0, GREATEST(extract(epoch FROM ",
            $interval,
            ") * 1000, 1)::numeric))))::smallint"
        )
    };
}

/// The start of both statements writing new orders: the group's orders, one array per column
/// (`$6`: the idempotency keys), and the `new_orders` CTE inserting them, left open for the
/// statement to finish.
macro_rules! insert_new_orders {
    () => {
        r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::numeric[], $5::timestamptz[],
                         $6::text[], $7::uuid[], $8::text[], $9::text[], $10::uuid[], $11::bytea[],
                         $12::timestamptz[], $14::text[], $15::text[])
        AS t (id, customer_id, items, total_amount, created_at, idempotency_key,
              event_id, event_type, routing_key, correlation_id, body, event_created_at,
              traceparent, tracestate)
), new_orders AS (
    INSERT INTO orders (id, customer_id, items, total_amount, status, error_message, created_at,
                        updated_at, idempotency_key)
    SELECT id, customer_id, items, total_amount, 'pending', NULL, created_at, created_at,
           idempotency_key
    FROM input"#
    };
}

/// New orders without idempotency keys (all NULL), their first history rows and their events;
/// the events are leased for `$13` seconds to this instance, which publishes them (NULL: no
/// lease, the relay's). Answers the outbox id of each event.
const INSERT_ORDERS: &str = concat!(
    insert_new_orders!(),
    r#"
), first_steps AS (
    INSERT INTO order_status_history (order_id, status, reason, at)
    SELECT id, 'pending', NULL, created_at FROM input
), placed AS (
    INSERT INTO order_figures_delta (minute, customer_id, placed)
    SELECT date_trunc('minute', created_at, 'UTC'), customer_id, count(*) FROM input GROUP BY 1, 2
)
INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, body, created_at, leased_until,
                    traceparent, tracestate)
SELECT event_id, event_type, routing_key, correlation_id, body, event_created_at,
       now() + $13::float8 * interval '1 second', traceparent, tracestate
FROM input
RETURNING id, event_id
"#
);

/// [`INSERT_ORDERS`] for a group with idempotency keys: an order whose customer already has one
/// under its key is skipped with its history row and event. The unique index settles it, also
/// against an order of the same statement or of a concurrent one (which the insert waits for).
/// Every statement inserts in (customer, key) order, so two in flight with the same new keys
/// cannot each hold one the other waits for (a deadlock). Answers the outbox id of each event
/// written.
const INSERT_KEYED_ORDERS: &str = concat!(
    insert_new_orders!(),
    r#"
    ORDER BY customer_id, idempotency_key
    ON CONFLICT (customer_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), first_steps AS (
    INSERT INTO order_status_history (order_id, status, reason, at)
    SELECT i.id, 'pending', NULL, i.created_at FROM input i JOIN new_orders n ON n.id = i.id
), placed AS (
    INSERT INTO order_figures_delta (minute, customer_id, placed)
    SELECT date_trunc('minute', i.created_at, 'UTC'), i.customer_id, count(*)
    FROM input i JOIN new_orders n ON n.id = i.id GROUP BY 1, 2
)
INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, body, created_at, leased_until,
                    traceparent, tracestate)
SELECT i.event_id, i.event_type, i.routing_key, i.correlation_id, i.body, i.event_created_at,
       now() + $13::float8 * interval '1 second', i.traceparent, i.tracestate
FROM input i JOIN new_orders n ON n.id = i.id
RETURNING id, event_id
"#
);

/// Verdicts, one array per column: each order moves only from a status its verdict may follow
/// (`allowed`, comma-separated), with a history row and the change of the figures (a decision
/// from `pending` also counts its create→decision time). Answers, per order, its status before
/// (NULL: no such order) and whether it moved. The data-modifying CTEs and the final SELECT
/// share one snapshot, so `previous` is the status before this statement.
const APPLY_VERDICTS: &str = concat!(
    r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
        AS t (id, status, reason, at, allowed)
), moved AS (
    UPDATE orders o SET status = i.status, error_message = i.reason, updated_at = i.at
    FROM input i
    WHERE o.id = i.id AND o.status = ANY (string_to_array(i.allowed, ','))
    RETURNING o.id
), steps AS (
    INSERT INTO order_status_history (order_id, status, reason, at)
    SELECT i.id, i.status, i.reason, i.at FROM input i JOIN moved m ON m.id = i.id
), changes AS (
    SELECT date_trunc('minute', o.created_at, 'UTC') AS minute, o.customer_id, o.total_amount,
           o.status AS previous, i.status AS next, i.at - o.created_at AS took
    FROM input i JOIN moved m ON m.id = i.id JOIN orders o ON o.id = i.id
), counted AS (
    INSERT INTO order_figures_delta (minute, customer_id, completed, rejected, failed, revenue)
    SELECT minute, customer_id,
           count(*) FILTER (WHERE next = 'completed') - count(*) FILTER (WHERE previous = 'completed'),
           count(*) FILTER (WHERE next = 'rejected') - count(*) FILTER (WHERE previous = 'rejected'),
           count(*) FILTER (WHERE next = 'failed') - count(*) FILTER (WHERE previous = 'failed'),
           coalesce(sum(total_amount) FILTER (WHERE next = 'completed'), 0)
    FROM changes GROUP BY 1, 2
), timed AS (
    INSERT INTO order_latencies_delta (minute, customer_id, bucket, orders)
    SELECT minute, customer_id, "#,
    latency_bucket!("took"),
    r#", count(*)
    FROM changes WHERE previous = 'pending' GROUP BY 1, 2, 3
)
SELECT i.id, o.status AS previous, o.created_at, m.id IS NOT NULL AS moved
FROM input i LEFT JOIN orders o ON o.id = i.id LEFT JOIN moved m ON m.id = i.id
"#
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A new order of `customer` under `key`, as [`OrderStore::create`] hands it to the writer.
    fn keyed(customer: &str, key: &str) -> NewOrderRow {
        let id = Uuid::now_v7();
        let now = Utc::now().trunc_subsecs(6);
        let event = order_created(OrderCreated {
            order_id: id,
            customer_id: customer.to_owned(),
            items: Vec::new(),
            total_amount: rust_decimal::Decimal::ONE,
            created_at: now,
        });
        NewOrderRow {
            id,
            customer_id: customer.to_owned(),
            idempotency_key: Some(key.to_owned()),
            items: serde_json::json!([]),
            total_amount: rust_decimal::Decimal::ONE,
            created_at: now,
            event: OutboxRow::new(&event).unwrap(),
        }
    }

    /// Sessions of the test's database waiting for a lock.
    async fn lock_waiters(pool: &sqlx::PgPool) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    }

    /// Two group commits in flight with the same new keys in opposite orders: each statement
    /// takes its keys in one order (customer, key), so the second never holds a key the first
    /// waits for while it waits for one the first holds. Taken in the orders given, the first
    /// holds key-1 waiting for key-0 (held by a third transaction), the second holds key-2 waiting
    /// for key-1, and once key-0 is free the first waits for key-2: a deadlock, one aborted.
    #[tokio::test]
    async fn keyed_statements_take_their_keys_in_one_order_and_cannot_deadlock() {
        const DEADLINE: Duration = Duration::from_secs(20);
        let settings =
            test_support::database_settings(&format!("orders_{}", test_support::unique_id()));
        let _cleanup = test_support::Cleanup {
            databases: vec![settings.url.expose().to_owned()],
            topology: None,
            queues: Vec::new(),
        };
        let db = messaging::database::connect(&settings).await.unwrap();
        migration::migrate::<migration::OrdersMigrator>(&db)
            .await
            .unwrap();
        let pool = db.get_postgres_connection_pool().clone();
        let insert = |rows: Vec<NewOrderRow>| {
            let pool = pool.clone();
            tokio::spawn(async move {
                bind_new_orders(INSERT_KEYED_ORDERS, &rows, None)
                    .fetch_all(&pool)
                    .await
                    .map(|written| written.len())
            })
        };

        let mut holder = pool.begin().await.unwrap();
        bind_new_orders(INSERT_KEYED_ORDERS, &[keyed("c", "key-0")], None)
            .fetch_all(&mut *holder)
            .await
            .unwrap();
        let first = insert(vec![
            keyed("c", "key-1"),
            keyed("c", "key-0"),
            keyed("c", "key-2"),
        ]);
        let pool_ref = &pool;
        test_support::wait_until("the first statement waits for key-0", DEADLINE, || async {
            (lock_waiters(pool_ref).await >= 1).then_some(())
        })
        .await;
        let second = insert(vec![keyed("c", "key-2"), keyed("c", "key-1")]);
        let second_ref = &second;
        test_support::wait_until("the second statement ends or waits", DEADLINE, || async {
            (second_ref.is_finished() || lock_waiters(pool_ref).await >= 2).then_some(())
        })
        .await;
        holder.rollback().await.unwrap();

        let first = first.await.unwrap().expect("the first statement");
        let second = second.await.unwrap().expect("the second statement");
        assert_eq!(first + second, 3, "each key placed one order");
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(orders, 3);
        db.close().await.unwrap();
    }

    #[test]
    fn the_latency_bucket_sql_ends_where_the_figures_do() {
        let last = crate::figures::BUCKETS - 1;
        assert!(
            latency_bucket!("took").starts_with(&format!("LEAST({last}, ")),
            "{}",
            latency_bucket!("took")
        );
    }

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            created_at: Utc::now().trunc_subsecs(6),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("garbage!"), None);
        let upper = cursor.encode().to_uppercase();
        assert_eq!(Cursor::decode(&upper), None, "only the form of the pattern");
        assert_eq!(
            Cursor::decode("12345678901234567-00000000-0000-0000-0000-000000000000"),
            None
        );
    }
}
