//! `GET /metrics`: what the order service counts, in a format `promtool` accepts.

use contracts::events::ProcessingStatus;
use test_support::prometheus::{promtool_check, sample};
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, valid_order, verdict};

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// Waits until the sample `name{labels}` has `value`, and returns the exposition.
async fn wait_for(app: &TestApp, name: &str, labels: &[(&str, &str)], value: f64) -> String {
    test_support::wait_until(
        &format!("{name}{labels:?} to be {value}"),
        DEADLINE,
        || async {
            let text = scrape(app).await;
            (sample(&text, name, labels) == Some(value)).then_some(text)
        },
    )
    .await
}

#[tokio::test]
async fn after_n_orders_the_metrics_count_n_created_and_n_final_by_status() {
    let app = spawn_app().await;
    let queue = app.settings.amqp.topology.order_processed_queue.clone();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let order = app.create_order(&valid_order()).await;
        ids.push(order["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    for (index, id) in ids.iter().enumerate() {
        let status = if index < 3 {
            ProcessingStatus::Completed
        } else {
            ProcessingStatus::Rejected
        };
        app.probe.publish(&verdict(*id, status)).await;
    }
    let acknowledged = [("queue", queue.as_str()), ("outcome", "acknowledged")];
    wait_for(&app, "consumer_deliveries_total", &acknowledged, 5.0).await;
    let text = wait_for(&app, "outbox_published_total", &[], 5.0).await;

    assert_eq!(sample(&text, "orders_created_total", &[]), Some(5.0));
    let completed = [("status", "completed")];
    let rejected = [("status", "rejected")];
    assert_eq!(
        sample(&text, "orders_finalized_total", &completed),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "orders_finalized_total", &rejected),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "orders_create_to_final_seconds_count", &completed),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "orders_create_to_final_seconds_count", &rejected),
        Some(2.0)
    );
    let posted = [("method", "POST"), ("route", "/orders"), ("status", "201")];
    assert_eq!(sample(&text, "http_requests_total", &posted), Some(5.0));
    assert_eq!(
        sample(
            &text,
            "http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/orders")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "consumer_handling_duration_seconds_count",
            &[("queue", queue.as_str())]
        ),
        Some(5.0)
    );
    for outcome in ["retried", "dead_lettered", "poison", "returned"] {
        assert_eq!(
            sample(
                &text,
                "consumer_deliveries_total",
                &[("queue", queue.as_str()), ("outcome", outcome)]
            ),
            Some(0.0),
            "{outcome}"
        );
    }
    assert_eq!(
        sample(&text, "outbox_publish_failures_total", &[]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "broker_connected", &[]), Some(1.0));
    assert_eq!(sample(&text, "broker_blocked", &[]), Some(0.0));
    assert_eq!(
        sample(
            &text,
            "database_pool_connections",
            &[("pool", "writes"), ("state", "max")]
        ),
        Some(f64::from(app.settings.database.max_connections))
    );
    assert_eq!(
        sample(
            &text,
            "build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Unknown routes share one label value: a scanner cannot grow the series without bound.
    for path in ["/nope", "/nope/either", "/../etc/passwd"] {
        assert_eq!(app.get(path).await.status(), 404);
    }
    let text = wait_for(
        &app,
        "http_requests_total",
        &[("route", "unmatched"), ("status", "404")],
        3.0,
    )
    .await;
    promtool_check(&text).unwrap();
}

#[tokio::test]
async fn the_outbox_backlog_and_poison_messages_show() {
    let app = spawn_app().await;
    let queue = app.settings.amqp.topology.order_processed_queue.clone();
    app.probe
        .publish_raw(
            messaging::topology::routing_keys::ORDER_PROCESSED,
            b"not an event",
            lapin::BasicProperties::default().with_message_id("m-1".into()),
        )
        .await;
    let text = wait_for(
        &app,
        "consumer_deliveries_total",
        &[("queue", queue.as_str()), ("outcome", "poison")],
        1.0,
    )
    .await;
    assert_eq!(sample(&text, "outbox_unsent_rows", &[]), Some(0.0));
    assert_eq!(
        sample(&text, "outbox_oldest_unsent_age_seconds", &[]),
        Some(0.0)
    );
    // The dead-letter queue's depth is sampled at start and then every 15 s.
    let dead_letters = app
        .settings
        .amqp
        .topology
        .order_processed_dead_letter_queue
        .clone();
    wait_for(
        &app,
        "dead_letter_queue_messages",
        &[("queue", dead_letters.as_str())],
        1.0,
    )
    .await;
}
