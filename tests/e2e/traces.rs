//! One order is one trace: both services run as processes exporting over OTLP to a receiver of
//! the test's own, and the trace of a POST that carries a `traceparent` runs through the HTTP
//! request, the store, the publish of `order.created`, the processor's delivery and decision, the
//! publish of `order.processed` and the order service's delivery, each span the child of the one
//! before, the messages carrying it in their headers and the log lines of both services naming it.

use std::collections::{HashMap, HashSet};

use contracts::routing_keys;
use lapin::message::Delivery;
use messaging::headers::Headers;
use serde_json::{Value, json};
use test_support::otlp::{CONSUMER, OtlpReceiver, PRODUCER, ReceivedSpan, SERVER};
use test_support::{BrokerProbe, Tap};

use crate::helpers::DEADLINE;
use crate::processes;

/// A random id of `bytes` bytes, in hex.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// The next tapped message about `order_id`.
async fn message_about(tap: &mut Tap, order_id: &str) -> Delivery {
    loop {
        let delivery = tap.next(DEADLINE).await;
        if delivery
            .properties
            .correlation_id()
            .as_ref()
            .is_some_and(|id| id.as_str() == order_id)
        {
            return delivery;
        }
    }
}

fn header(delivery: &Delivery, name: &str) -> Option<String> {
    Headers::from_table(delivery.properties.headers().as_ref()).str(name)
}

/// The trace id of a `traceparent`.
fn trace_of(traceparent: &str) -> String {
    traceparent.split('-').nth(1).unwrap_or_default().to_owned()
}

async fn place(
    client: &reqwest::Client,
    orders: &str,
    customer: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut request = client.post(format!("{orders}/orders")).json(&json!({
        "customer_id": customer,
        "items": [{"product_id": "p-1", "quantity": 2, "price": "5.00"}]
    }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    order["id"].as_str().unwrap().to_owned()
}

/// The one span of `spans` that `matches`, failing with the whole trace otherwise.
fn the<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| matches(span)).collect();
    assert_eq!(found.len(), 1, "one {what} span in {spans:#?}");
    found[0]
}

/// The JSON log lines of `file` that name `trace_id`.
fn log_lines_of(file: &std::path::Path, trace_id: &str) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["trace_id"] == trace_id)
        .collect()
}

