//! Consuming the work queue: an `order.created` is claimed, decided by the rules (retrying
//! transient failures in process), and its verdict written with its event; an `order.cancelled`
//! is recorded, so that the order is never decided (or its verdict is superseded). What the
//! consumer loop does with each outcome (retry queues, dead letters) is in `messaging::consumer`.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use contracts::events::{Envelope, OrderCancelled, OrderCreated, OrderWork, ProcessingStatus};
use messaging::consumer::{Delivered, Exhausted, Handler, Outcome};
use rust_decimal::Decimal;

use crate::domain::{self, Decision};
use crate::entities::processing::DecisionStatus;
use crate::store::{CancellationRecorded, FailureRecorded, ProcessingStore, Recorded};

/// How the handler processes one order.
#[derive(Clone, Debug)]
pub struct ProcessingSettings {
    pub max_order_total: Decimal,
    pub work_delay: Duration,
    /// Tries per delivery, in process.
    pub immediate_attempts: u32,
    /// Probability that one try fails transiently (fault injection).
    pub transient_failure_rate: f64,
    /// Panic on any order of this customer (fault injection).
    pub panic_for_customer: Option<String>,
    /// Counts the tries repeated in process.
    pub in_process_retries: messaging::meter::Counter,
}

pub struct WorkHandler {
    store: ProcessingStore,
    settings: ProcessingSettings,
}

/// A failure that may pass if tried again.
#[derive(Debug, thiserror::Error)]
#[error("transient failure: {0}")]
pub struct TransientFailure(String);

impl WorkHandler {
    pub fn new(store: ProcessingStore, settings: ProcessingSettings) -> Self {
        Self { store, settings }
    }

    /// One try at the work: the (simulated) work itself, where a dependency could fail.
    #[tracing::instrument(name = "decide", skip_all, fields(order_id = %order.order_id))]
    async fn process_once(&self, order: &OrderCreated) -> Result<Decision, TransientFailure> {
        if !self.settings.work_delay.is_zero() {
            tokio::time::sleep(self.settings.work_delay).await;
        }
        if self
            .settings
            .panic_for_customer
            .as_ref()
            .is_some_and(|customer| *customer == order.customer_id)
        {
            panic!("injected panic for customer {}", order.customer_id);
        }
        if self.settings.transient_failure_rate > 0.0
            && fastrand::f64() < self.settings.transient_failure_rate
        {
            return Err(TransientFailure("injected transient failure".into()));
        }
        Ok(domain::decide(order, self.settings.max_order_total))
    }
}

impl WorkHandler {
    /// A message that can never succeed, about an order it names: the order fails (with its
    /// `order.processed`), then the message is dead-lettered.
    async fn fail_now(&self, delivery: &Delivered<OrderWork>, reason: String) -> Outcome {
        let envelope = &delivery.envelope;
        match self
            .store
            .record_failure(envelope.correlation_id, envelope.event_id, &reason)
            .await
        {
            Ok(FailureRecorded::Failed) => Outcome::DeadLetter { reason },
            Ok(FailureRecorded::DecidedOtherwise(_)) => Outcome::Ack,
            Err(error) => Outcome::from_failure(&error),
        }
    }

