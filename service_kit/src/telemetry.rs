//! Logs: bunyan JSON lines on stdout by default, a readable format with `LOG_FORMAT=pretty`.
//! The filter comes from `RUST_LOG` (default `info`, with sqlx and lapin kept at `warn`).

use tracing::Subscriber;
use tracing::subscriber::set_global_default;
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

pub const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,lapin=warn,amq_protocol=warn";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT=pretty` gives the readable format; anything else, JSON.
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").as_deref() {
            Ok("pretty") => Self::Pretty,
            _ => Self::Json,
        }
    }
}

/// Builds the subscriber; `sink` is where lines go (stdout in the services, a sink in tests).
pub fn get_subscriber<Sink>(
    name: &str,
    format: LogFormat,
    sink: Sink,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    match format {
        LogFormat::Json => Box::new(
            Registry::default()
                .with(filter)
                .with(JsonStorageLayer)
                .with(BunyanFormattingLayer::new(name.to_owned(), sink)),
        ),
        LogFormat::Pretty => Box::new(
            Registry::default()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_writer(sink)),
        ),
    }
}

/// Installs the subscriber for the whole process; call once.
pub fn init_subscriber(subscriber: Box<dyn Subscriber + Send + Sync>) -> anyhow::Result<()> {
    set_global_default(subscriber)?;
    Ok(())
}

/// For test binaries: logs to stdout when `TEST_LOG` is set, nowhere otherwise. Safe to call from
/// every test.
pub fn init_test_subscriber(name: &str) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = if std::env::var("TEST_LOG").is_ok() {
            get_subscriber(name, LogFormat::from_env(), std::io::stdout)
        } else {
            get_subscriber(name, LogFormat::Json, std::io::sink)
        };
        // Another test harness may have installed one already: keep it.
        let _ = set_global_default(subscriber);
    });
}
