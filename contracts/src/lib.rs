//! The contracts of the order pipeline on the broker: the versioned event envelope, the two
//! events, and the routing keys they travel under. A client of the broker (another service, a
//! load generator) needs this crate and nothing of the services.

pub mod events;

/// The routing keys of the two events on the topic exchange.
pub mod routing_keys {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_PROCESSED: &str = "order.processed";
}