    /// A delivery of an order decided before. Its decision is announced again, since the order
    /// service may have lost the first announcement (this is how reconciliation ends it). A
    /// failed order's copy is dead-lettered again too, under the same `message_id` (a crash or a
    /// lost channel came between recording the failure and the dead letter, or the message was
    /// put back by hand); listing and replay count copies once.
    async fn already_decided(
        &self,
        delivery: &Delivered<OrderWork>,
        decision: Decision,
        decided_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Outcome {
        let order_id = delivery.envelope.correlation_id;
        let at = decided_at.unwrap_or_else(chrono::Utc::now);
        if let Err(error) = self.store.announce_again(order_id, &decision, at).await {
            return Outcome::from_failure(&error);
        }
        if decision.status == ProcessingStatus::Failed && !delivery.replayed {
            return Outcome::DeadLetter {
                reason: decision.reason.unwrap_or_else(|| "the order failed".into()),
            };
        }
        Outcome::Ack
    }

    /// An `order.cancelled`: recorded as the order's decision `cancelled`, superseding a verdict
    /// the order service never applied (it cancels only a pending order).
    async fn cancelled(
        &self,
        envelope: &Envelope<OrderWork>,
        cancelled: &OrderCancelled,
    ) -> Outcome {
        match self
            .store
            .record_cancellation(cancelled.order_id, cancelled.cancelled_at)
            .await
        {
            Ok(CancellationRecorded::Cancelled { superseded }) => {
                tracing::info!(
                    order_id = %cancelled.order_id,
                    event_id = %envelope.event_id,
                    superseded = superseded.map_or("nothing", DecisionStatus::as_str),
                    "order cancelled; it will not be decided"
                );
                Outcome::Ack
            }
            Ok(CancellationRecorded::AlreadyCancelled) => Outcome::Ack,
            Err(error) => Outcome::from_failure(&error),
        }
    }

    async fn created(&self, delivery: &Delivered<OrderWork>, order: &OrderCreated) -> Outcome {
        let envelope = &delivery.envelope;
        if let Err(reason) = domain::check_total(order) {
            // It names its order, so the order's outcome is recorded before it is dead-lettered.
            return self.fail_now(delivery, reason).await;
        }
        // The work first, outside any transaction: it is deterministic, so doing it for a
        // duplicate costs little, and no connection is held while it runs or retries.
        let tries = self.settings.immediate_attempts.max(1) as usize;
        let processed = (|| self.process_once(order))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(10))
                    .with_max_delay(Duration::from_millis(500))
                    .with_max_times(tries - 1)
                    .with_jitter(),
            )
            .notify(|error, delay| {
                self.settings.in_process_retries.increment(1);
                tracing::info!(
                    order_id = %order.order_id,
                    event_id = %envelope.event_id,
                    %error,
                    ?delay,
                    "processing failed; trying again in process"
                );
            })
            .await;
        let recorded = self
            .store
            .record(
                order.order_id,
                envelope.event_id,
                delivery.replayed,
                processed.as_ref().ok(),
            )
            .await;
        match (recorded, processed) {
            (Ok(Recorded::Decided), _) => Outcome::Ack,
            (
                Ok(Recorded::AlreadyDecided {
                    decision,
                    decided_at,
                }),
                _,
            ) => self.already_decided(delivery, decision, decided_at).await,
            (Ok(Recorded::Undecided { .. }), Err(error)) => Outcome::Retry {
                reason: error.to_string(),
            },
            (Ok(Recorded::Undecided { .. }), Ok(_)) => Outcome::Retry {
                reason: "the decision was not recorded".into(),
            },
            (Ok(Recorded::Cancelled), _) => {
                tracing::info!(order_id = %order.order_id, event_id = %envelope.event_id, "order cancelled before it was decided; not processed");
                Outcome::Ack
            }
            (Err(error), _) => Outcome::from_failure(&error),
        }
    }
}

impl Handler for WorkHandler {
    type Event = OrderWork;

    async fn handle(&self, delivery: &Delivered<OrderWork>) -> Outcome {
        match &delivery.envelope.payload {
            OrderWork::Created(order) => self.created(delivery, order).await,
            OrderWork::Cancelled(cancelled) => self.cancelled(&delivery.envelope, cancelled).await,
        }
    }

    /// After the last attempt: the order fails, and exactly one `order.processed` says so; both
    /// are committed before the message may be dead-lettered.
    /// A cancellation out of attempts is dead-lettered as it is (a replay records it).
    async fn exhausted(
        &self,
        envelope: &Envelope<OrderWork>,
        reason: &str,
        _attempts: u32,
    ) -> Result<Exhausted, String> {
        if let OrderWork::Cancelled(_) = envelope.payload {
            return Ok(Exhausted::Recorded);
        }
        let recorded = self
            .store
            .record_failure(envelope.correlation_id, envelope.event_id, reason)
            .await
            .map_err(|error| error.to_string())?;
        Ok(match recorded {
            FailureRecorded::Failed => Exhausted::Recorded,
            FailureRecorded::DecidedOtherwise(decision) => {
                tracing::info!(
                    order_id = %envelope.correlation_id,
                    event_id = %envelope.event_id,
                    decision = decision.map_or("undecided", DecisionStatus::as_str),
                    "out of attempts, but another delivery decided the order; acknowledged"
                );
                Exhausted::DecidedOtherwise
            }
        })
    }

    async fn ready(&self) -> bool {
        self.store.ping().await
    }
}
