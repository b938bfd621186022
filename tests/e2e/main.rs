//! The pipeline end to end: an order posted over HTTP goes through RabbitMQ to the processor and
//! back, against the real PostgreSQL and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod broker_stalls;
mod cancellation;
mod chaos;
mod cluster;
mod deployment;
mod failures;
mod fuzz;
mod helpers;
mod live;
mod migration;
mod observability;
mod page;
mod pipeline;
mod processes;
mod quorum;
mod reads;
mod reconciliation;
mod replicas;
mod traces;
