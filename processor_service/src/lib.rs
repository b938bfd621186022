//! processor_service: consumes `order.created` idempotently, decides each order once by the
//! business rules, and publishes `order.processed` through its own outbox.

pub mod api_doc;
pub mod cli;
pub mod configuration;
pub mod domain;
pub mod entities;
pub mod messaging;
pub mod routes;
pub mod startup;
pub mod store;
