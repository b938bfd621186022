//! The messaging layer of the pipeline: the broker connection with publisher confirms, the AMQP
//! topology, the consumer loop with its retries and dead letters, the transactional outbox and its
//! relay, the group writer that batches commits, and what they rest on (their settings, the
//! database pools, the classification of failures and what a failure may say outside the
//! process).

pub mod batch;
pub mod broker;
pub mod consumer;
pub mod database;
pub mod disclose;
pub mod failure;
pub mod headers;
pub mod meter;
pub mod migrate;
pub mod outbox;
pub mod settings;
pub mod shutdown;
pub mod topology;
pub mod trace;
pub mod turn;

/// The event contracts (the `contracts` crate).
pub use contracts::events;