#[tokio::test]
async fn one_order_is_one_trace_from_its_post_through_both_services_and_the_broker() {
    let receiver = OtlpReceiver::start().await;
    let logs = std::env::temp_dir().join(format!("traces-{}", test_support::unique_id()));
    std::fs::create_dir_all(&logs).unwrap();
    let processes = processes::start(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ],
        Some(&logs),
    )
    .await;
    let probe = BrokerProbe::connect(processes.topology.clone()).await;
    let mut created = probe.tap(routing_keys::ORDER_CREATED).await;
    let mut processed = probe.tap(routing_keys::ORDER_PROCESSED).await;
    let client = reqwest::Client::new();

    let trace_id = random_hex(16);
    let caller = random_hex(8);
    let traceparent = format!("00-{trace_id}-{caller}-01");
    let order_id = place(
        &client,
        &processes.orders_url,
        "traced",
        &[("traceparent", &traceparent), ("tracestate", "vendor=7")],
    )
    .await;

    // The messages carry the trace, as the publishing span's context, and its state.
    for (tap, event) in [
        (&mut created, "order.created"),
        (&mut processed, "order.processed"),
    ] {
        let message = message_about(tap, &order_id).await;
        let sent = header(&message, "traceparent").unwrap_or_else(|| panic!("{event} traceparent"));
        assert_eq!(trace_of(&sent), trace_id, "{event}: {sent}");
        assert_ne!(
            sent, traceparent,
            "{event} names the span that published it"
        );
        assert_eq!(header(&message, "tracestate").as_deref(), Some("vendor=7"));
    }

    // Both services' spans, as one trace, down to the order service applying the verdict. Each
    // service exports on its own schedule, so a span may arrive before its parent from the other
    // service: wait for every parent too (the caller's aside).
    let spans = test_support::wait_until("the whole trace to be exported", DEADLINE, || async {
        let spans = receiver.trace(&trace_id);
        let complete = {
            let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
            let applied = spans
                .iter()
                .any(|span| span.service == "order_service" && span.kind == CONSUMER);
            applied
                && spans.iter().all(|span| {
                    span.parent_span_id == caller || ids.contains(span.parent_span_id.as_str())
                })
        };
        complete.then_some(spans)
    })
    .await;
    let by_id: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    let server = the(&spans, "HTTP server", |s| s.kind == SERVER);
    assert_eq!(server.service, "order_service");
    assert_eq!(
        server.parent_span_id, caller,
        "the caller's span is the parent"
    );
    for span in &spans {
        if span.span_id != server.span_id {
            assert!(
                by_id.contains_key(span.parent_span_id.as_str()),
                "the parent of {span:#?} is in the trace"
            );
        }
    }
    let parent_of = |span: &ReceivedSpan| by_id[span.parent_span_id.as_str()];
    let store = the(&spans, "store", |s| s.name == "store new order");
    assert_eq!(parent_of(store).span_id, server.span_id);
    let publish_created = the(&spans, "order.created publish", |s| {
        s.kind == PRODUCER && s.service == "order_service"
    });
    assert_eq!(publish_created.name, "order.created publish");
    let consume_created = the(&spans, "order.created delivery", |s| {
        s.kind == CONSUMER && s.service == "processor_service"
    });
    assert_eq!(consume_created.parent_span_id, publish_created.span_id);
    let decide = the(&spans, "decide", |s| s.name == "decide");
    assert_eq!(decide.service, "processor_service");
    assert_eq!(decide.parent_span_id, consume_created.span_id);
    let publish_processed = the(&spans, "order.processed publish", |s| {
        s.kind == PRODUCER && s.service == "processor_service"
    });
    assert_eq!(publish_processed.name, "order.processed publish");
    let consume_processed = the(&spans, "order.processed delivery", |s| {
        s.kind == CONSUMER && s.service == "order_service"
    });
    assert_eq!(consume_processed.parent_span_id, publish_processed.span_id);
    // Its ancestors run back to the HTTP request through both services.
    let mut ancestor = consume_processed;
    while ancestor.span_id != server.span_id {
        ancestor = parent_of(ancestor);
    }

    // Statements and batches that serve many orders are spans of their own, linked from each order's span.
    let exported = test_support::wait_until("the linked spans to be exported", DEADLINE, || {
        let spans = receiver.spans();
        let linked: Vec<String> = [store, publish_created, consume_created, publish_processed]
            .iter()
            .flat_map(|span| span.links.iter().map(|(_, id)| id.clone()))
            .collect();
        let found = linked
            .iter()
            .all(|id| spans.iter().any(|span| &span.span_id == id));
        async move { (found && !linked.is_empty()).then_some(spans) }
    })
    .await;
    let linked = |member: &ReceivedSpan, name: &str| {
        let batch = member
            .links
            .iter()
            .find_map(|(trace, id)| {
                exported
                    .iter()
                    .find(|span| &span.trace_id == trace && &span.span_id == id)
            })
            .unwrap_or_else(|| panic!("{} links to its {name}", member.name));
        assert_eq!(batch.name, name);
        assert_ne!(batch.trace_id, trace_id, "a {name} is a trace of its own");
    };
    linked(store, "insert orders");
    linked(publish_created, "publish batch");
    linked(consume_created, "record deliveries");
    linked(publish_processed, "publish batch");
    linked(consume_processed, "apply verdicts");

    // Log lines of both services, written inside the order's spans, name its trace and span.
    for service in ["order_service", "processor_service"] {
        let file = logs.join(format!("{service}.log"));
        let lines =
            test_support::wait_until(&format!("{service} to log the trace"), DEADLINE, || {
                let lines = log_lines_of(&file, &trace_id);
                async move { (!lines.is_empty()).then_some(lines) }
            })
            .await;
        for line in lines {
            let span_id = line["span_id"].as_str().unwrap_or_default();
            assert!(
                by_id.contains_key(span_id),
                "{service}: {line} names a span of the trace"
            );
            assert_eq!(line["service"], service);
            assert_eq!(line["order_id"], order_id.as_str(), "{line}");
        }
    }

    // Without a traceparent, or with one that does not parse, an order starts a trace of its own.
    for headers in [vec![], vec![("traceparent", "00-zz-not-a-trace")]] {
        let order_id = place(&client, &processes.orders_url, "untraced", &headers).await;
        let message = message_about(&mut created, &order_id).await;
        let sent = header(&message, "traceparent").expect("a trace of its own");
        let own = trace_of(&sent);
        assert_eq!(own.len(), 32, "{sent}");
        assert_ne!(own, trace_id);
        test_support::wait_until("its own trace to be exported", DEADLINE, || async {
            receiver
                .trace(&own)
                .iter()
                .any(|span| span.kind == SERVER && span.parent_span_id.is_empty())
                .then_some(())
        })
        .await;
    }
    processes.orders.stop().await;
    processes.processor.stop().await;
    let _ = std::fs::remove_dir_all(&logs);
}
