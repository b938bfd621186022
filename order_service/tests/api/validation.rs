//! Every refused request answers problem+json naming the field, and stores and publishes nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn with_item(item: Value) -> Value {
    json!({"customer_id": "customer-123", "items": [item]})
}

fn item(product_id: Value, quantity: Value, price: Value) -> Value {
    json!({"product_id": product_id, "quantity": quantity, "price": price})
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM order_status_history").await,
        0
    );
    // The relay publishes only from the outbox: an empty outbox means nothing was published.
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn each_rule_refuses_with_422_naming_the_field() {
    let app = spawn_app().await;
    let many_items: Vec<Value> = (0..101)
        .map(|_| item(json!("p"), json!(1), json!(1)))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"customer_id": "", "items": [item(json!("p"), json!(1), json!(1))]}),
            "customer_id",
        ),
        (
            json!({"customer_id": "x".repeat(65), "items": [item(json!("p"), json!(1), json!(1))]}),
            "customer_id",
        ),
        (json!({"customer_id": "c", "items": []}), "items"),
        (json!({"customer_id": "c", "items": many_items}), "items"),
        (
            with_item(item(json!(""), json!(1), json!(1))),
            "items[0].product_id",
        ),
        (
            with_item(item(json!("p".repeat(65)), json!(1), json!(1))),
            "items[0].product_id",
        ),
        (
            with_item(item(json!("p"), json!(0), json!(1))),
            "items[0].quantity",
        ),
        (
            with_item(item(json!("p"), json!(-3), json!(1))),
            "items[0].quantity",
        ),
        (
            with_item(item(json!("p"), json!(10001), json!(1))),
            "items[0].quantity",
        ),
        (
            with_item(item(json!("p"), json!(1), json!(-0.01))),
            "items[0].price",
        ),
        (
            with_item(item(json!("p"), json!(1), json!("10.501"))),
            "items[0].price",
        ),
        (
            with_item(item(json!("p"), json!(1), json!(1000000.01))),
            "items[0].price",
        ),
        (
            with_item(item(json!("p"), json!(1), json!("ten"))),
            "items[0].price",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), 422, "{field}: {body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["field"], field, "{problem}");
    }
    // A raw number beyond f64 precision that still has a third decimal place.
    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .header("content-type", "application/json")
        .body(r#"{"customer_id":"c","items":[{"product_id":"p","quantity":1,"price":10.500000000000000000001}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = spawn_app().await;
    let items: Vec<Value> = (0..100)
        .map(|_| item(json!("p".repeat(64)), json!(10000), json!("1000000.00")))
        .collect();
    let order = app
        .create_order(&json!({"customer_id": "c".repeat(64), "items": items}))
        .await;
    assert_eq!(order["total_amount"], "1000000000000.00");
    let order = app
        .create_order(&with_item(item(json!("p"), json!(1), json!(0))))
        .await;
    assert_eq!(order["total_amount"], "0.00");
}

#[tokio::test]
async fn malformed_requests_are_400_naming_the_field_when_there_is_one() {
    let app = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(format!("{}/orders", app.address))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("{not json", "application/json", None),
        (
            r#"{"customer_id": "c", "items": [{"product_id": "p", "quantity": "2", "price": 1}]}"#,
            "application/json",
            Some("items[0].quantity"),
        ),
        (
            r#"{"customer_id": 12, "items": []}"#,
            "application/json",
            Some("customer_id"),
        ),
        (
            r#"{"customer_id": "c", "items": [{"product_id": "p", "quantity": 1}]}"#,
            "application/json",
            Some("items[0].price"),
        ),
        (
            r#"{"customer_id": "c", "items": [{"product_id": "p", "quantity": 1, "price": true}]}"#,
            "application/json",
            Some("items[0].price"),
        ),
        (
            r#"{"customer_id": "c", "items": [], "colour": "red"}"#,
            "application/json",
            Some("colour"),
        ),
        (r#"{"customer_id": "c", "items": []}"#, "text/plain", None),
    ];
    for (body, content_type, field) in cases {
        let response = send(body, content_type).await.unwrap();
        assert!(
            response.status() == 400 || (field.is_some() && response.status() == 422),
            "{body}: {}",
            response.status()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{body}: {problem}");
        }
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_problem_413() {
    let app = spawn_app().await;
    let body = json!({"customer_id": "c", "items": [], "padding": "x".repeat(70 * 1024)});
    let response = app.post_order(&body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn identifiers_with_invisible_characters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (
            json!({"customer_id": "alice\u{200b}", "items": [{"product_id": "p", "quantity": 1, "price": "1.00"}]}),
            "customer_id",
        ),
        (
            json!({"customer_id": "alice", "items": [{"product_id": "\u{202e}p", "quantity": 1, "price": "1.00"}]}),
            "items[0].product_id",
        ),
    ] {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("invisible"),
            "{problem}"
        );
    }
    let listed = app.get("/orders?customer_id=alice%E2%80%8B").await;
    assert_eq!(listed.status(), 422);
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn identifiers_are_stored_nfc_normalised_and_found_either_way() {
    let app = spawn_app().await;
    // "José" with the accent as a combining character; stored composed.
    let order = app
        .create_order(&json!({"customer_id": "Jose\u{301}", "items": [{"product_id": "p", "quantity": 1, "price": "1.00"}]}))
        .await;
    assert_eq!(order["customer_id"], "Jos\u{e9}");
    for filter in ["Jos%C3%A9", "Jose%CC%81"] {
        let page = app.get_json(&format!("/orders?customer_id={filter}")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{filter}");
    }
}
