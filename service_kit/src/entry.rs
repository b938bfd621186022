//! What a service's `main` does: with no subcommand, start the service (logs and traces, its
//! settings, a runtime built from them, SIGTERM/SIGINT as a clean stop) and run it until it stops;
//! with one, run the command (`dead-letters`, `queues`, `dev-token`) and print its output. Each binary's
//! `main.rs` names its [`Entry`] and calls [`run`].

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::configuration::{AuthSettings, RuntimeSettings};
use crate::dead_letters::cli::{ServiceCli, ServiceCommand, ServiceQueues};
use crate::service::Service;
use crate::telemetry::{LogFormat, command_subscriber, init_subscriber};

/// A service, as its binary starts it.
pub trait Entry {
    /// The binary's and the logs' name.
    const NAME: &'static str;
    /// The prefix of its environment variables.
    const ENV_PREFIX: &'static str;
    type Settings;

    /// The process's arguments.
    fn parse() -> ServiceCli;
    /// Loads and checks the settings.
    fn load() -> anyhow::Result<Self::Settings>;
    fn runtime(settings: &Self::Settings) -> &RuntimeSettings;
    fn auth(settings: &Self::Settings) -> &AuthSettings;
    /// Builds the service from its settings (`startup::build`).
    fn build(settings: Self::Settings) -> impl Future<Output = anyhow::Result<Service>>;
    /// The queues the service consumes, for its `dead-letters` and `queues` commands.
    fn queues(settings: &Self::Settings) -> anyhow::Result<ServiceQueues>;
}

/// The whole of a service's `main`.
pub fn run<E: Entry>() -> anyhow::Result<()> {
    let Some(command) = E::parse().command else {
        let tracing = crate::telemetry::init(E::NAME, std::io::stdout)?;
        let settings = E::load()?;
        // Built from the settings, so not `#[tokio::main]`.
        let stopped = E::runtime(&settings).build()?.block_on(async {
            // Before anything binds: a SIGTERM during start-up is a clean stop too.
            let shutdown = CancellationToken::new();
            crate::signals::cancel_on_signal(shutdown.clone());
            let application = E::build(settings).await?;
            application.run_until_stopped(shutdown).await
        });
        // The last spans are exported before the process ends.
        if let Some(tracing) = tracing {
            tracing.shutdown();
        }
        return stopped;
    };
    // Logs go to stderr: stdout is the command's output.
    init_subscriber(command_subscriber(
        E::NAME,
        LogFormat::from_env(),
        std::io::stderr,
    ))?;
    let settings = E::load()?;
    let output = match command {
        ServiceCommand::DeadLetters(command) => {
            E::runtime(&settings)
                .build()?
                .block_on(crate::dead_letters::cli::run(
                    E::queues(&settings)?,
                    command,
                ))?
        }
        ServiceCommand::Queues(command) => {
            E::runtime(&settings)
                .build()?
                .block_on(crate::dead_letters::cli::run_queues(
                    E::queues(&settings)?,
                    command,
                ))?
        }
        ServiceCommand::DevToken(args) => {
            crate::auth::dev::run(E::auth(&settings), E::ENV_PREFIX, &args)?
        }
    };
    println!("{output}");
    Ok(())
}
