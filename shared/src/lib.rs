//! What both services share: the event contracts (re-exported from the `contracts` crate), the
//! AMQP topology, the broker connection with
//! publisher confirms, the consumer loop, the transactional outbox and its relay, configuration
//! loading, telemetry, database set-up and the HTTP plumbing (problem details, health checks).

pub mod batch;
pub mod broker;
pub mod configuration;
pub mod consumer;
pub mod database;
pub mod dead_letters;
pub mod disclose;
/// The event contracts (the `contracts` crate).
pub use contracts::events;
pub mod failure;
pub mod headers;
pub mod http;
pub mod outbox;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod topology;
