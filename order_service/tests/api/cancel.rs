//! `POST /orders/{id}/cancel`: a pending order is cancelled once, announced through the outbox,
//! and no verdict moves it afterwards; a decided order cannot be cancelled.

use contracts::events::{Envelope, OrderCancelled, ProcessingStatus};
use contracts::routing_keys;
use serde_json::Value;
use test_support::prometheus::sample;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, valid_order, verdict};

async fn cancel(app: &TestApp, id: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/orders/{id}/cancel", app.address))
        .send()
        .await
        .expect("POST /orders/{id}/cancel")
}

async fn statuses(app: &TestApp, id: &str) -> Vec<String> {
    app.get_json(&format!("/orders/{id}/history"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_pending_order_is_cancelled_once_and_announced() {
    let app = spawn_app().await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CANCELLED).await;
    let order = app.create_order(&valid_order()).await;
    let id = order["id"].as_str().unwrap();

    let response = cancel(&app, id).await;
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], id);
    assert_eq!(
        app.get_json(&format!("/orders/{id}")).await["status"],
        "cancelled"
    );
    assert_eq!(statuses(&app, id).await, ["pending", "cancelled"]);

    let event: Envelope<OrderCancelled> = tap.next_event(DEADLINE).await;
    assert_eq!(event.payload.order_id.to_string(), id);
    assert_eq!(event.correlation_id.to_string(), id);

    // Again: the order as it is, nothing new written or announced.
    let again = cancel(&app, id).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "cancelled");
    assert_eq!(statuses(&app, id).await, ["pending", "cancelled"]);
    assert!(
        tap.try_next(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "a second cancel announces nothing"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'order.cancelled'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_verdict_after_the_cancellation_changes_nothing() {
    let app = spawn_app().await;
    let order = app.create_order(&valid_order()).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(cancel(&app, id).await.status(), 200);
    let order_id: Uuid = id.parse().unwrap();
    app.probe
        .publish(&verdict(order_id, ProcessingStatus::Completed))
        .await;
    let queue = app.settings.amqp.topology.order_processed_queue.clone();
    let acknowledged = [("queue", queue.as_str()), ("outcome", "acknowledged")];
    test_support::wait_until("the verdict to be acknowledged", DEADLINE, || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        (sample(&text, "consumer_deliveries_total", &acknowledged) == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(
        app.get_json(&format!("/orders/{id}")).await["status"],
        "cancelled"
    );
    assert_eq!(statuses(&app, id).await, ["pending", "cancelled"]);
}

#[tokio::test]
async fn a_decided_order_cannot_be_cancelled_and_an_unknown_one_is_not_found() {
    let app = spawn_app().await;
    for status in [
        ProcessingStatus::Completed,
        ProcessingStatus::Rejected,
        ProcessingStatus::Failed,
    ] {
        let order = app.create_order(&valid_order()).await;
        let id = order["id"].as_str().unwrap();
        app.probe
            .publish(&verdict(id.parse().unwrap(), status))
            .await;
        app.wait_for_status(id, status.as_str()).await;
        let response = cancel(&app, id).await;
        assert_eq!(response.status(), 409, "{}", status.as_str());
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], "status");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(status.as_str()),
            "{problem}"
        );
        assert_eq!(statuses(&app, id).await, ["pending", status.as_str()]);
    }
    let response = cancel(&app, &Uuid::new_v4().to_string()).await;
    assert_eq!(response.status(), 404);
    let response = cancel(&app, "not-a-uuid").await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["field"], "id");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'order.cancelled'")
            .await,
        0
    );
}
