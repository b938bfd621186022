//! Consuming `order.created`: claim, decide by the rules, write the verdict and its event.

use std::time::Duration;

use rust_decimal::Decimal;
use shared::consumer::{Handler, Outcome};
use shared::events::{Envelope, OrderCreated};

use crate::domain;
use crate::store::{Claim, ProcessingStore};

pub struct OrderCreatedHandler {
    store: ProcessingStore,
    max_order_total: Decimal,
    work_delay: Duration,
}

impl OrderCreatedHandler {
    pub fn new(store: ProcessingStore, max_order_total: Decimal, work_delay: Duration) -> Self {
        Self {
            store,
            max_order_total,
            work_delay,
        }
    }
}

impl Handler for OrderCreatedHandler {
    type Event = OrderCreated;

    async fn handle(&self, envelope: Envelope<OrderCreated>) -> Outcome {
        let order = &envelope.payload;
        if order.order_id != envelope.correlation_id {
            return Outcome::DeadLetter {
                reason: format!(
                    "payload order_id {} differs from correlation_id {}",
                    order.order_id, envelope.correlation_id
                ),
            };
        }
        if let Err(reason) = domain::check_total(order) {
            return Outcome::DeadLetter { reason };
        }
        match self.store.claim(order.order_id, envelope.event_id).await {
            Ok(Claim::Decided) => {
                tracing::info!("order already decided; duplicate delivery acknowledged");
                return Outcome::Ack;
            }
            Ok(Claim::Undecided { attempts }) => {
                tracing::debug!(attempts, "processing order");
            }
            Err(error) => {
                return Outcome::Requeue {
                    reason: error.to_string(),
                };
            }
        }
        if !self.work_delay.is_zero() {
            tokio::time::sleep(self.work_delay).await;
        }
        let decision = domain::decide(order, self.max_order_total);
        match self.store.decide(order.order_id, &decision).await {
            Ok(true) => Outcome::Ack,
            Ok(false) => {
                tracing::info!("another delivery decided this order first");
                Outcome::Ack
            }
            Err(error) => Outcome::Requeue {
                reason: error.to_string(),
            },
        }
    }
}
