//! The contracts of the order pipeline on the broker: the versioned event envelope, the
//! events, the routing keys they travel under, the default names of the exchanges and queues,
//! and the headers of the failure path. A client of the broker (another service, a load
//! generator, an operator's script) needs this crate and nothing of the services.

pub mod events;

/// The routing keys of the events on the topic exchange.
pub mod routing_keys {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_PROCESSED: &str = "order.processed";
}

/// The default names of the exchanges and queues (each service can rename them).
///
/// ```text
/// order_service --order.created, order.cancelled--> [orders: topic]
///     --order.created, order.cancelled--> processor.order-created --> processor_service
/// processor_service --order.processed--> [orders] --order.processed--> order-service.order-processed --> order_service
///
/// a queue's rejected message --> [orders.dlx: topic] --order.created, order.cancelled--> processor.order-created.dlq
///                                                  --order.processed--> order-service.order-processed.dlq
/// ```
pub mod topology {
    /// The durable topic exchange both events are published to.
    pub const EXCHANGE: &str = "orders";
    /// The topic exchange the work queues dead-letter to.
    pub const DEAD_LETTER_EXCHANGE: &str = "orders.dlx";
    /// The processor's work queue, bound to `order.created` and `order.cancelled`: one queue, so
    /// that an order's cancellation queues behind its creation.
    pub const ORDER_CREATED_QUEUE: &str = "processor.order-created";
    /// The order service's queue, bound to `order.processed`.
    pub const ORDER_PROCESSED_QUEUE: &str = "order-service.order-processed";
    pub const ORDER_CREATED_DEAD_LETTER_QUEUE: &str = "processor.order-created.dlq";
    pub const ORDER_PROCESSED_DEAD_LETTER_QUEUE: &str = "order-service.order-processed.dlq";
}

/// The AMQP headers of the failure path. A message that failed carries why and how often; a
/// dead-lettered one carries enough for an operator to decide what to do with it without
/// decoding the body.
pub mod headers {
    /// Number of the delivery this message is on its way to (1 for the first; absent means 1).
    pub const ATTEMPT: &str = "x-attempt";
    /// Why the message failed last.
    pub const FAILURE_REASON: &str = "x-failure-reason";
    /// Deliveries the message had when it was dead-lettered.
    pub const ATTEMPTS: &str = "x-attempts";
    /// RFC 3339 times of the first and the last failure.
    pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
    pub const LAST_FAILED_AT: &str = "x-last-failed-at";
    /// The routing key the message was first published with.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// The order a dead-lettered message is about; absent for poison messages.
    pub const ORDER_ID: &str = "x-order-id";
    /// Set on a message that could never be processed (not JSON, wrong schema, ...).
    pub const POISON: &str = "x-poison";
    /// Set on a message an operator replayed from the dead-letter queue, with the time.
    pub const REPLAYED_AT: &str = "x-replayed-at";
}
