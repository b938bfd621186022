//! `Idempotency-Key` on `POST /orders`: a retried request finds the order it placed, once stored
//! and once announced, whatever the timing of the retries; after `INTAKE__IDEMPOTENCY_KEY_HOURS` the
//! key is released and places a new order.

use chrono::Utc;
use contracts::events::{Envelope, OrderCreated, OrderProcessed, ProcessingStatus};
use futures_util::future::join_all;
use messaging::topology::routing_keys;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_with, valid_order};

const KEY: &str = "Idempotency-Key";
const REPLAYED: &str = "Idempotent-Replayed";

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}/orders", app.address))
        .header(KEY, key)
        .json(body)
        .send()
        .await
        .expect("POST /orders")
}

/// Orders, history rows and events stored.
async fn stored(app: &TestApp) -> [i64; 3] {
    [
        app.count("SELECT count(*) FROM orders").await,
        app.count("SELECT count(*) FROM order_status_history").await,
        app.count("SELECT count(*) FROM outbox").await,
    ]
}

#[tokio::test]
async fn a_retry_with_the_same_key_answers_the_order_placed_first_as_it_is_now() {
    let app = spawn_app().await;
    let mut announced = app.probe.tap(routing_keys::ORDER_CREATED).await;
    let key = uuid::Uuid::new_v4().to_string();

    let first = post_with_key(&app, &key, &valid_order()).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get(REPLAYED).is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let placed: Value = first.json().await.unwrap();

    // The same order again, its price written another way, and the key quoted.
    let again = json!({
        "customer_id": "customer-123",
        "items": [{"product_id": "product-1", "quantity": 2, "price": "10.5"}]
    });
    let retried = post_with_key(&app, &format!("\"{key}\""), &again).await;
    assert_eq!(retried.status(), 201);
    assert_eq!(retried.headers()[REPLAYED], "true");
    assert_eq!(retried.headers()["location"].to_str().unwrap(), location);
    assert_eq!(retried.json::<Value>().await.unwrap(), placed);
    assert_eq!(stored(&app).await, [1, 1, 1]);

    // One order.created, and no second one.
    let event = announced.next_event::<OrderCreated>(DEADLINE).await;
    assert_eq!(event.payload.order_id.to_string(), placed["id"]);
    assert!(
        announced
            .try_next(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "a second order.created was published"
    );

    // Later, the retry answers the order as it is then.
    let id = event.payload.order_id;
    app.probe
        .publish(&Envelope::new(
            id,
            OrderProcessed {
                order_id: id,
                status: ProcessingStatus::Completed,
                reason: None,
                processed_at: Utc::now(),
            },
        ))
        .await;
    app.wait_for_status(&id.to_string(), "completed").await;
    let late = post_with_key(&app, &key, &valid_order()).await;
    assert_eq!(late.status(), 201);
    assert_eq!(late.headers()[REPLAYED], "true");
    let late: Value = late.json().await.unwrap();
    assert_eq!(late["id"], placed["id"]);
    assert_eq!(late["status"], "completed");
    assert_eq!(stored(&app).await, [1, 2, 1]);
}

#[tokio::test]
async fn the_same_key_with_other_items_is_refused_naming_the_header() {
    let app = spawn_app().await;
    let placed = post_with_key(&app, "order-1", &valid_order()).await;
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.unwrap();

    let other = json!({
        "customer_id": "customer-123",
        "items": [{"product_id": "product-1", "quantity": 3, "price": 10.50}]
    });
    let refused = post_with_key(&app, "order-1", &other).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["field"], KEY);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(placed["id"].as_str().unwrap()),
        "the problem names the order the key placed: {detail}"
    );
    assert_eq!(stored(&app).await, [1, 1, 1]);
}

