//! The command line: `processor_service` runs the service; `processor_service dead-letters ...` lets an operator
//! without HTTP access list and replay the dead letters of `order.created`, and
//! `processor_service queues migrate` moves its queues to the configured kind
//! (`service_kit::dead_letters::cli`).

use service_kit::configuration::{AuthSettings, RuntimeSettings};
use service_kit::dead_letters::cli::{ServiceCli, ServiceQueues};
use service_kit::entry::Entry;
use service_kit::service::Service;

use crate::configuration::{ENV_PREFIX, Settings};

/// The binary: `service_kit::entry::run::<ProcessorService>()`.
pub struct ProcessorService;

impl Entry for ProcessorService {
    const NAME: &'static str = "processor_service";
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
        "processor_service",
        "Decides orders from order.created events; with no subcommand, runs the service",
    )
}

/// The queues this service consumes, with the configured broker.
pub fn queues(settings: &Settings) -> anyhow::Result<ServiceQueues> {
    Ok(ServiceQueues {
        urls: settings.amqp.addresses(),
        topology: settings.amqp.topology.clone(),
        work_queue: settings.amqp.topology.order_created_queue.clone(),
        dead_letter_queue: settings
            .amqp
            .topology
            .order_created_dead_letter_queue
            .clone(),
        retry: settings.retry_tiers(),
        heartbeat_seconds: settings.amqp.heartbeat_seconds(),
        tls: settings.amqp.tls(ENV_PREFIX)?,
        connection_name: "processor_service-cli",
    })
}
