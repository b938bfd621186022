//! The order service's database work. Every state change and the event announcing it are written
//! in one transaction.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use shared::batch::{GroupWrite, GroupWriter, in_request_order};
use shared::events::{Envelope, OrderCreated, OrderLine, OrderProcessed};
use shared::outbox::{OutboxError, OutboxRow};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::{NewOrder, OrderStatus};
use crate::entities::{order, order_status_history as history};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox error: {0}")]
    Outbox(#[from] OutboxError),
    #[error("stored order {0} is corrupt: {1}")]
    Corrupt(Uuid, String),
}

impl StoreError {
    /// Whether the database is unreachable (as opposed to a bug or bad data).
    pub fn is_unavailable(&self) -> bool {
        let db = match self {
            Self::Db(db) | Self::Outbox(OutboxError::Db(db)) => db,
            _ => return false,
        };
        shared::database::is_unavailable(db)
    }
}

/// A position in the newest-first listing: the last order of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
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

#[derive(Clone)]
pub struct OrderStore {
    db: DatabaseConnection,
    verdicts: GroupWriter<VerdictWriter>,
    new_orders: GroupWriter<NewOrderWriter>,
}

/// Parameters of one new order (order, first history row, event), in SQL order.
const VALUES_PER_ORDER: usize = 11;
/// Orders committed together at most.
const MAX_GROUP: usize = 64;
/// Statements in flight at once: one keeps groups large, which measured faster on 2 cores
/// (BENCHMARKS.md) than 4 smaller ones in parallel.
const WRITERS: usize = 1;

/// A new order's parameters, [`VALUES_PER_ORDER`] of them.
pub struct NewOrderRow {
    id: Uuid,
    values: Vec<sea_orm::Value>,
}

/// Writes new orders in groups (a group commit): the orders, their first history rows and their
/// events, one statement for all the orders waiting together.
pub struct NewOrderWriter {
    db: DatabaseConnection,
    relay: Arc<Notify>,
}

impl GroupWrite for NewOrderWriter {
    type Request = NewOrderRow;
    type Response = ();
    type Key = Uuid;

    fn key(row: &NewOrderRow) -> Uuid {
        row.id
    }

    async fn write(&self, rows: &[NewOrderRow]) -> Result<Vec<()>, DbErr> {
        let values = rows
            .iter()
            .flat_map(|row| row.values.iter().cloned())
            .collect();
        self.db
            .execute_raw(insert_orders(rows.len(), values))
            .await?;
        self.relay.notify_one();
        Ok(vec![(); rows.len()])
    }
}

