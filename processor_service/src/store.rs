//! The processor's database work: claiming a delivery, and writing a decision together with its
//! `order.processed` event in one transaction.

use std::time::Duration;

use chrono::SubsecRound;

use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use messaging::batch::{GroupWrite, GroupWriter, Grouping, column, in_request_order};
use messaging::failure::{Classify, FailureClass};
use messaging::outbox::{self, Committed, Handoff, OutboxError, OutboxRow};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Statement, TransactionTrait, sqlx,
};
use uuid::Uuid;

use crate::domain::Decision;
use crate::entities::processing::{self, DecisionStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox error: {0}")]
    Outbox(#[from] OutboxError),
}

impl Classify for StoreError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Db(db) | Self::Outbox(OutboxError::Db(db)) => db.class(),
            Self::Outbox(_) => FailureClass::Error,
        }
    }
}

/// What recording a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// This delivery decided the order (and queued its `order.processed`).
    Decided,
    /// An earlier delivery had decided it, with this decision and reason.
    AlreadyDecided {
        decision: Decision,
        decided_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The attempt was counted; the order is still undecided.
    Undecided { attempts: i32 },
    /// The order was cancelled: it is not decided, and nothing is announced.
    Cancelled,
}

/// One delivery to record.
pub struct RecordRequest {
    order_id: Uuid,
    event_id: Uuid,
    replayed: bool,
    now: chrono::DateTime<chrono::Utc>,
    decision: Option<Decision>,
    outbox: Option<OutboxRow>,
}

/// Writes processing records in groups: one `INSERT ... ON CONFLICT` for them all, and one
/// `INSERT INTO outbox` for the orders it decided.
pub struct RecordWriter {
    db: DatabaseConnection,
    outbox: Handoff,
}

impl GroupWrite for RecordWriter {
    type Request = RecordRequest;
    type Response = Recorded;
    type Key = Uuid;
    const NAME: &'static str = "record deliveries";

    fn key(request: &RecordRequest) -> Uuid {
        request.order_id
    }

    async fn write(&self, requests: &[RecordRequest]) -> Result<Vec<Recorded>, DbErr> {
        let rows: Vec<RecordRow> = sqlx::query_as(RECORD)
            .bind(column(requests, |r| r.order_id))
            .bind(column(requests, |r| r.event_id))
            .bind(column(requests, |r| r.replayed))
            .bind(column(requests, |r| r.now))
            .bind(column(requests, |r| {
                r.decision.as_ref().map(|d| d.status.as_str())
            }))
            .bind(column(requests, |r| {
                r.decision.as_ref().and_then(|d| d.reason.as_deref())
            }))
            .bind(column(requests, |r| r.outbox.as_ref().map(|e| e.event_id)))
            .bind(column(requests, |r| {
                r.outbox.as_ref().map(|e| e.event_type.as_str())
            }))
            .bind(column(requests, |r| {
                r.outbox.as_ref().map(|e| e.routing_key.as_str())
            }))
            .bind(column(requests, |r| {
                r.outbox.as_ref().map(|e| e.correlation_id)
            }))
            .bind(column(requests, |r| {
                r.outbox.as_ref().map(|e| e.body.as_slice())
            }))
            .bind(column(requests, |r| {
                r.outbox.as_ref().map(|e| e.created_at)
            }))
            .bind(self.outbox.lease_seconds())
            .bind(column(requests, |r| {
                r.outbox.as_ref().and_then(OutboxRow::traceparent)
            }))
            .bind(column(requests, |r| {
                r.outbox.as_ref().and_then(OutboxRow::tracestate)
            }))
            .fetch_all(self.db.get_postgres_connection_pool())
            .await
            .map_err(messaging::database::from_sqlx)?;
        let mut rows: std::collections::HashMap<Uuid, RecordRow> =
            rows.into_iter().map(|row| (row.order_id, row)).collect();
        let mut by_order = std::collections::HashMap::with_capacity(rows.len());
        let mut announced = std::collections::HashMap::new();
        for request in requests {
            let Some(RecordRow {
                attempts,
                decision,
                reason,
                decided_at,
                outbox_id,
                ..
            }) = rows.remove(&request.order_id)
            else {
                continue;
            };
            let recorded = match (outbox_id, decision) {
                (Some(outbox_id), _) => {
                    announced.insert(request.order_id, outbox_id);
                    Recorded::Decided
                }
                (None, Some(Stored::Cancelled)) => Recorded::Cancelled,
                // A replayed delivery that failed again: the failure stays in place, and the
                // delivery is retried like any undecided one.
                (None, Some(decided))
                    if request.replayed
                        && request.decision.is_none()
                        && decided == Stored::Verdict(ProcessingStatus::Failed) =>
                {
                    Recorded::Undecided { attempts }
                }
                (None, Some(Stored::Verdict(status))) => Recorded::AlreadyDecided {
                    decision: Decision { status, reason },
                    decided_at,
                },
                (None, None) => Recorded::Undecided { attempts },
            };
            by_order.insert(request.order_id, recorded);
        }
        // Committed: publish the events now.
        let committed = requests
            .iter()
            .filter_map(|request| {
                let id = *announced.get(&request.order_id)?;
                let event = request.outbox.as_ref()?;
                Some(Committed {
                    id,
                    message: event.message(),
                })
            })
            .collect();
        self.outbox.committed(committed).await;
        in_request_order::<Self>(requests, by_order)
    }
}

