//! The log lines of a process with tracing off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lines;

use lines::Lines;
use service_kit::telemetry::{LogFormat, get_subscriber};

#[test]
fn with_tracing_off_no_span_is_made_and_lines_carry_no_ids() {
    let lines = Lines::default();
    let subscriber = get_subscriber("test", LogFormat::Json, lines.clone(), None);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("handle delivery", queue = "q");
        assert!(span.is_disabled(), "no layer wants spans");
        let _entered = span.enter();
        tracing::info!(order_id = "o-1", "order decided");
    });
    let lines = lines.json();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["message"], "order decided");
    assert_eq!(line["order_id"], "o-1");
    assert_eq!(line["service"], "test");
    assert!(line.get("trace_id").is_none(), "{line}");
    assert!(line.get("queue").is_none(), "{line}");
}