impl OrderStore {
    /// Also starts the group writers of new orders and of verdicts (they stop when the last clone
    /// of the store is dropped).
    pub fn new(db: DatabaseConnection, relay: Arc<Notify>) -> Self {
        let new_orders = GroupWriter::start(
            NewOrderWriter {
                db: db.clone(),
                relay,
            },
            MAX_GROUP,
            WRITERS,
        );
        let verdicts = GroupWriter::start(VerdictWriter { db: db.clone() }, MAX_GROUP, WRITERS);
        Self {
            db,
            verdicts,
            new_orders,
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Stores the order, its first history row and its `order.created` event, atomically.
    #[tracing::instrument(level = "debug", name = "store new order", skip_all, fields(order_id = tracing::field::Empty, event_id = tracing::field::Empty))]
    pub async fn create(&self, new_order: &NewOrder) -> Result<order::Model, StoreError> {
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
        let event = Envelope::new(
            id,
            OrderCreated {
                order_id: id,
                customer_id: new_order.customer_id().as_str().to_owned(),
                items: lines.clone(),
                total_amount: total,
                created_at: now,
            },
        );
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
            status: OrderStatus::Pending.as_str().to_owned(),
            error_message: None,
            created_at: now,
            updated_at: now,
        };
        // The order, its first history row and its event are written by one statement, together
        // with the other orders that arrived meanwhile (a group commit): one round trip and one
        // commit for them all, and no wait when there are none.
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(VALUES_PER_ORDER);
        values.extend([
            model.id.into(),
            model.customer_id.clone().into(),
            model.items.clone().into(),
            model.total_amount.into(),
            now.into(),
        ]);
        values.extend(outbox.values());
        self.new_orders.write(NewOrderRow { id, values }).await?;
        tracing::info!(order_id = %id, event_id = %event.event_id, "order stored, order.created queued in the outbox");
        Ok(model)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<order::Model>, StoreError> {
        Ok(order::Entity::find_by_id(id).one(&self.db).await?)
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
            query = query.filter(order::Column::Status.eq(status.as_str()));
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
            .all(&self.db)
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
            .all(&self.db)
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

/// Applies verdicts in groups: one `UPDATE ... FROM (VALUES ...)` and one history insert for the
/// orders it moved.
pub struct VerdictWriter {
    db: DatabaseConnection,
}

const VALUES_PER_VERDICT: usize = 5;

impl GroupWrite for VerdictWriter {
    type Request = Verdict;
    type Response = Applied;
    type Key = Uuid;

    fn key(verdict: &Verdict) -> Uuid {
        verdict.order_id
    }

    async fn write(&self, verdicts: &[Verdict]) -> Result<Vec<Applied>, DbErr> {
        let mut values: Vec<sea_orm::Value> =
            Vec::with_capacity(verdicts.len() * VALUES_PER_VERDICT);
        for verdict in verdicts {
            let allowed = verdict
                .target
                .allowed_predecessors()
                .iter()
                .map(|status| status.as_str())
                .collect::<Vec<_>>()
                .join(",");
            values.extend([
                verdict.order_id.into(),
                verdict.target.as_str().into(),
                verdict.reason.clone().into(),
                verdict.at.into(),
                allowed.into(),
            ]);
        }
        let rows = (0..verdicts.len())
            .map(|i| {
                let p = |n: usize| format!("${}", i * VALUES_PER_VERDICT + n);
                format!(
                    "({}::uuid, {}::text, {}::text, {}::timestamptz, {}::text)",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            r#"
WITH input (id, status, reason, at, allowed) AS (
    VALUES {rows}
), previous AS (
    SELECT o.id, o.status FROM orders o JOIN input i ON i.id = o.id
), moved AS (
    UPDATE orders o SET status = i.status, error_message = i.reason, updated_at = i.at
    FROM input i
    WHERE o.id = i.id AND o.status = ANY (string_to_array(i.allowed, ','))
    RETURNING o.id
), steps AS (
    INSERT INTO order_status_history (order_id, status, reason, at)
    SELECT i.id, i.status, i.reason, i.at FROM input i JOIN moved m ON m.id = i.id
    RETURNING order_id
)
SELECT i.id, p.status AS previous, EXISTS (SELECT 1 FROM steps s WHERE s.order_id = i.id) AS moved
FROM input i LEFT JOIN previous p ON p.id = i.id
"#
        );
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        let mut by_order = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("", "id")?;
            let previous: Option<String> = row.try_get("", "previous")?;
            let moved: bool = row.try_get("", "moved")?;
            let applied = match (previous, moved) {
                (None, _) => Applied::UnknownOrder,
                (Some(previous), true) => Applied::Moved {
                    from_final: previous != OrderStatus::Pending.as_str(),
                },
                (Some(_), false) => Applied::Ignored,
            };
            by_order.insert(id, applied);
        }
        in_request_order::<Self>(verdicts, by_order)
    }
}

/// One statement inserting `count` orders, their first history rows and their events.
fn insert_orders(count: usize, values: Vec<sea_orm::Value>) -> Statement {
    let rows = |shape: &dyn Fn(usize) -> String| {
        (0..count)
            .map(|i| shape(i * VALUES_PER_ORDER))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let orders = rows(&|o| {
        format!(
            "(${}, ${}, ${}, ${}, 'pending', NULL, ${}, ${})",
            o + 1,
            o + 2,
            o + 3,
            o + 4,
            o + 5,
            o + 5
        )
    });
    let steps = rows(&|o| format!("(${}, 'pending', NULL, ${})", o + 1, o + 5));
    let events = rows(&|o| {
        format!(
            "(${}, ${}, ${}, ${}, ${}, ${})",
            o + 6,
            o + 7,
            o + 8,
            o + 9,
            o + 10,
            o + 11
        )
    });
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "WITH new_orders AS (INSERT INTO orders (id, customer_id, items, total_amount, status, error_message, created_at, updated_at) VALUES {orders}), \
             first_steps AS (INSERT INTO order_status_history (order_id, status, reason, at) VALUES {steps}) \
             INSERT INTO outbox ({}) VALUES {events}",
            OutboxRow::COLUMNS
        ),
        values,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor {
            created_at: Utc::now().trunc_subsecs(6),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("garbage!"), None);
    }
}
