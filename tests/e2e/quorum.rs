//! The pipeline on quorum queues (`AMQP__QUEUE_TYPE=quorum`): orders flow, fail into the
//! dead-letter queue and replay to completion as on classic queues.

use futures_util::future::join_all;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use shared::topology::QueueType;

use crate::helpers::{DEADLINE, order, spawn_pipeline_with};

/// Declares `queue` as a classic durable queue with `arguments`; the broker's refusal, if any.
async fn declare_as_classic(queue: &str, arguments: FieldTable) -> Option<String> {
    let connection = lapin::Connection::connect(
        &shared::testing::amqp_url(),
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
        orders.amqp.queue_type = QueueType::Quorum;
        processor.amqp.queue_type = QueueType::Quorum;
        processor.retry.initial_delay_ms = 20;
        processor.retry.max_delay_ms = 200;
        processor.faults.transient_failure_rate = 1.0;
        processor.retry.immediate_attempts = 1;
        processor.retry.max_attempts = 2;
    })
    .await;

    // The four queues are quorum queues: the broker refuses them as classic ones.
    let amqp = pipeline.processor_settings.amqp.clone();
    let mut with_dead_letter_exchange = FieldTable::default();
    with_dead_letter_exchange.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(amqp.dead_letter_exchange.as_bytes())),
    );
    for (queue, arguments) in [
        (&amqp.order_created_queue, with_dead_letter_exchange.clone()),
        (
            &amqp.order_processed_queue,
            with_dead_letter_exchange.clone(),
        ),
        (&amqp.order_created_dead_letter_queue, FieldTable::default()),
        (
            &amqp.order_processed_dead_letter_queue,
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
    let dlq = amqp.order_created_dead_letter_queue.clone();
    shared::testing::wait_until("every order in the dead-letter queue", DEADLINE, || async {
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