#[tokio::test]
async fn keys_belong_to_their_customer_and_orders_without_one_are_all_placed() {
    let app = spawn_app().await;
    let mut ids = std::collections::HashSet::new();
    for customer in ["customer-a", "customer-b"] {
        let body = json!({
            "customer_id": customer,
            "items": [{"product_id": "product-1", "quantity": 1, "price": "1.00"}]
        });
        let response = post_with_key(&app, "shared-key", &body).await;
        assert_eq!(response.status(), 201);
        assert!(response.headers().get(REPLAYED).is_none(), "{customer}");
        ids.insert(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for _ in 0..2 {
        ids.insert(
            app.create_order(&valid_order()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 4);
    assert_eq!(stored(&app).await, [4, 4, 4]);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_place_one_order() {
    let app = spawn_app().await;
    let key = uuid::Uuid::new_v4().to_string();
    let body = valid_order();
    // At once: some share a group commit with the first, others wait on it in the unique index;
    // orders without a key, sent meanwhile, share those statements and are all placed.
    let keyed = join_all((0..20).map(|_| post_with_key(&app, &key, &body)));
    let unkeyed = join_all((0..10).map(|_| app.post_order(&body)));
    let (responses, others) = tokio::join!(keyed, unkeyed);
    for response in others {
        assert_eq!(response.status(), 201);
        assert!(response.headers().get(REPLAYED).is_none());
    }
    let mut ids = std::collections::HashSet::new();
    let mut new = 0;
    for response in responses {
        assert_eq!(response.status(), 201);
        if response.headers().get(REPLAYED).is_none() {
            new += 1;
        }
        ids.insert(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(new, 1, "exactly one request placed the order");
    assert_eq!(stored(&app).await, [11, 11, 11]);
}

#[tokio::test]
async fn a_malformed_key_is_refused_before_anything_is_stored() {
    let app = spawn_app().await;
    let too_long = "k".repeat(256);
    for key in ["", "\"\"", too_long.as_str(), "tab\there"] {
        let response = post_with_key(&app, key, &valid_order()).await;
        assert_eq!(response.status(), 400, "{key:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], KEY, "{key:?}");
    }
    let twice = app
        .client
        .post(format!("{}/orders", app.address))
        .header(KEY, "one")
        .header(KEY, "two")
        .json(&valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert_eq!(twice.json::<Value>().await.unwrap()["field"], KEY);
    // A refused order does not take its key: once valid, it is placed.
    let invalid = json!({"customer_id": "customer-123", "items": []});
    assert_eq!(post_with_key(&app, "k-1", &invalid).await.status(), 422);
    assert_eq!(stored(&app).await, [0, 0, 0]);
    let placed = post_with_key(&app, "k-1", &valid_order()).await;
    assert_eq!(placed.status(), 201);
    assert!(placed.headers().get(REPLAYED).is_none());
}

#[tokio::test]
async fn concurrent_retries_of_several_keys_in_any_order_place_one_order_per_key() {
    let app = spawn_app().await;
    let body = valid_order();
    let (rounds, keys_per_round, requests) = (10, 16, 64);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut placed = 0;
    for round in 0..rounds {
        // Retries of the same fresh keys at once, shuffled: the group commits in flight carry
        // some of the same keys, in any order (see the store's test of two such statements).
        let keys: Vec<String> = (0..keys_per_round)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let order: Vec<&String> = (0..requests)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                &keys[(state % keys_per_round as u64) as usize]
            })
            .collect();
        let responses = join_all(order.iter().map(|key| post_with_key(&app, key, &body))).await;
        let mut ids = std::collections::HashMap::new();
        let mut new = 0;
        for (key, response) in order.iter().zip(responses) {
            assert_eq!(response.status(), 201, "round {round}");
            if response.headers().get(REPLAYED).is_none() {
                new += 1;
            }
            let id = response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(ids.entry(*key).or_insert_with(|| id.clone()), &id, "{key}");
        }
        assert_eq!(new, ids.len(), "round {round}: one new order per key");
        placed += ids.len() as i64;
    }
    assert_eq!(stored(&app).await, [placed, placed, placed]);
}

#[tokio::test]
async fn a_key_older_than_its_hours_is_released_and_places_a_new_order() {
    let app = spawn_app_with(|settings| {
        settings.intake.key_sweep_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let body = valid_order();
    let old = post_with_key(&app, "old-key", &body).await;
    assert_eq!(old.status(), 201);
    let old: Value = old.json().await.unwrap();
    let recent = post_with_key(&app, "recent-key", &body).await;
    assert_eq!(recent.status(), 201);
    let recent: Value = recent.json().await.unwrap();
    // Placed a day and an hour ago (the default keeps keys 24 hours).
    let old_id = old["id"].as_str().unwrap();
    app.db
        .execute_unprepared(&format!(
            "UPDATE orders SET created_at = created_at - interval '25 hours' WHERE id = '{old_id}'"
        ))
        .await
        .unwrap();
    test_support::wait_until("the old key released", DEADLINE, || async {
        (app.count(&format!(
            "SELECT count(*) FROM orders WHERE id = '{old_id}' AND idempotency_key IS NULL"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;

    // The released key places a new order; the recent one still answers its order.
    let again = post_with_key(&app, "old-key", &body).await;
    assert_eq!(again.status(), 201);
    assert!(again.headers().get(REPLAYED).is_none());
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["id"], old["id"]);
    let retried = post_with_key(&app, "recent-key", &body).await;
    assert_eq!(retried.headers()[REPLAYED], "true");
    assert_eq!(retried.json::<Value>().await.unwrap()["id"], recent["id"]);
    assert_eq!(stored(&app).await, [3, 3, 3]);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "idempotency_keys_released_total 1"),
        "{metrics}"
    );
}
