//! Integration tests of the processor against the real PostgreSQL and RabbitMQ. Each test starts
//! the service through `helpers::spawn_app`, with its own database and broker names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cancellation;
mod configuration;
mod dead_letters;
mod helpers;
mod http;
mod outages;
mod processing;
