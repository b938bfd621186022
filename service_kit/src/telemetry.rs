//! Logs and traces.
//!
//! - **Logs**: JSON lines on stdout by default, a readable format with `LOG_FORMAT=pretty`. Each
//!   line has `timestamp`, `level`, `target`, `service`, the event's message and fields and,
//!   inside a traced span, `trace_id` and `span_id`; a line about an order names it itself
//!   (`order_id`, `event_id`), so spans add nothing else to it. The filter comes from `RUST_LOG`
//!   (default `info`, with sqlx and lapin kept at `warn`).
//! - **Spans** exist for the traces only: the log layers see events alone, so with tracing off
//!   (`OTEL_SDK_DISABLED=true`) no layer wants a span and none is made.
//! - **Traces**: OpenTelemetry with W3C trace context. Spans are exported over OTLP/HTTP (protobuf)
//!   when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not
//!   otherwise; the trace context is propagated and logged either way. The standard variables
//!   apply: `OTEL_SERVICE_NAME` (default: the service's name), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`), the
//!   batch processor's `OTEL_BSP_*`, the exporter's `OTEL_EXPORTER_OTLP_*`; `OTEL_SDK_DISABLED=true`
//!   turns tracing off altogether.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing::subscriber::set_global_default;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

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

/// The tracer provider of a process. Dropping it (or [`Tracing::shutdown`]) exports what is
/// still buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// From the standard `OTEL_*` variables; `None` when `OTEL_SDK_DISABLED=true`.
    pub fn from_env(service_name: &str) -> anyhow::Result<Option<Self>> {
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|value| value.eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name.to_owned());
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()));
        let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
        if endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .map_err(|error| anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {error}"))?;
            provider = provider.with_batch_exporter(exporter);
        }
        Ok(Some(Self {
            provider: provider.build(),
        }))
    }

    fn layer<S>(&self, name: &str) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        // What each span costs is paid for every order several times over: no source location,
        // thread or busy/idle attributes, no OpenTelemetry context switched on every poll of an
        // instrumented future (parents come from the tracing span tree), and log lines become
        // span events only from WARN up (every line is in the logs, with its trace and span ids).
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(name.to_owned()))
            .with_threads(false)
            .with_level(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter_fn(|metadata| {
                metadata.is_span() || *metadata.level() <= tracing::Level::WARN
            }))
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

/// Builds the subscriber; `sink` is where lines go (stdout in the services, a sink in tests), and
/// `tracing`, if any, makes spans OpenTelemetry spans.
pub fn get_subscriber<Sink>(
    name: &str,
    format: LogFormat,
    sink: Sink,
    tracing: Option<&Tracing>,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber_with(name, format, sink, tracing, filter())
}

/// The subscriber of a command (`dead-letters`, `queues`, `dev-token`): [`get_subscriber`]
/// without lapin's own lines. A command's failure is the error it returns; lapin logs every
/// channel the broker closes at ERROR, also the scratch channels on which a command expects a
/// refusal (whether a queue exists, whether the broker takes a declaration).
pub fn command_subscriber<Sink>(
    name: &str,
    format: LogFormat,
    sink: Sink,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let quiet = match "lapin=off".parse() {
        Ok(directive) => filter().add_directive(directive),
        Err(_) => filter(),
    };
    subscriber_with(name, format, sink, None, quiet)
}

/// `RUST_LOG`, or [`DEFAULT_FILTER`].
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

fn subscriber_with<Sink>(
    name: &str,
    format: LogFormat,
    sink: Sink,
    tracing: Option<&Tracing>,
    filter: EnvFilter,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let base = Registry::default().with(filter);
    // Events only: what a span costs (its fields kept and formatted) is paid for traces alone.
    let events = || filter_fn(|metadata| metadata.is_event());
    let lines: Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync> = match format {
        LogFormat::Json => Box::new(json_lines(name, sink).with_filter(events())),
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(sink)
                .with_filter(events()),
        ),
    };
    match tracing {
        Some(tracing) => Box::new(base.with(lines).with(tracing.layer(name))),
        // No layer wants a span, but the layer filter alone does not disable them: a global one
        // does, at each callsite once.
        None => Box::new(base.with(lines).with(events())),
    }
}

/// One JSON object a line: the event's message and fields at the top level, and the trace and
/// span ids of the span it was written in.
fn json_lines<S, Sink>(name: &str, sink: Sink) -> json_subscriber::JsonLayer<S, Sink>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let mut layer = json_subscriber::JsonLayer::new(sink);
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event();
    layer.add_static_field("service", serde_json::Value::String(name.to_owned()));
    layer.add_multiple_dynamic_fields(|_event, _context, writer| {
        // The layer sees no span (its filter), so the current one comes from the dispatcher: the
        // services install their subscriber globally, so this is it.
        let otel = tracing::dispatcher::get_default(|dispatch| {
            let current = dispatch.current_span();
            tracing_opentelemetry::get_otel_context(current.id()?, dispatch)
        });
        let Some(otel) = otel else { return };
        let otel_span = otel.span();
        let ids = otel_span.span_context();
        if ids.is_valid() {
            let _ = writer.write_field("trace_id", ids.trace_id().to_string());
            let _ = writer.write_field("span_id", ids.span_id().to_string());
        }
    });
    layer
}

/// Installs the subscriber for the whole process; call once.
pub fn init_subscriber(subscriber: Box<dyn Subscriber + Send + Sync>) -> anyhow::Result<()> {
    set_global_default(subscriber)?;
    Ok(())
}

/// Logs and traces of a service process: installs the subscriber globally and answers the
/// tracer provider, to [`Tracing::shutdown`] when the service stops.
pub fn init<Sink>(name: &str, sink: Sink) -> anyhow::Result<Option<Tracing>>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let tracing = Tracing::from_env(name)?;
    init_subscriber(get_subscriber(
        name,
        LogFormat::from_env(),
        sink,
        tracing.as_ref(),
    ))?;
    Ok(tracing)
}

/// For test binaries: logs to stdout when `TEST_LOG` is set, nowhere otherwise. Safe to call from
/// every test.
pub fn init_test_subscriber(name: &str) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = if std::env::var("TEST_LOG").is_ok() {
            get_subscriber(name, LogFormat::from_env(), std::io::stdout, None)
        } else {
            get_subscriber(name, LogFormat::Json, std::io::sink, None)
        };
        // Another test harness may have installed one already: keep it.
        let _ = set_global_default(subscriber);
    });
}