/// A stored decision: a verdict, or the order's cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    Verdict(ProcessingStatus),
    Cancelled,
}

impl From<DecisionStatus> for Stored {
    fn from(status: DecisionStatus) -> Self {
        status.verdict().map_or(Self::Cancelled, Self::Verdict)
    }
}

/// A row of [`RECORD`]: what one order's processing record holds after the statement.
struct RecordRow {
    order_id: Uuid,
    attempts: i32,
    decision: Option<Stored>,
    reason: Option<String>,
    decided_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The outbox id of the order's `order.processed`, if this statement announced it.
    outbox_id: Option<i64>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for RecordRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            order_id: row.try_get("order_id")?,
            attempts: row.try_get("attempts")?,
            decision: row
                .try_get::<Option<&str>, _>("decision")?
                .map(|name| {
                    DecisionStatus::parse(name)
                        .map(Stored::from)
                        .ok_or_else(|| sqlx::Error::ColumnDecode {
                            index: "decision".into(),
                            source: format!("no such decision: {name:?}").into(),
                        })
                })
                .transpose()?,
            reason: row.try_get("reason")?,
            decided_at: row.try_get("decided_at")?,
            outbox_id: row.try_get("outbox_id")?,
        })
    }
}

/// Records deliveries, one array per column: inserts each order's processing record or counts
/// one more attempt on it (the row lock serialises concurrent duplicates); decides an undecided
/// order (or a failed one on a replayed delivery that reached a decision) and writes its event to
/// the outbox, leased for `$13` seconds to this instance, which publishes it (NULL: no lease, the
/// relay's). Answers, per order, its attempts, its decision and the outbox id of the event if this
/// statement announced it. A replayed delivery that failed again leaves the failure in place, so
/// running out of attempts once more announces nothing new (the writer answers it as undecided,
/// so it is retried like any other).
const RECORD: &str = r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bool[], $4::timestamptz[], $5::text[],
                         $6::text[], $7::uuid[], $8::text[], $9::text[], $10::uuid[], $11::bytea[],
                         $12::timestamptz[], $14::text[], $15::text[])
        AS t (order_id, event_id, replayed, now, decision, reason,
              o_event_id, o_event_type, o_routing_key, o_correlation_id, o_body, o_created_at,
              o_traceparent, o_tracestate)
), record AS (
    INSERT INTO processing (order_id, event_id, attempts, first_seen_at, decision, reason, decided_at)
    SELECT order_id, event_id, 1, now, decision, reason,
           CASE WHEN decision IS NULL THEN NULL ELSE now END
    FROM input
    ON CONFLICT (order_id) DO UPDATE SET
        attempts = processing.attempts + 1,
        decision = CASE WHEN processing.decision IS NULL OR (
                            (SELECT replayed FROM input WHERE input.order_id = EXCLUDED.order_id)
                            AND processing.decision = 'failed' AND EXCLUDED.decision IS NOT NULL)
                        THEN EXCLUDED.decision ELSE processing.decision END,
        reason = CASE WHEN processing.decision IS NULL OR (
                          (SELECT replayed FROM input WHERE input.order_id = EXCLUDED.order_id)
                          AND processing.decision = 'failed' AND EXCLUDED.decision IS NOT NULL)
                      THEN EXCLUDED.reason ELSE processing.reason END,
        decided_at = CASE WHEN processing.decision IS NULL OR (
                              (SELECT replayed FROM input WHERE input.order_id = EXCLUDED.order_id)
                              AND processing.decision = 'failed' AND EXCLUDED.decision IS NOT NULL)
                          THEN EXCLUDED.decided_at ELSE processing.decided_at END
    RETURNING order_id, attempts, decision, reason, decided_at
), announced AS (
    INSERT INTO outbox (event_id, event_type, routing_key, correlation_id, body, created_at,
                        leased_until, traceparent, tracestate)
    SELECT i.o_event_id, i.o_event_type, i.o_routing_key, i.o_correlation_id, i.o_body, i.o_created_at,
           now() + $13::float8 * interval '1 second', i.o_traceparent, i.o_tracestate
    FROM input i JOIN record r ON r.order_id = i.order_id
    WHERE i.decision IS NOT NULL AND r.decided_at = i.now
    RETURNING id, correlation_id
)
SELECT r.order_id, r.attempts, r.decision, r.reason, r.decided_at, a.id AS outbox_id
FROM record r LEFT JOIN announced a ON a.correlation_id = r.order_id
"#;

