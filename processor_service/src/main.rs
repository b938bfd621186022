use processor_service::configuration::{ENV_PREFIX, Settings};
use processor_service::startup;
use service_kit::dead_letters::cli::ServiceCommand;
use service_kit::telemetry::{LogFormat, get_subscriber, init_subscriber};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let Some(command) = processor_service::cli::parse().command else {
        let tracing = service_kit::telemetry::init("processor_service", std::io::stdout)?;
        let settings = Settings::load()?;
        // Built from the settings, so not `#[tokio::main]`.
        let stopped = settings.runtime.build()?.block_on(async {
            // Before anything binds: a SIGTERM during start-up is a clean stop too.
            let shutdown = CancellationToken::new();
            service_kit::signals::cancel_on_signal(shutdown.clone());
            let application = startup::build(settings).await?;
            application.run_until_stopped(shutdown).await
        });
        // The last spans are exported before the process ends.
        if let Some(tracing) = tracing {
            tracing.shutdown();
        }
        return stopped;
    };
    // Logs go to stderr: stdout is the command's output.
    init_subscriber(get_subscriber(
        "processor_service",
        LogFormat::from_env(),
        std::io::stderr,
        None,
    ))?;
    let settings = Settings::load()?;
    let output = match command {
        ServiceCommand::DeadLetters(command) => settings
            .runtime
            .build()?
            .block_on(processor_service::cli::run_dead_letters(&settings, command))?,
        ServiceCommand::DevToken(args) => {
            service_kit::auth::dev::run(&settings.auth, ENV_PREFIX, &args)?
        }
    };
    println!("{output}");
    Ok(())
}
