//! Applying `order.processed`: idempotent and monotonic.

use chrono::Utc;
use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app, valid_order};

fn verdict(
    order_id: Uuid,
    status: ProcessingStatus,
    reason: Option<&str>,
) -> Envelope<OrderProcessed> {
    Envelope::new(
        order_id,
        OrderProcessed {
            order_id,
            status,
            reason: reason.map(str::to_owned),
            processed_at: Utc::now(),
        },
    )
}

async fn new_order(app: &TestApp) -> Uuid {
    app.create_order(&valid_order()).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn history(app: &TestApp, id: Uuid) -> Vec<Value> {
    app.get_json(&format!("/orders/{id}/history"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the consumer has emptied its queue and holds no unacknowledged message, so
/// everything published before has been applied (or deliberately ignored).
async fn wait_for_consumer_to_drain(app: &TestApp) {
    let queue = app.settings.amqp.topology.order_processed_queue.clone();
    test_support::wait_until("the order.processed queue to drain", DEADLINE, || async {
        (app.probe.message_count(&queue).await == 0 && app.count("SELECT 0::bigint").await == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_completed_verdict_completes_the_order_and_is_recorded_in_its_history() {
    let app = spawn_app().await;
    let id = new_order(&app).await;
    app.probe
        .publish(&verdict(id, ProcessingStatus::Completed, None))
        .await;
    let order = app.wait_for_status(&id.to_string(), "completed").await;
    assert_eq!(order["error_message"], Value::Null);
    let history = history(&app, id).await;
    let statuses: Vec<_> = history.iter().map(|h| h["status"].clone()).collect();
    assert_eq!(statuses, ["pending", "completed"]);
}

#[tokio::test]
async fn rejected_and_failed_verdicts_carry_their_reason() {
    let app = spawn_app().await;
    let rejected = new_order(&app).await;
    let failed = new_order(&app).await;
    app.probe
        .publish(&verdict(
            rejected,
            ProcessingStatus::Rejected,
            Some("too expensive"),
        ))
        .await;
    app.probe
        .publish(&verdict(failed, ProcessingStatus::Failed, Some("gave up")))
        .await;
    let order = app.wait_for_status(&rejected.to_string(), "rejected").await;
    assert_eq!(order["error_message"], "too expensive");
    let order = app.wait_for_status(&failed.to_string(), "failed").await;
    assert_eq!(order["error_message"], "gave up");
    assert_eq!(history(&app, failed).await[1]["reason"], "gave up");
}

#[tokio::test]
async fn duplicate_and_late_verdicts_change_nothing_and_write_nothing() {
    let app = spawn_app().await;
    let id = new_order(&app).await;
    let completed = verdict(id, ProcessingStatus::Completed, None);
    app.probe.publish(&completed).await;
    let before = app.wait_for_status(&id.to_string(), "completed").await;

    // The same event again, another completed verdict, and a late rejection.
    app.probe.publish(&completed).await;
    app.probe
        .publish(&verdict(id, ProcessingStatus::Completed, None))
        .await;
    app.probe
        .publish(&verdict(id, ProcessingStatus::Rejected, Some("late")))
        .await;
    // A marker verdict on another order: once it is applied, the ones before it were handled.
    let marker = new_order(&app).await;
    app.probe
        .publish(&verdict(marker, ProcessingStatus::Completed, None))
        .await;
    app.wait_for_status(&marker.to_string(), "completed").await;
    wait_for_consumer_to_drain(&app).await;

    let after = app.get_json(&format!("/orders/{id}")).await;
    assert_eq!(after, before, "the order did not move");
    assert_eq!(
        history(&app, id).await.len(),
        2,
        "no history row was written twice"
    );
    assert_eq!(
        app.probe
            .message_count(&app.settings.amqp.topology.order_processed_dead_letter_queue)
            .await,
        0,
        "duplicates are not failures"
    );
}

#[tokio::test]
async fn a_verdict_about_an_unknown_order_is_dead_lettered_and_consuming_goes_on() {
    let app = spawn_app().await;
    app.probe
        .publish(&verdict(Uuid::new_v4(), ProcessingStatus::Completed, None))
        .await;
    let dlq = app
        .settings
        .amqp
        .topology
        .order_processed_dead_letter_queue
        .clone();
    test_support::wait_until("the verdict in the dead-letter queue", DEADLINE, || async {
        (app.probe.message_count(&dlq).await == 1).then_some(())
    })
    .await;
    let id = new_order(&app).await;
    app.probe
        .publish(&verdict(id, ProcessingStatus::Completed, None))
        .await;
    app.wait_for_status(&id.to_string(), "completed").await;
}

#[tokio::test]
async fn a_message_that_is_not_an_event_is_dead_lettered_and_consuming_goes_on() {
    let app = spawn_app().await;
    app.probe
        .publish_raw(
            messaging::topology::routing_keys::ORDER_PROCESSED,
            b"not json",
            lapin::BasicProperties::default().with_message_id("m-1".into()),
        )
        .await;
    let dlq = app
        .settings
        .amqp
        .topology
        .order_processed_dead_letter_queue
        .clone();
    test_support::wait_until(
        "the poison message in the dead-letter queue",
        DEADLINE,
        || async { (app.probe.message_count(&dlq).await == 1).then_some(()) },
    )
    .await;
    let id = new_order(&app).await;
    app.probe
        .publish(&verdict(id, ProcessingStatus::Completed, None))
        .await;
    app.wait_for_status(&id.to_string(), "completed").await;
}
