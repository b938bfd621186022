//! What makes a service of the pipeline, around its domain: layered configuration, telemetry,
//! the HTTP plumbing (problem details, health and readiness, request hygiene, Swagger UI), the
//! identities of callers, the operator's dead-letter tools (HTTP and command line), signal handling, and the runner that
//! builds a service from its settings and stops it gracefully.

pub mod audit;
pub mod auth;
pub mod configuration;
pub mod dead_letters;
pub mod entry;
pub mod http;
pub mod prometheus;
pub mod service;
pub mod signals;
pub mod telemetry;
