//! The processor's database work: claiming a delivery, and writing a decision together with its
//! `order.processed` event in one transaction.

use std::sync::Arc;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    Statement, TransactionTrait,
};
use shared::events::{Envelope, OrderProcessed};
use shared::outbox::{self, OutboxError};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::Decision;
use crate::entities::processing;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox error: {0}")]
    Outbox(#[from] OutboxError),
}

impl StoreError {
    /// Whether the database is unreachable (not the message's fault).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Db(db) | Self::Outbox(OutboxError::Db(db)) => {
                shared::database::is_unavailable(db)
            }
            Self::Outbox(_) => false,
        }
    }
}

/// What the processing record says about a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not decided yet: go on. `attempts` counts this delivery.
    Undecided { attempts: i32 },
    /// Decided by an earlier delivery: nothing more to do.
    Decided,
}

#[derive(Clone)]
pub struct ProcessingStore {
    db: DatabaseConnection,
    relay: Arc<Notify>,
}

impl ProcessingStore {
    pub fn new(db: DatabaseConnection, relay: Arc<Notify>) -> Self {
        Self { db, relay }
    }

    /// Records a delivery of `event_id` for `order_id`: inserts the record, or counts one more
    /// attempt on it. A `replayed` delivery of a failed order clears the failure, so that the order
    /// is processed again. The row lock this takes makes concurrent duplicates wait for each other.
    pub async fn claim(
        &self,
        order_id: Uuid,
        event_id: Uuid,
        replayed: bool,
    ) -> Result<Claim, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                r#"
INSERT INTO processing (order_id, event_id, attempts, first_seen_at)
VALUES ($1, $2, 1, now())
ON CONFLICT (order_id) DO UPDATE SET
    attempts   = processing.attempts + 1,
    decision   = CASE WHEN $3 AND processing.decision = 'failed' THEN NULL ELSE processing.decision END,
    reason     = CASE WHEN $3 AND processing.decision = 'failed' THEN NULL ELSE processing.reason END,
    decided_at = CASE WHEN $3 AND processing.decision = 'failed' THEN NULL ELSE processing.decided_at END
RETURNING decision, attempts
"#,
                [order_id.into(), event_id.into(), replayed.into()],
            ))
            .await?
            .ok_or_else(|| DbErr::RecordNotInserted)?;
        let decision: Option<String> = row.try_get("", "decision")?;
        let attempts: i32 = row.try_get("", "attempts")?;
        Ok(match decision {
            Some(_) => Claim::Decided,
            None => Claim::Undecided { attempts },
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Writes the decision and its `order.processed` event atomically, unless another delivery
    /// decided first. Returns whether this call decided.
    pub async fn decide(&self, order_id: Uuid, decision: &Decision) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
        let txn = self.db.begin().await?;
        let updated = processing::Entity::update_many()
            .col_expr(
                processing::Column::Decision,
                Expr::value(decision.status.as_str()),
            )
            .col_expr(
                processing::Column::Reason,
                Expr::value(decision.reason.clone()),
            )
            .col_expr(processing::Column::DecidedAt, Expr::value(now))
            .filter(processing::Column::OrderId.eq(order_id))
            .filter(processing::Column::Decision.is_null())
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        let event = Envelope::new(
            order_id,
            OrderProcessed {
                order_id,
                status: decision.status,
                reason: decision.reason.clone(),
                processed_at: now,
            },
        );
        outbox::enqueue(&txn, &event).await?;
        txn.commit().await?;
        self.relay.notify_one();
        tracing::info!(
            decision = decision.status.as_str(),
            result_event_id = %event.event_id,
            "order decided, order.processed queued in the outbox"
        );
        Ok(true)
    }

    pub async fn get(&self, order_id: Uuid) -> Result<Option<processing::Model>, StoreError> {
        Ok(processing::Entity::find_by_id(order_id)
            .one(&self.db)
            .await?)
    }
}
