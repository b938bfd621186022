use contracts::events::OrderCreated;
use messaging::topology::routing_keys;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, spawn_app, valid_order};

#[tokio::test]
async fn a_valid_order_is_stored_pending_and_announced_with_order_created() {
    let app = spawn_app().await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CREATED).await;

    let response = app.post_order(&valid_order()).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(order["customer_id"], "customer-123");
    assert_eq!(order["status"], "pending");
    assert_eq!(order["error_message"], Value::Null);
    assert_eq!(order["total_amount"], "21.00");
    assert_eq!(
        order["items"],
        json!([{"product_id": "product-1", "quantity": 2, "price": "10.50"}])
    );
    let created_at = order["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "UTC RFC 3339: {created_at}");
    chrono::DateTime::parse_from_rfc3339(created_at).unwrap();

    // What was answered is what is stored.
    assert_eq!(app.get_json(&location).await, order);

    let event = tap.next_event::<OrderCreated>(DEADLINE).await;
    assert_eq!(event.event_type, "order.created");
    assert_eq!(event.schema_version, 1);
    assert_eq!(event.correlation_id.to_string(), id);
    assert_eq!(event.payload.order_id.to_string(), id);
    assert_eq!(event.payload.total_amount.to_string(), "21.00");
    assert_eq!(event.payload.items[0].price.to_string(), "10.50");
}

#[tokio::test]
async fn prices_are_exact_whether_sent_as_numbers_or_strings() {
    let app = spawn_app().await;
    let order = app
        .create_order(&json!({
            "customer_id": "c",
            "items": [
                {"product_id": "a", "quantity": 3, "price": "0.10"},
                {"product_id": "b", "quantity": 7, "price": 0.2},
                {"product_id": "c", "quantity": 1, "price": 10.500}
            ]
        }))
        .await;
    // 0.30 + 1.40 + 10.50, with no binary floating point drift.
    assert_eq!(order["total_amount"], "12.20");
    assert_eq!(order["items"][2]["price"], "10.50");
}

#[tokio::test]
async fn an_unknown_order_is_a_problem_404() {
    let app = spawn_app().await;
    let response = app.get(&format!("/orders/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn an_id_that_is_not_a_uuid_is_a_problem_400_naming_it() {
    let app = spawn_app().await;
    for path in ["/orders/not-a-uuid", "/orders/123/history"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], "id");
    }
}

#[tokio::test]
async fn the_history_of_a_new_order_starts_with_pending() {
    let app = spawn_app().await;
    let order = app.create_order(&valid_order()).await;
    let history = app
        .get_json(&format!(
            "/orders/{}/history",
            order["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["status"], "pending");
    assert_eq!(history[0]["reason"], Value::Null);
    assert_eq!(history[0]["at"], order["created_at"]);

    let unknown = app
        .get(&format!("/orders/{}/history", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_swagger_ui_is_served_offline_at_docs() {
    let app = spawn_app().await;
    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger"), "{page}");
}

/// PostgreSQL ends every session of the service (a failover, a restart, an administrator): while
/// the service finds its pooled connections dead it answers 503 (retry later), never 500, and it
/// takes orders again right after; what it refused, it did not store.
#[tokio::test]
async fn orders_are_refused_with_503_not_500_when_the_database_ends_the_sessions() {
    let app = spawn_app().await;
    app.create_order(&valid_order()).await;
    let ended = app
        .count(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await;
    assert!(ended > 0, "the service had no session to end");

    let statuses = std::sync::Mutex::new(Vec::new());
    test_support::wait_until("five orders accepted in a row", DEADLINE, || async {
        let status = app.post_order(&valid_order()).await.status().as_u16();
        let mut statuses = statuses.lock().unwrap();
        statuses.push(status);
        statuses.ends_with(&[201; 5]).then_some(())
    })
    .await;

    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses
            .iter()
            .all(|&status| status == 201 || status == 503),
        "{statuses:?}"
    );
    let accepted = statuses.iter().filter(|&&status| status == 201).count() as i64;
    assert_eq!(app.count("SELECT count(*) FROM orders").await, accepted + 1);
}