/// Records a failed order unless another decision is recorded: inserts its processing record, or
/// decides an undecided one. Returns a row only if this statement decided.
const RECORD_FAILURE: &str = r#"
INSERT INTO processing (order_id, event_id, attempts, first_seen_at, decision, reason, decided_at)
VALUES ($1, $2, 1, $3, 'failed', $4, $3)
ON CONFLICT (order_id) DO UPDATE SET
    decision = EXCLUDED.decision, reason = EXCLUDED.reason, decided_at = EXCLUDED.decided_at
WHERE processing.decision IS NULL
RETURNING order_id
"#;

/// Cancels an order: its record says `cancelled` whatever it said (the order service cancels only
/// an order it holds pending, so a verdict it never applied is superseded), inserted with no
/// attempts if no delivery of its `order.created` came first. Answers the decision it replaced.
const RECORD_CANCELLATION: &str = r#"
WITH before AS (
    SELECT decision FROM processing WHERE order_id = $1 FOR UPDATE
)
INSERT INTO processing (order_id, event_id, attempts, first_seen_at, decision, reason, decided_at)
VALUES ($1, $1, 0, $2, 'cancelled', 'cancelled in the order service', $2)
ON CONFLICT (order_id) DO UPDATE SET
    decision = EXCLUDED.decision, reason = EXCLUDED.reason, decided_at = EXCLUDED.decided_at
WHERE processing.decision IS DISTINCT FROM 'cancelled'
RETURNING (SELECT decision FROM before) AS superseded
"#;

/// What recording a failure found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureRecorded {
    /// The order's record says `failed` (and its `order.processed` is in the outbox).
    Failed,
    /// Another delivery decided the order otherwise first, or it was cancelled (`None`: the
    /// record was found undecided, which a concurrent decision rules out).
    DecidedOtherwise(Option<DecisionStatus>),
}

/// What recording a cancellation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancellationRecorded {
    /// The record says `cancelled` now; it said `superseded` before (`None`: undecided or absent).
    Cancelled { superseded: Option<DecisionStatus> },
    /// It said so already (a duplicate).
    AlreadyCancelled,
}

#[derive(Clone)]
pub struct ProcessingStore {
    db: DatabaseConnection,
    /// The read-only pool of the API's reads ([`messaging::database::connect_reads`]).
    reads: DatabaseConnection,
    outbox: Handoff,
    recorder: GroupWriter<RecordWriter>,
}

/// Records written together at most.
const MAX_GROUP: usize = 256;
/// Statements in flight at once: one keeps groups large, which measured faster on 2 cores
/// (BENCHMARKS.md) than 4 smaller ones in parallel.
const WRITERS: usize = 1;

impl ProcessingStore {
    /// Also starts the group writer of processing records, which waits up to `linger` for other
    /// deliveries to share a statement.
    pub fn new(
        db: DatabaseConnection,
        reads: DatabaseConnection,
        outbox: Handoff,
        linger: Duration,
    ) -> Self {
        let recorder = GroupWriter::start(
            RecordWriter {
                db: db.clone(),
                outbox: outbox.clone(),
            },
            Grouping::new(MAX_GROUP, WRITERS).linger(linger),
        );
        Self {
            db,
            reads,
            outbox,
            recorder,
        }
    }

