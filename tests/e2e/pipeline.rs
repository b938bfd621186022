use std::collections::HashMap;

use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{order, spawn_pipeline};

#[tokio::test]
async fn an_order_goes_from_pending_to_completed_through_both_services() {
    let pipeline = spawn_pipeline("10000.00").await;
    let placed = pipeline.place(&order("customer-123", 2, "10.50")).await;
    assert_eq!(placed["status"], "pending");
    let id = placed["id"].as_str().unwrap();

    let done = pipeline.wait_until_final(id).await;

    assert_eq!(done["status"], "completed");
    assert_eq!(done["error_message"], Value::Null);
    assert_eq!(done["total_amount"], "21.00");
    let history = pipeline
        .get(pipeline.orders_url(&format!("/orders/{id}/history")))
        .await;
    let statuses: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["pending", "completed"]);
    let record = pipeline
        .get(pipeline.processor_url(&format!("/processed/{id}")))
        .await;
    assert_eq!(record["decision"], "completed");
    assert_eq!(record["attempts"], 1);
    pipeline.assert_agreement(&[id.to_owned()]).await;
}

#[tokio::test]
async fn a_customer_follows_its_own_order_and_no_one_elses() {
    let pipeline = spawn_pipeline("10000.00").await;
    let alice = crate::helpers::client_with_token(&pipeline.issuer.customer("alice"));
    let bob = crate::helpers::client_with_token(&pipeline.issuer.customer("bob"));
    let body =
        serde_json::json!({"items": [{"product_id": "product-1", "quantity": 1, "price": "3.00"}]});
    let response = alice
        .post(pipeline.orders_url("/orders"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["customer_id"], "alice");
    let id = placed["id"].as_str().unwrap().to_owned();
    let url = pipeline.orders_url(&format!("/orders/{id}"));
    let done = test_support::wait_until(
        "alice's order to be final",
        crate::helpers::DEADLINE,
        || async {
            let order: Value = alice.get(&url).send().await.ok()?.json().await.ok()?;
            (order["status"] != "pending").then_some(order)
        },
    )
    .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(bob.get(&url).send().await.unwrap().status(), 404);
    let bobs: Value = bob
        .get(pipeline.orders_url("/orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["items"], serde_json::json!([]));
    // The processor's records are for operators.
    let record = alice
        .get(pipeline.processor_url(&format!("/processed/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(record.status(), 403);
    pipeline.assert_agreement(&[id]).await;
}

#[tokio::test]
async fn an_order_over_the_limit_ends_rejected_with_the_reason() {
    let pipeline = spawn_pipeline("10000.00").await;
    let placed = pipeline.place(&order("big-spender", 2, "5000.01")).await;
    let id = placed["id"].as_str().unwrap();

    let done = pipeline.wait_until_final(id).await;

    assert_eq!(done["status"], "rejected");
    let reason = done["error_message"].as_str().unwrap();
    assert!(
        reason.contains("10000.02") && reason.contains("10000.00"),
        "{reason}"
    );
    let history = pipeline
        .get(pipeline.orders_url(&format!("/orders/{id}/history")))
        .await;
    assert_eq!(history[1]["status"], "rejected");
    assert_eq!(history[1]["reason"], reason);
    pipeline.assert_agreement(&[id.to_owned()]).await;
}

#[tokio::test]
async fn a_burst_of_concurrent_orders_all_end_final_each_decided_once() {
    let pipeline = spawn_pipeline("100.00").await;
    let bodies: Vec<Value> = (0..60)
        .map(|i| {
            order(
                &format!("customer-{}", i % 7),
                1,
                if i % 3 == 0 { "150.00" } else { "20.00" },
            )
        })
        .collect();
    let placed = join_all(bodies.iter().map(|body| pipeline.place(body))).await;

    let mut statuses: HashMap<String, usize> = HashMap::new();
    for order in &placed {
        let id = order["id"].as_str().unwrap();
        let done = pipeline.wait_until_final(id).await;
        *statuses
            .entry(done["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
        let record = pipeline
            .get(pipeline.processor_url(&format!("/processed/{id}")))
            .await;
        assert_eq!(record["decision"], done["status"]);
        let history = pipeline
            .get(pipeline.orders_url(&format!("/orders/{id}/history")))
            .await;
        assert_eq!(history.as_array().unwrap().len(), 2, "one move per order");
    }
    assert_eq!(statuses.get("rejected"), Some(&20));
    assert_eq!(statuses.get("completed"), Some(&40));
    let ids: Vec<String> = placed
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    pipeline.assert_agreement(&ids).await;
}
