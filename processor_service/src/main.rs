use processor_service::configuration::Settings;
use processor_service::startup;
use service_kit::dead_letters::cli::ServiceCommand;
use service_kit::telemetry::{LogFormat, get_subscriber, init_subscriber};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let cli = processor_service::cli::parse();
    match cli.command {
        None => {
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
            stopped
        }
        Some(ServiceCommand::DeadLetters(command)) => {
            // Logs go to stderr: stdout is the command's JSON.
            init_subscriber(get_subscriber(
                "processor_service",
                LogFormat::from_env(),
                std::io::stderr,
                None,
            ))?;
            let settings = Settings::load()?;
            let output = settings
                .runtime
                .build()?
                .block_on(processor_service::cli::run_dead_letters(&settings, command))?;
            println!("{output}");
            Ok(())
        }
        Some(ServiceCommand::DevToken(args)) => {
            init_subscriber(get_subscriber(
                "processor_service",
                LogFormat::from_env(),
                std::io::stderr,
                None,
            ))?;
            let settings = Settings::load()?;
            let token = service_kit::auth::dev::run(
                &settings.auth,
                processor_service::configuration::ENV_PREFIX,
                &args,
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