    /// Records a delivery of `event_id` for `order_id` and, given a `decision`, decides the
    /// order, in one statement shared with the other deliveries recorded at the same time (one
    /// round trip, one commit): the record is inserted or its `attempts` incremented (the row lock
    /// this takes serialises concurrent duplicates); if no earlier delivery decided the order, the
    /// decision is set and its `order.processed` event written to the outbox. A `replayed`
    /// delivery of a failed order replaces the failure.
    pub async fn record(
        &self,
        order_id: Uuid,
        event_id: Uuid,
        replayed: bool,
        decision: Option<&Decision>,
    ) -> Result<Recorded, StoreError> {
        let now = chrono::Utc::now().trunc_subsecs(6);
        let event = decision.map(|decision| processed_event(order_id, decision, now));
        let outbox = match &event {
            Some(event) => Some(OutboxRow::new(event).map_err(OutboxError::from)?),
            None => None,
        };
        let recorded = self
            .recorder
            .write(RecordRequest {
                order_id,
                event_id,
                replayed,
                now,
                decision: decision.cloned(),
                outbox,
            })
            .await?;
        if let (Recorded::Decided, Some(event)) = (&recorded, &event) {
            log_decided(event);
        }
        Ok(recorded)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// Records that `order_id` failed (its last attempt did), with `reason`, and its
    /// `order.processed`, in one transaction: the processing record is created if no delivery
    /// managed to write it. Answers what the order's record says afterwards: `failed` (by this
    /// call or an earlier one), or another decision that a concurrent delivery made.
    pub async fn record_failure(
        &self,
        order_id: Uuid,
        event_id: Uuid,
        reason: &str,
    ) -> Result<FailureRecorded, StoreError> {
        let decision = Decision {
            status: ProcessingStatus::Failed,
            reason: Some(reason.to_owned()),
        };
        let now = chrono::Utc::now().trunc_subsecs(6);
        let txn = self.db.begin().await?;
        let backend = txn.get_database_backend();
        let decided = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                RECORD_FAILURE,
                [order_id.into(), event_id.into(), now.into(), reason.into()],
            ))
            .await?
            .is_some();
        if decided {
            let event = processed_event(order_id, &decision, now);
            outbox::enqueue(&txn, &event).await?;
            txn.commit().await?;
            log_decided(&event);
            // Written without a lease: the relay claims it.
            self.outbox.wake();
            return Ok(FailureRecorded::Failed);
        }
        let current = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT decision FROM processing WHERE order_id = $1",
                [order_id.into()],
            ))
            .await?
            .map(|row| row.try_get::<Option<DecisionStatus>>("", "decision"))
            .transpose()?
            .flatten();
        txn.commit().await?;
        Ok(match current {
            Some(DecisionStatus::Failed) => FailureRecorded::Failed,
            // Not written by this statement, so another decided it: `None` cannot be.
            decision => FailureRecorded::DecidedOtherwise(decision),
        })
    }

    /// Announces an order's recorded decision again (a new `order.processed`, through the
    /// outbox): a duplicate `order.created` of a decided order may mean the order service never
    /// got the first announcement (reconciliation sent it), and applying one twice changes
    /// nothing there.
    pub async fn announce_again(
        &self,
        order_id: Uuid,
        decision: &Decision,
        decided_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let event = processed_event(order_id, decision, decided_at);
        outbox::enqueue(&self.db, &event).await?;
        self.outbox.wake();
        tracing::info!(
            order_id = %order_id,
            event_id = %event.event_id,
            decision = decision.status.as_str(),
            "order already decided; its order.processed queued in the outbox again"
        );
        Ok(())
    }

    /// Records that the order service cancelled `order_id` ([`RECORD_CANCELLATION`]).
    pub async fn record_cancellation(
        &self,
        order_id: Uuid,
        cancelled_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<CancellationRecorded, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                RECORD_CANCELLATION,
                [order_id.into(), cancelled_at.trunc_subsecs(6).into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(CancellationRecorded::AlreadyCancelled);
        };
        let superseded = row.try_get::<Option<DecisionStatus>>("", "superseded")?;
        Ok(CancellationRecorded::Cancelled { superseded })
    }

    pub async fn get(&self, order_id: Uuid) -> Result<Option<processing::Model>, StoreError> {
        Ok(processing::Entity::find_by_id(order_id)
            .one(&self.reads)
            .await?)
    }
}

/// The `order.processed` event announcing `decision`.
fn processed_event(
    order_id: Uuid,
    decision: &Decision,
    at: chrono::DateTime<chrono::Utc>,
) -> Envelope<OrderProcessed> {
    Envelope::new(
        order_id,
        OrderProcessed {
            order_id,
            status: decision.status,
            reason: decision.reason.clone(),
            processed_at: at,
        },
    )
}

/// Logged once the decision and its event are committed.
fn log_decided(event: &Envelope<OrderProcessed>) {
    tracing::info!(
        order_id = %event.payload.order_id,
        event_id = %event.event_id,
        decision = event.payload.status.as_str(),
        "order decided, order.processed queued in the outbox"
    );
}
