//! loadgen: drives the order pipeline over HTTP and measures it, and measures what the broker and
//! the database alone can do on the same machine.
//!
//! - `loadgen run`: posts orders (closed loop with `--concurrency`, or open loop with `--rate`),
//!   follows each one to its final status through a private queue bound to `order.processed`, and
//!   reports throughput, latency percentiles (HDR histograms), status counts, lost or stuck orders
//!   the services' peak RSS, and the CPU each program spent per order.
//! - `loadgen limits`: RabbitMQ persistent publish-with-confirms + consume-with-ack through a
//!   durable queue, and PostgreSQL single-row insert commits with 8 connections.
//! - `loadgen bench`: `limits`, then the maximum closed-loop throughput, then open loop at 25% and
//!   50% of it, with the ratios to the limits and, at 25%, to the maximum's CPU per order and to
//!   the latency floors (`ratios`).
//! - `loadgen seed`: bulk-loads history into the order service's database.

pub mod cli;
pub mod cpu;
pub mod follow;
pub mod limits;
pub mod orders;
pub mod plot;
pub mod ratios;
pub mod report;
pub mod rss;
pub mod run;
pub mod schedule;
pub mod seed;
pub mod tokens;
