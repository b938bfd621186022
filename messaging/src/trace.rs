//! W3C trace context across the broker and the outbox: one order is one trace, from its POST
//! through both services.
//!
//! - A writer of an outbox row keeps the context of the span it writes in (the request or the
//!   delivery that caused the event): [`TraceContext::current`], stored in `outbox.traceparent`
//!   and `outbox.tracestate`.
//! - The publisher makes one `publish` span per message, a child of that stored context, and sends
//!   the span's own context as the `traceparent` and `tracestate` AMQP headers. A publish batch that
//!   serves many messages is a span of its own, linked from each message's span
//!   ([`Batch`]).
//! - The consumer continues the trace of the headers ([`continue_from`]): its span's parent is the
//!   publisher's span. Headers are as untrusted as any input: a malformed `traceparent` is ignored
//!   and the delivery starts a trace of its own.
//!
//! With no OpenTelemetry layer installed (the tests that run services in process, a command line),
//! spans have no context and nothing here writes or sends one.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The AMQP header (and outbox column) names: W3C Trace Context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A span's context in its W3C text form.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    /// Empty when the trace carries no vendor state.
    pub tracestate: String,
}

impl TraceContext {
    /// The context of the current span, or `None` outside any traced span.
    pub fn current() -> Option<Self> {
        Self::of(&tracing::Span::current())
    }

    /// The context of `span`, or `None` if it has none (disabled, or no OpenTelemetry layer).
    pub fn of(span: &tracing::Span) -> Option<Self> {
        let context = span.context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = Carrier::default();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        carrier.traceparent.map(|traceparent| Self {
            traceparent,
            tracestate: carrier.tracestate.unwrap_or_default(),
        })
    }

    /// The stored text as a context; `None` if it does not parse.
    fn to_context(&self) -> Option<opentelemetry::Context> {
        let carrier = Carrier {
            traceparent: Some(self.traceparent.clone()),
            tracestate: Some(self.tracestate.clone()).filter(|s| !s.is_empty()),
        };
        let context = TraceContextPropagator::new().extract(&carrier);
        context.span().span_context().is_valid().then_some(context)
    }

    /// From the text of a `traceparent` and `tracestate` (headers or columns), if it is valid.
    pub fn parse(traceparent: Option<String>, tracestate: Option<String>) -> Option<Self> {
        let context = Self {
            traceparent: traceparent?,
            tracestate: tracestate.unwrap_or_default(),
        };
        context.to_context().map(|_| context)
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> Option<String> {
        self.to_context()
            .map(|context| context.span().span_context().trace_id().to_string())
    }
}

/// Makes `span` a child of `parent` (a stored or received context). Call before the span is
/// entered; an invalid or missing parent leaves the span the root of a trace of its own.
pub fn continue_from(span: &tracing::Span, parent: Option<&TraceContext>) {
    if let Some(context) = parent.and_then(TraceContext::to_context) {
        // Only fails for a disabled span or without the layer: then there is no trace to continue.
        let _ = span.set_parent(context);
    }
}

/// The context of `span`, for a link.
fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// A span that serves many orders (a group statement, a publish batch): the root of a trace of
/// its own, linked from the span of each order it serves, so every order's trace still runs end to
/// end and shows what it shared. The links go one way, from the orders: a batch span holding one
/// link per order would double what each order costs to export and tell nothing the orders' spans
/// do not.
pub struct Batch {
    span: tracing::Span,
    context: Option<SpanContext>,
}

impl Batch {
    /// `span` should be created with `parent: None`.
    pub fn new(span: tracing::Span) -> Self {
        let context = span_context(&span);
        Self { span, context }
    }

    /// Links `member` (the span of one order it serves) to this batch.
    pub fn link(&self, member: &tracing::Span) {
        if let Some(batch) = &self.context {
            member.add_link(batch.clone());
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_taken_and_its_trace_id_read() {
        let context = TraceContext::parse(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            Some("vendor=value".into()),
        )
        .expect("valid");
        assert_eq!(
            context.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(context.tracestate, "vendor=value");
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for text in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01\u{200b}",
            &"0".repeat(100_000),
        ] {
            assert_eq!(
                TraceContext::parse(Some(text.into()), None),
                None,
                "{text:?}"
            );
        }
        assert_eq!(TraceContext::parse(None, Some("a=b".into())), None);
    }

    #[test]
    fn outside_any_traced_span_there_is_no_context() {
        assert_eq!(TraceContext::current(), None);
    }
}
