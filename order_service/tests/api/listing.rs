use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn order_for(customer: &str) -> Value {
    json!({"customer_id": customer, "items": [{"product_id": "p", "quantity": 1, "price": "1.00"}]})
}

#[tokio::test]
async fn pages_walk_every_order_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_order(&order_for("alice")).await["id"].clone());
    }
    let mut seen = Vec::new();
    let mut path = "/orders?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get_json(&path).await;
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/orders?limit=3&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
}

#[tokio::test]
async fn filters_by_customer_and_status() {
    let app = spawn_app().await;
    let alice = app.create_order(&order_for("alice")).await;
    app.create_order(&order_for("bob")).await;
    app.create_order(&order_for("bob")).await;

    let page = app.get_json("/orders?customer_id=bob").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|o| o["customer_id"] == "bob"));
    assert_eq!(page["next_cursor"], Value::Null);

    let pending = app
        .get_json("/orders?status=pending&customer_id=alice")
        .await;
    assert_eq!(pending["items"][0]["id"], alice["id"]);
    let completed = app.get_json("/orders?status=completed").await;
    assert!(completed["items"].as_array().unwrap().is_empty());

    let all: HashSet<_> = app.get_json("/orders").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].to_string())
        .collect();
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn bad_list_parameters_are_422_naming_them() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=lost", "status"),
        ("after=not-a-cursor", "after"),
    ] {
        let response = app.get(&format!("/orders?{query}")).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{query}");
    }
    assert_eq!(app.get("/orders?limit=500").await.status(), 200);
}
