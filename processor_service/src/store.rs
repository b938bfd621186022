//! The processor's database work: claiming a delivery, and writing a decision together with its
//! `order.processed` event in one transaction.

use std::sync::Arc;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set, TransactionTrait,
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
    /// attempt on it. The row lock this takes makes concurrent duplicates wait for each other.
    pub async fn claim(&self, order_id: Uuid, event_id: Uuid) -> Result<Claim, StoreError> {
        let row = processing::ActiveModel {
            order_id: Set(order_id),
            event_id: Set(event_id),
            decision: Set(None),
            reason: Set(None),
            attempts: Set(1),
            first_seen_at: Set(chrono::Utc::now()),
            decided_at: Set(None),
        };
        let result = processing::Entity::insert(row)
            .on_conflict(
                OnConflict::column(processing::Column::OrderId)
                    .value(
                        processing::Column::Attempts,
                        Expr::col((processing::Entity, processing::Column::Attempts)).add(1),
                    )
                    .to_owned(),
            )
            .exec_with_returning(&self.db)
            .await;
        match result {
            Ok(record) if record.decision.is_some() => Ok(Claim::Decided),
            Ok(record) => Ok(Claim::Undecided {
                attempts: record.attempts,
            }),
            Err(error) => Err(error.into()),
        }
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
