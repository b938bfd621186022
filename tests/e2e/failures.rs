//! Failures handled end to end: transient failures retried, exhausted ones failed and
//! dead-lettered with their headers, then replayed to completion.

use std::collections::HashSet;
use std::time::Duration;

use contracts::events::{OrderProcessed, ProcessingStatus};
use futures_util::future::join_all;
use messaging::headers::{self, Headers};
use messaging::topology::routing_keys;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, order, spawn_pipeline_with};

fn fast_retries(processor: &mut processor_service::configuration::Settings) {
    processor.retry.initial_delay = std::time::Duration::from_millis(20);
    processor.retry.max_delay = std::time::Duration::from_millis(200);
}

#[tokio::test]
async fn with_half_of_all_attempts_failing_every_order_completes_exactly_once() {
    let pipeline = spawn_pipeline_with(|_, processor| {
        fast_retries(processor);
        processor.faults.transient_failure_rate = 0.5;
        processor.retry.immediate_attempts = 3;
        // P(one delivery fails) = 0.5^3; P(an order fails) = 0.125^10: never, in practice.
        processor.retry.max_attempts = 10;
    })
    .await;
    let mut verdicts = pipeline.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let mut ids = Vec::new();
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let bodies: Vec<Value> = chunk
            .iter()
            .map(|i| order(&format!("c{}", i % 10), 1, "5.00"))
            .collect();
        let placed = join_all(bodies.iter().map(|body| pipeline.place(body))).await;
        ids.extend(placed.iter().map(|o| o["id"].as_str().unwrap().to_owned()));
    }

    let mut retried = 0;
    for id in &ids {
        let done = pipeline.wait_until_final(id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(pipeline.history(id).await, ["pending", "completed"]);
        let record = pipeline
            .get(pipeline.processor_url(&format!("/processed/{id}")))
            .await;
        assert_eq!(record["decision"], "completed");
        if record["attempts"].as_i64().unwrap() > 1 {
            retried += 1;
        }
    }
    // About one delivery in eight fails all its in-process tries and comes back through a retry
    // queue; those orders show more than one attempt.
    assert!(retried > 0, "no order needed a broker redelivery");
    // One result event per order.
    let mut announced = HashSet::new();
    for _ in 0..ids.len() {
        let event = verdicts.next_event::<OrderProcessed>(DEADLINE).await;
        assert_eq!(event.payload.status, ProcessingStatus::Completed);
        assert!(
            announced.insert(event.payload.order_id.to_string()),
            "announced twice"
        );
    }
    assert_eq!(announced, ids.iter().cloned().collect::<HashSet<_>>());
    assert!(
        verdicts
            .try_next(Duration::from_millis(300))
            .await
            .is_none()
    );
    let dead = pipeline.admin_get("/dead-letters").await;
    assert_eq!(dead, json!([]));
    pipeline.assert_agreement(&ids).await;
}

#[tokio::test]
async fn with_every_attempt_failing_orders_fail_are_dead_lettered_and_are_decided_after_a_replay() {
    let mut pipeline = spawn_pipeline_with(|_, processor| {
        fast_retries(processor);
        processor.faults.transient_failure_rate = 1.0;
        processor.retry.immediate_attempts = 2;
        processor.retry.max_attempts = 3;
    })
    .await;
    let mut verdicts = pipeline.probe.tap(routing_keys::ORDER_PROCESSED).await;
    // The first two are over the limit the processor has when they are replayed.
    let bodies: Vec<Value> = (0..10)
        .map(|i| order(&format!("c{i}"), 1, if i < 2 { "50.00" } else { "5.00" }))
        .collect();
    let placed = join_all(bodies.iter().map(|body| pipeline.place(body))).await;
    let ids: Vec<String> = placed
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();

    for id in &ids {
        let failed = pipeline.wait_until_final(id).await;
        assert_eq!(failed["status"], "failed");
        let reason = failed["error_message"].as_str().unwrap();
        assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    }

    // The dead-letter queue holds each order once, with the failure headers.
    let dlq = pipeline
        .processor_settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    test_support::wait_until(
        "every order in the dead-letter queue",
        crate::helpers::DEADLINE,
        || async { (pipeline.probe.message_count(&dlq).await == 10).then_some(()) },
    )
    .await;
    let message = pipeline.probe.peek(&dlq).await.unwrap();
    let h = Headers::from_table(message.properties.headers().as_ref());
    assert!(
        h.str(headers::FAILURE_REASON)
            .unwrap()
            .contains("injected transient failure")
    );
    assert_eq!(h.int(headers::ATTEMPTS), Some(3));
    assert!(h.time(headers::FIRST_FAILED_AT).is_some());
    assert!(h.time(headers::LAST_FAILED_AT).unwrap() >= h.time(headers::FIRST_FAILED_AT).unwrap());
    assert_eq!(
        h.str(headers::ORIGINAL_ROUTING_KEY).as_deref(),
        Some("order.created")
    );
    let listed = pipeline.admin_get("/dead-letters").await;
    let listed_ids: HashSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["attempts"], 3);
            assert_eq!(d["poison"], false);
            d["order_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed_ids, ids.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(
        pipeline.probe.message_count(&dlq).await,
        10,
        "listing consumes nothing"
    );

    // A healthy processor with a lower limit, then a replay of two orders (now over the limit:
    // rejected, a move out of failed both services allow), then of all the rest.
    pipeline
        .restart_processor(|processor| {
            processor.faults.transient_failure_rate = 0.0;
            processor.rules.max_order_total = "10.00".parse().unwrap();
        })
        .await;
    let first_two: Vec<Value> = ids[..2].iter().map(|id| json!(id)).collect();
    let replayed = pipeline
        .admin_post("/dead-letters/replay", json!({"order_ids": first_two}))
        .await;
    assert_eq!(replayed, json!({"replayed": 2}));
    for id in &ids[..2] {
        pipeline
            .wait_for_order(id, "rejected", |s| s == "rejected")
            .await;
        assert_eq!(
            pipeline.history(id).await,
            ["pending", "failed", "rejected"]
        );
    }
    assert_eq!(pipeline.probe.message_count(&dlq).await, 8);
    let replayed = pipeline.admin_post("/dead-letters/replay", json!({})).await;
    assert_eq!(replayed, json!({"replayed": 8}));
    for id in &ids[2..] {
        let done = pipeline
            .wait_for_order(id, "completed", |s| s == "completed")
            .await;
        assert_eq!(done["error_message"], Value::Null);
        assert_eq!(
            pipeline.history(id).await,
            ["pending", "failed", "completed"]
        );
        let record = pipeline
            .get(pipeline.processor_url(&format!("/processed/{id}")))
            .await;
        assert_eq!(record["decision"], "completed");
    }
    assert_eq!(pipeline.probe.message_count(&dlq).await, 0);
    pipeline.assert_agreement(&ids).await;
    // Exactly one result event per order and outcome: one failed, then one completed or rejected.
    let mut announced = HashSet::new();
    for _ in 0..2 * ids.len() {
        let event = verdicts.next_event::<OrderProcessed>(DEADLINE).await;
        assert!(
            announced.insert((event.payload.order_id.to_string(), event.payload.status)),
            "announced twice: {event:?}"
        );
    }
    assert!(
        verdicts
            .try_next(Duration::from_millis(300))
            .await
            .is_none()
    );
}
