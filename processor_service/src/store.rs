//! The processor's database work: claiming a delivery, and writing a decision together with its
//! `order.processed` event in one transaction.

use std::sync::Arc;

use chrono::SubsecRound;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, Statement, TransactionTrait,
};
use shared::events::{Envelope, OrderProcessed};
use shared::outbox::{self, OutboxError, OutboxRow};
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

/// What recording a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// This delivery decided the order (and queued its `order.processed`).
    Decided,
    /// An earlier delivery had decided it: nothing more to do.
    AlreadyDecided,
    /// The attempt was counted; the order is still undecided.
    Undecided { attempts: i32 },
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

    /// Records a delivery of `event_id` for `order_id` and, given a `decision`, decides the
    /// order, in one statement (one round trip, one commit): the record is inserted or its
    /// `attempts` incremented (the row lock this takes serialises concurrent duplicates); if no
    /// earlier delivery decided the order, the decision is set and its `order.processed` event
    /// written to the outbox. A `replayed` delivery of a failed order replaces the failure.
    pub async fn record(
        &self,
        order_id: Uuid,
        event_id: Uuid,
        replayed: bool,
        decision: Option<&Decision>,
    ) -> Result<Recorded, StoreError> {
        let now = chrono::Utc::now().trunc_subsecs(6);
        let event = decision.map(|decision| {
            Envelope::new(
                order_id,
                OrderProcessed {
                    order_id,
                    status: decision.status,
                    reason: decision.reason.clone(),
                    processed_at: now,
                },
            )
        });
        let outbox = match &event {
            Some(event) => Some(OutboxRow::new(event).map_err(OutboxError::from)?),
            None => None,
        };
        let mut values: Vec<sea_orm::Value> = vec![
            order_id.into(),
            event_id.into(),
            replayed.into(),
            now.into(),
            decision.map(|d| d.status.as_str().to_owned()).into(),
            decision.and_then(|d| d.reason.clone()).into(),
        ];
        match outbox {
            Some(row) => values.extend(row.values()),
            None => values.extend([
                Option::<Uuid>::None.into(),
                Option::<String>::None.into(),
                Option::<String>::None.into(),
                Option::<Uuid>::None.into(),
                Option::<Vec<u8>>::None.into(),
                Option::<chrono::DateTime<chrono::Utc>>::None.into(),
            ]),
        }
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    r#"
WITH record AS (
    INSERT INTO processing (order_id, event_id, attempts, first_seen_at, decision, reason, decided_at)
    VALUES ($1, $2, 1, $4, $5, $6, CASE WHEN $5::text IS NULL THEN NULL ELSE $4::timestamptz END)
    ON CONFLICT (order_id) DO UPDATE SET
        attempts = processing.attempts + 1,
        decision = CASE WHEN processing.decision IS NULL OR ($3 AND processing.decision = 'failed')
                        THEN EXCLUDED.decision ELSE processing.decision END,
        reason = CASE WHEN processing.decision IS NULL OR ($3 AND processing.decision = 'failed')
                      THEN EXCLUDED.reason ELSE processing.reason END,
        decided_at = CASE WHEN processing.decision IS NULL OR ($3 AND processing.decision = 'failed')
                          THEN EXCLUDED.decided_at ELSE processing.decided_at END
    RETURNING attempts, decision, decided_at
), announced AS (
    INSERT INTO outbox ({columns})
    SELECT $7, $8, $9, $10, $11, $12 FROM record
    WHERE $5::text IS NOT NULL AND record.decided_at = $4::timestamptz
    RETURNING event_id
)
SELECT record.attempts, record.decision, (SELECT count(*) FROM announced) AS announced
FROM record
"#,
                    columns = OutboxRow::COLUMNS
                ),
                values,
            ))
            .await?
            .ok_or(DbErr::RecordNotInserted)?;
        let attempts: i32 = row.try_get("", "attempts")?;
        let decided: Option<String> = row.try_get("", "decision")?;
        let announced: i64 = row.try_get("", "announced")?;
        Ok(match (announced, decided, event) {
            (1.., _, Some(event)) => {
                self.relay.notify_one();
                tracing::info!(
                    %order_id,
                    event_id = %event.event_id,
                    decision = event.payload.status.as_str(),
                    "order decided, order.processed queued in the outbox"
                );
                Recorded::Decided
            }
            (_, Some(_), _) => Recorded::AlreadyDecided,
            _ => Recorded::Undecided { attempts },
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Decides an undecided order in its own transaction (after the last attempt). Returns
    /// whether this call decided.
    pub async fn decide(&self, order_id: Uuid, decision: &Decision) -> Result<bool, StoreError> {
        let txn = self.db.begin().await?;
        let decided = self.write_decision(&txn, order_id, decision).await?;
        txn.commit().await?;
        if decided {
            self.relay.notify_one();
        }
        Ok(decided)
    }

    /// The decision and its `order.processed` event, on `txn`, unless the order is decided.
    async fn write_decision(
        &self,
        txn: &DatabaseTransaction,
        order_id: Uuid,
        decision: &Decision,
    ) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
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
            .exec(txn)
            .await?;
        if updated.rows_affected == 0 {
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
        outbox::enqueue(txn, &event).await?;
        tracing::info!(
            %order_id,
            event_id = %event.event_id,
            decision = decision.status.as_str(),
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
