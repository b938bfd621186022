//! The order service's own metrics: orders created, orders that reached a final status, and the
//! time from creation to the final status (the pipeline's service level, observed when the
//! verdict is applied).

use std::time::Duration;

use messaging::meter::{Counter, Histogram, Meter, observe};

use crate::domain::OrderStatus;

#[derive(Clone, Debug)]
pub struct OrderMetrics {
    created: Counter,
    /// By final status: completed, rejected, failed, cancelled.
    finalized: [(Counter, Histogram); 4],
}

const FINAL: [OrderStatus; 4] = [
    OrderStatus::Completed,
    OrderStatus::Rejected,
    OrderStatus::Failed,
    OrderStatus::Cancelled,
];

impl OrderMetrics {
    pub fn new(meter: &Meter) -> Self {
        Self {
            created: meter.counter(
                "orders_created_total",
                "Orders accepted and stored (a replayed Idempotency-Key is not counted again).",
                &[],
            ),
            finalized: FINAL.map(|status| {
                let label = [("status", status.as_str().to_owned())];
                (
                    meter.counter(
                        "orders_finalized_total",
                        "Orders that reached a final status, by status (a failed order replayed to completion counts again).",
                        &label,
                    ),
                    meter.histogram(
                        "orders_create_to_final_seconds",
                        "Time from an order's creation to its final status, by status.",
                        &label,
                    ),
                )
            }),
        }
    }

    pub fn disabled() -> Self {
        Self::new(&Meter::disabled())
    }

    pub fn created(&self, orders: usize) {
        self.created.increment(orders as u64);
    }

    /// An order reached `status`, `elapsed` after its creation; a non-final status is ignored.
    pub fn finalized(&self, status: OrderStatus, elapsed: Duration) {
        if let Some(index) = FINAL.iter().position(|candidate| *candidate == status) {
            let (count, duration) = &self.finalized[index];
            count.increment(1);
            observe(duration, elapsed);
        }
    }
}
