use order_service::configuration::Settings;
use order_service::startup;
use service_kit::dead_letters::cli::ServiceCommand;
use service_kit::telemetry::{LogFormat, get_subscriber, init_subscriber};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let cli = order_service::cli::parse();
    match cli.command {
        None => {
            let tracing = service_kit::telemetry::init("order_service", std::io::stdout)?;
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
                "order_service",
                LogFormat::from_env(),
                std::io::stderr,
                None,
            ))?;
            let settings = Settings::load()?;
            let output = settings
                .runtime
                .build()?
                .block_on(order_service::cli::run_dead_letters(&settings, command))?;
            println!("{output}");
            Ok(())
        }
        Some(ServiceCommand::DevToken(args)) => {
            init_subscriber(get_subscriber(
                "order_service",
                LogFormat::from_env(),
                std::io::stderr,
                None,
            ))?;
            let settings = Settings::load()?;
            let token = service_kit::auth::dev::run(
                &settings.auth,
                order_service::configuration::ENV_PREFIX,
                &args,
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
