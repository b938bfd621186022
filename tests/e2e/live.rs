//! Live status across two order service instances: a client following on one sees every change
//! committed by either (verdicts, cancellations), only its own orders, and resumes on the other
//! with its last event id without missing a change or seeing one twice.

use std::time::Duration;

use serde_json::Value;
use test_support::sse::EventStream;

use crate::helpers::{order, spawn_pipeline};

const EVENT: Duration = Duration::from_secs(30);

/// A request with `token`, without the request timeout of the tests' clients: a stream stays
/// open.
fn follow(base: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
}

async fn place(base: &str, token: &str, customer: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/orders"))
        .bearer_auth(token)
        .json(&order(customer, 1, "5.00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    placed["id"].as_str().unwrap().to_owned()
}

/// The next `(order id, status)` changes of `stream`.
async fn changes(stream: &mut EventStream, count: usize) -> Vec<(String, String)> {
    let mut changes = Vec::new();
    for _ in 0..count {
        let change = stream.next_status(EVENT).await;
        changes.push((
            change["order_id"].as_str().unwrap().to_owned(),
            change["status"].as_str().unwrap().to_owned(),
        ));
    }
    changes
}

fn of(id: &str, statuses: &[&str]) -> Vec<(String, String)> {
    statuses
        .iter()
        .map(|status| (id.to_owned(), (*status).to_owned()))
        .collect()
}

#[tokio::test]
async fn changes_from_either_instance_reach_a_client_on_the_other_and_it_resumes_anywhere() {
    let mut pipeline = spawn_pipeline("1000.00").await;
    let second = pipeline.another_order_service().await;
    let (first, second) = (pipeline.orders.address.clone(), second);
    let alice = pipeline.issuer.customer("alice");
    let bob = pipeline.issuer.customer("bob");
    let operator = pipeline.issuer.operator("live-operator");

    let mut alices =
        EventStream::open(follow(&second.address, "/orders/events", &alice), None).await;
    let mut everyone =
        EventStream::open(follow(&second.address, "/orders/events", &operator), None).await;

    // Placed on the first instance, decided by the processor, applied by either instance.
    let one = place(&first, &alice, "alice").await;
    assert_eq!(
        changes(&mut alices, 2).await,
        of(&one, &["pending", "completed"])
    );
    // Another customer's order is not alice's to see; the operator sees both.
    let bobs = place(&first, &bob, "bob").await;
    pipeline.wait_until_final(&bobs).await;
    let two = place(&second.address, &alice, "alice").await;
    assert_eq!(
        changes(&mut alices, 2).await,
        of(&two, &["pending", "completed"])
    );
    let seen_by_operator = changes(&mut everyone, 6).await;
    for id in [&one, &bobs, &two] {
        let mine: Vec<_> = seen_by_operator
            .iter()
            .filter(|(order, _)| order == id)
            .cloned()
            .collect();
        assert_eq!(mine, of(id, &["pending", "completed"]), "{id}");
    }

    // The client goes; meanwhile an order is placed and decided, another placed on the first
    // instance and cancelled on the second.
    let last_event_id = alices.last_event_id.clone().unwrap();
    drop(alices);
    let decided = place(&second.address, &alice, "alice").await;
    pipeline.wait_until_final(&decided).await;
    pipeline.stop_processor().await;
    let three = place(&first, &alice, "alice").await;
    let cancelled = reqwest::Client::new()
        .post(format!("{}/orders/{three}/cancel", second.address))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);

    // Back, on the other instance, from its last event id: exactly what it missed.
    let mut resumed = EventStream::open(
        follow(&first, "/orders/events", &alice),
        Some(&last_event_id),
    )
    .await;
    let missed = [
        of(&decided, &["pending", "completed"]),
        of(&three, &["pending", "cancelled"]),
    ]
    .concat();
    assert_eq!(changes(&mut resumed, 4).await, missed);
    // Live again: placed on the second, then cancelled there, seen on the first.
    let four = place(&second.address, &alice, "alice").await;
    assert_eq!(changes(&mut resumed, 1).await, of(&four, &["pending"]));
    let cancelled = reqwest::Client::new()
        .post(format!("{}/orders/{four}/cancel", second.address))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(changes(&mut resumed, 1).await, of(&four, &["cancelled"]));
    pipeline.start_processor().await;
    pipeline
        .assert_agreement(&[one, two, decided, three, four, bobs])
        .await;
}
