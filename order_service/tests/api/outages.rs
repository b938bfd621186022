//! The order service's database stops taking work, in each way the server can produce while it
//! runs: `POST /orders` answers 503 problem+json with `Retry-After` (never 500), its
//! `order.processed` consumer parks without spending attempts, and every verdict is applied once
//! the database answers.

use std::time::Duration;

use chrono::Utc;
use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use serde_json::Value;
use test_support::outage::{DatabaseOutage, TestRole};
use test_support::unique_id;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, valid_order};

const ORDERS: usize = 5;

async fn spawn_as(role: &TestRole) -> (TestApp, String) {
    let database = format!("orders_{}", role.name);
    let mut settings = role.database_settings(&database);
    // A refused session fails a request within this, not the default 3 s.
    settings.acquire_timeout = std::time::Duration::from_millis(500);
    let app = spawn_app_with(move |s| {
        s.database = settings;
        s.retry.max_attempts = 2;
        s.retry.initial_delay = std::time::Duration::from_millis(50);
        s.retry.max_delay = std::time::Duration::from_millis(200);
    })
    .await;
    (app, database)
}

fn completed(order_id: Uuid) -> Envelope<OrderProcessed> {
    Envelope::new(
        order_id,
        OrderProcessed {
            order_id,
            status: ProcessingStatus::Completed,
            reason: None,
            processed_at: Utc::now(),
        },
    )
}

async fn assert_refused_with_503(app: &TestApp) {
    let response = app.post_order(&valid_order()).await;
    assert_eq!(response.status(), 503, "{:?}", response.text().await);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{problem}");
}

async fn outage_is_503_and_parks(outage: impl FnOnce(&TestRole) -> DatabaseOutage, stays: bool) {
    let role = TestRole::create(&format!("r{}", unique_id())).await;
    let (app, database) = spawn_as(&role).await;
    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        let order = app.create_order(&valid_order()).await;
        ids.push(Uuid::parse_str(order["id"].as_str().unwrap()).unwrap());
    }

    let outage = outage(&role).begin(&database).await;
    for _ in 0..3 {
        assert_refused_with_503(&app).await;
    }
    for id in &ids {
        app.probe.publish(&completed(*id)).await;
    }
    let queue = app.settings.amqp.topology.order_processed_queue.clone();
    test_support::wait_until("the consumer to park", DEADLINE, || async {
        (app.probe.queue_state(&queue).await == (ORDERS as u32, 0)).then_some(())
    })
    .await;
    if stays {
        for _ in 0..20 {
            assert_eq!(app.probe.queue_state(&queue).await, (ORDERS as u32, 0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_refused_with_503(&app).await;
        // /ready says the database is the matter, without naming the role or the database.
        let body = test_support::wait_until("/ready to name the database", DEADLINE, || async {
            let response = app.get("/ready").await;
            let body = response.text().await.ok()?;
            let report: Value = serde_json::from_str(&body).ok()?;
            (report["checks"]["database"] != "ok").then_some(body)
        })
        .await;
        assert!(!body.contains(&role.name), "{body}");
        assert!(!body.contains(&database), "{body}");
        assert!(!body.contains("127.0.0.1"), "{body}");
    }
    outage.end().await;

    for id in &ids {
        app.wait_for_status(&id.to_string(), "completed").await;
        let history = app.get_json(&format!("/orders/{id}/history")).await;
        let statuses: Vec<_> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses, ["pending", "completed"]);
    }
    let dead_letters = &app.settings.amqp.topology.order_processed_dead_letter_queue;
    assert_eq!(app.probe.message_count(dead_letters).await, 0);
    app.create_order(&valid_order()).await;
}

#[tokio::test]
async fn a_database_refusing_sessions_is_503_and_parks_the_consumer() {
    outage_is_503_and_parks(|_| DatabaseOutage::ConnectionsRefused, true).await;
}

#[tokio::test]
async fn a_full_connection_limit_is_503_and_parks_the_consumer() {
    outage_is_503_and_parks(
        |role| DatabaseOutage::ConnectionLimitZero {
            role: role.name.clone(),
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn statements_cancelled_by_statement_timeout_are_503_and_park_the_consumer() {
    outage_is_503_and_parks(
        |_| DatabaseOutage::StatementTimeout {
            table: "orders".into(),
        },
        false,
    )
    .await;
}
