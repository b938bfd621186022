//! The command line: `order_service` runs the service; `order_service dead-letters ...` lets an operator
//! without HTTP access list and replay the dead letters of `order.processed`, and
//! `order_service queues migrate` moves its queues to the configured kind
//! (`service_kit::dead_letters::cli`).

use service_kit::configuration::{AuthSettings, RuntimeSettings};
use service_kit::dead_letters::cli::{ServiceCli, ServiceQueues};
use service_kit::entry::Entry;
use service_kit::service::Service;

use crate::configuration::{ENV_PREFIX, Settings};

/// The binary: `service_kit::entry::run::<OrderService>()`.
pub struct OrderService;

impl Entry for OrderService {
    const NAME: &'static str = "order_service";
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    type Settings = Settings;

    fn parse() -> ServiceCli {
        parse()
    }

    fn load() -> anyhow::Result<Settings> {
        Ok(Settings::load()?)
    }

    fn runtime(settings: &Settings) -> &RuntimeSettings {
        &settings.runtime
    }

    fn auth(settings: &Settings) -> &AuthSettings {
        &settings.auth
    }

    async fn build(settings: Settings) -> anyhow::Result<Service> {
        crate::startup::build(settings).await
    }

    fn queues(settings: &Settings) -> anyhow::Result<ServiceQueues> {
        queues(settings)
    }
}

/// The process's arguments.
pub fn parse() -> ServiceCli {
    ServiceCli::parse_as(
        "order_service",
        "Takes orders over HTTP and applies their order.processed verdicts; with no subcommand, runs the service",
    )
}

/// The queues this service consumes, with the configured broker.
pub fn queues(settings: &Settings) -> anyhow::Result<ServiceQueues> {
    Ok(ServiceQueues {
        urls: settings.amqp.addresses(),
        topology: settings.amqp.topology.clone(),
        work_queue: settings.amqp.topology.order_processed_queue.clone(),
        dead_letter_queue: settings
            .amqp
            .topology
            .order_processed_dead_letter_queue
            .clone(),
        retry: settings.retry_tiers(),
        heartbeat_seconds: settings.amqp.heartbeat_seconds(),
        tls: settings.amqp.tls(ENV_PREFIX)?,
        connection_name: "order_service-cli",
    })
}
