//! Consuming `order.processed`: the processor's verdict moves the order to its final status.

use contracts::events::OrderProcessed;
use messaging::consumer::{Delivered, Handler, Outcome};

use crate::store::{Applied, OrderStore};

pub struct OrderProcessedHandler {
    store: OrderStore,
}

impl OrderProcessedHandler {
    pub fn new(store: OrderStore) -> Self {
        Self { store }
    }
}

impl Handler for OrderProcessedHandler {
    type Event = OrderProcessed;

    async fn handle(&self, delivery: &Delivered<OrderProcessed>) -> Outcome {
        let envelope = &delivery.envelope;
        let event = &envelope.payload;
        match self.store.apply_processed(event).await {
            Ok(Applied::Moved { from_final }) => {
                tracing::info!(
                    order_id = %event.order_id,
                    event_id = %envelope.event_id,
                    status = event.status.as_str(),
                    from_final,
                    "order status updated"
                );
                Outcome::Ack
            }
            Ok(Applied::Ignored) => {
                tracing::info!(
                    order_id = %event.order_id,
                    event_id = %envelope.event_id,
                    status = event.status.as_str(),
                    "duplicate or late order.processed ignored"
                );
                Outcome::Ack
            }
            Ok(Applied::UnknownOrder) => Outcome::DeadLetter {
                reason: format!("order {} does not exist", event.order_id),
            },
            Err(error) => Outcome::from_failure(&error),
        }
    }

    async fn ready(&self) -> bool {
        self.store.db().ping().await.is_ok()
    }
}
