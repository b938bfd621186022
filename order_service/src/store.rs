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
    relay: Arc<Notify>,
}

impl OrderStore {
    pub fn new(db: DatabaseConnection, relay: Arc<Notify>) -> Self {
        Self { db, relay }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Stores the order, its first history row and its `order.created` event, atomically.
    #[tracing::instrument(level = "debug", name = "store new order", skip_all, fields(order_id = tracing::field::Empty, event_id = tracing::field::Empty))]
    pub async fn create(&self, new_order: &NewOrder) -> Result<order::Model, StoreError> {
        let id = Uuid::new_v4();
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
        // The order, its first history row and its event: one statement, so one round trip and
        // one atomic commit.
        let mut values: Vec<sea_orm::Value> = vec![
            model.id.into(),
            model.customer_id.clone().into(),
            model.items.clone().into(),
            model.total_amount.into(),
            now.into(),
        ];
        values.extend(outbox.values());
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"
WITH new_order AS (
    INSERT INTO orders (id, customer_id, items, total_amount, status, error_message, created_at, updated_at)
    VALUES ($1, $2, $3, $4, 'pending', NULL, $5, $5)
), first_step AS (
    INSERT INTO order_status_history (order_id, status, reason, at) VALUES ($1, 'pending', NULL, $5)
)
INSERT INTO outbox ({}) VALUES ($6, $7, $8, $9, $10, $11)
"#,
                    OutboxRow::COLUMNS
                ),
                values,
            ))
            .await?;
        self.relay.notify_one();
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
    /// verdict may follow, so a duplicate or late event changes nothing. One statement: the
    /// update and its history row commit together.
    pub async fn apply_processed(&self, event: &OrderProcessed) -> Result<Applied, StoreError> {
        let target = OrderStatus::from(event.status);
        let now = Utc::now().trunc_subsecs(6);
        let reason = match target {
            OrderStatus::Completed => None,
            _ => event.reason.clone(),
        };
        // Static names from the enum, never input.
        let from = target
            .allowed_predecessors()
            .iter()
            .map(|status| format!("'{}'", status.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"
WITH previous AS (
    SELECT status FROM orders WHERE id = $1
), moved AS (
    UPDATE orders SET status = $2, error_message = $3, updated_at = $4
    WHERE id = $1 AND status IN ({from})
    RETURNING id
), step AS (
    INSERT INTO order_status_history (order_id, status, reason, at)
    SELECT id, $2, $3, $4 FROM moved
    RETURNING order_id
)
SELECT (SELECT status FROM previous) AS previous, (SELECT count(*) FROM step) AS moved
"#
                ),
                [
                    event.order_id.into(),
                    target.as_str().into(),
                    reason.into(),
                    now.into(),
                ],
            ))
            .await?
            .ok_or(DbErr::RecordNotFound(
                "apply_processed returned no row".into(),
            ))?;
        let previous: Option<String> = row.try_get("", "previous")?;
        let moved: i64 = row.try_get("", "moved")?;
        Ok(match (previous, moved) {
            (None, _) => Applied::UnknownOrder,
            (Some(previous), 1..) => Applied::Moved {
                from_final: previous != OrderStatus::Pending.as_str(),
            },
            (Some(_), _) => Applied::Ignored,
        })
    }
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
