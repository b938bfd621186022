//! order_service: takes orders over HTTP, stores each with its `order.created` event in one
//! transaction (the outbox), relays the events to RabbitMQ with publisher confirms, and applies the
//! processor's `order.processed` verdicts.

pub mod api_doc;
pub mod cli;
pub mod configuration;
pub mod domain;
pub mod entities;
pub mod figures;
pub mod idempotency;
pub mod live;
pub mod messaging;
pub mod metrics;
pub mod reconcile;
pub mod routes;
pub mod startup;
pub mod store;
