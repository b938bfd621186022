//! Integration tests of the order service against the real PostgreSQL and RabbitMQ. Each test
//! starts the service through `helpers::spawn_app`, with its own database and broker names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod brokers;
mod cancel;
mod configuration;
mod dead_letters;
mod health;
mod helpers;
mod hygiene;
mod idempotency;
mod listing;
mod live;
mod metrics;
mod openapi;
mod orders;
mod outages;
mod outbox;
mod overload;
mod page;
mod processed;
mod reconcile;
mod stats;
mod tls;
mod validation;
