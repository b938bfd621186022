//! The log lines of a traced process: the subscriber installed globally, as the services do (a
//! process of its own, so this file holds one test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lines;

use lines::Lines;
use opentelemetry::trace::TraceContextExt;
use service_kit::telemetry::{LogFormat, Tracing, get_subscriber, init_subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[test]
fn inside_a_traced_span_a_line_carries_its_trace_and_span_ids_and_no_span_fields() {
    let tracing = Tracing::from_env("test")
        .expect("no exporter configured")
        .expect("tracing is on");
    let lines = Lines::default();
    init_subscriber(get_subscriber(
        "test",
        LogFormat::Json,
        lines.clone(),
        Some(&tracing),
    ))
    .expect("the first subscriber");

    tracing::info!("outside any span");
    let span = tracing::info_span!("handle delivery", queue = "q");
    assert!(!span.is_disabled(), "spans exist for the traces");
    let ids = span.context().span().span_context().clone();
    assert!(ids.is_valid());
    span.in_scope(|| tracing::info!(order_id = "o-1", "order decided"));

    let lines = lines.json();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].get("trace_id").is_none(), "{}", lines[0]);
    let line = &lines[1];
    assert_eq!(line["message"], "order decided");
    assert_eq!(line["order_id"], "o-1");
    assert_eq!(line["trace_id"], ids.trace_id().to_string().as_str());
    assert_eq!(line["span_id"], ids.span_id().to_string().as_str());
    assert!(
        line.get("queue").is_none(),
        "span fields stay in the span: {line}"
    );
    tracing.shutdown();
}
