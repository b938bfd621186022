//! The pipeline on quorum queues (`AMQP__QUEUE_TYPE=quorum`): orders flow, fail into the
//! dead-letter queue and replay to completion as on classic queues.

use futures_util::future::join_all;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use messaging::topology::QueueType;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, order, spawn_pipeline_with};

/// Declares `queue` as a classic durable queue with `arguments`; the broker's refusal, if any.
async fn declare_as_classic(queue: &str, arguments: FieldTable) -> Option<String> {
    let connection = lapin::Connection::connect(
        &test_support::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await;
    let _ = connection.close(200, "OK".into()).await;
    declared.err().map(|error| error.to_string())
}

#[tokio::test]
async fn on_quorum_queues_orders_fail_into_the_dead_letter_queue_and_complete_after_a_replay() {
    let mut pipeline = spawn_pipeline_with(|orders, processor| {
        orders.amqp.topology.queue_type = QueueType::Quorum;
        processor.amqp.topology.queue_type = QueueType::Quorum;
        processor.retry.initial_delay = std::time::Duration::from_millis(20);
        processor.retry.max_delay = std::time::Duration::from_millis(200);
        processor.faults.transient_failure_rate = 1.0;
        processor.retry.immediate_attempts = 1;
        processor.retry.max_attempts = 2;
    })
    .await;

    // The four queues are quorum queues: the broker refuses them as classic ones.
    let amqp = pipeline.processor_settings.amqp.clone();
    let mut with_dead_letter_exchange = FieldTable::default();
    // Everything a quorum work queue is declared with but its kind: at-least-once dead-lettering
    // (which needs reject-publish overflow) and the delivery limit.
    with_dead_letter_exchange.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(
            amqp.topology.dead_letter_exchange.as_bytes(),
        )),
    );
    with_dead_letter_exchange.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString(LongString::from("at-least-once")),
    );
    with_dead_letter_exchange.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    with_dead_letter_exchange.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(amqp.topology.delivery_limit)),
    );
    for (queue, arguments) in [
        (
            &amqp.topology.order_created_queue,
            with_dead_letter_exchange.clone(),
        ),
        (
            &amqp.topology.order_processed_queue,
            with_dead_letter_exchange.clone(),
        ),
        (
            &amqp.topology.order_created_dead_letter_queue,
            FieldTable::default(),
        ),
        (
            &amqp.topology.order_processed_dead_letter_queue,
            FieldTable::default(),
        ),
    ] {
        let refusal = declare_as_classic(queue, arguments).await;
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("x-queue-type")),
            "{queue}: {refusal:?}"
        );
    }

    // So are the retry queues, of both services: a message waiting for its retry is replicated.
    let retry_queues = [
        pipeline.processor_settings.retry_tiers().queues(),
        pipeline.order_settings.retry_tiers().queues(),
    ]
    .concat();
    assert!(!retry_queues.is_empty());
    for queue in &retry_queues {
        let refusal = declare_as_classic(queue, FieldTable::default()).await;
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("inequivalent arg")),
            "{queue}: {refusal:?}"
        );
    }

    let bodies: Vec<Value> = (0..5).map(|i| order(&format!("q{i}"), 1, "5.00")).collect();
    let placed = join_all(bodies.iter().map(|body| pipeline.place(body))).await;
    let ids: Vec<String> = placed
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let failed = pipeline.wait_until_final(id).await;
        assert_eq!(failed["status"], "failed", "{failed}");
    }
    let dlq = amqp.topology.order_created_dead_letter_queue.clone();
    test_support::wait_until("every order in the dead-letter queue", DEADLINE, || async {
        (pipeline.probe.message_count(&dlq).await == 5).then_some(())
    })
    .await;

    pipeline
        .restart_processor(|processor| processor.faults.transient_failure_rate = 0.0)
        .await;
    let replayed = pipeline.admin_post("/dead-letters/replay", json!({})).await;
    assert_eq!(replayed, json!({"replayed": 5}));
    for id in &ids {
        pipeline
            .wait_for_order(id, "completed", |s| s == "completed")
            .await;
        assert_eq!(
            pipeline.history(id).await,
            ["pending", "failed", "completed"]
        );
    }
    assert_eq!(pipeline.probe.message_count(&dlq).await, 0);
    pipeline.assert_agreement(&ids).await;
}

/// A message returned to a quorum work queue more often than `AMQP__DELIVERY_LIMIT` is
/// dead-lettered by RabbitMQ itself, without this pipeline's headers: it is still listed under
/// its order, and replayed to completion.
#[tokio::test]
async fn a_message_the_broker_dead_letters_at_its_delivery_limit_is_listed_and_replayed() {
    let mut pipeline = spawn_pipeline_with(|orders, processor| {
        orders.amqp.topology.queue_type = QueueType::Quorum;
        processor.amqp.topology.queue_type = QueueType::Quorum;
        orders.amqp.topology.delivery_limit = 2;
        processor.amqp.topology.delivery_limit = 2;
    })
    .await;
    pipeline.stop_processor().await;
    let placed = pipeline.place(&order("limit", 1, "5.00")).await;
    let id = placed["id"].as_str().unwrap().to_owned();
    let amqp = pipeline.processor_settings.amqp.clone();
    test_support::wait_until("the order.created in the work queue", DEADLINE, || async {
        (pipeline
            .probe
            .message_count(&amqp.topology.order_created_queue)
            .await
            == 1)
            .then_some(())
    })
    .await;
    // Returned until the broker gives up on it.
    test_support::wait_until("the broker to dead-letter it", DEADLINE, || async {
        pipeline
            .probe
            .take_and_return(&amqp.topology.order_created_queue)
            .await;
        (pipeline
            .probe
            .message_count(&amqp.topology.order_created_dead_letter_queue)
            .await
            == 1)
            .then_some(())
    })
    .await;

    pipeline.start_processor().await;
    let listed = pipeline.admin_get("/dead-letters").await;
    assert_eq!(listed[0]["order_id"], id.as_str(), "{listed}");
    let reason = listed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("delivery_limit"), "{reason}");
    let replayed = pipeline
        .admin_post("/dead-letters/replay", json!({"order_ids": [id]}))
        .await;
    assert_eq!(replayed, json!({"replayed": 1}));
    pipeline
        .wait_for_order(&id, "completed", |s| s == "completed")
        .await;
    pipeline.assert_agreement(&[id]).await;
}
