//! `order.cancelled` on the work queue: a cancelled order is never decided, and a verdict the
//! cancellation raced is superseded.

use chrono::Utc;
use contracts::events::{Envelope, OrderCancelled};

use crate::helpers::{order_created, spawn_app};

fn cancelled(order_id: uuid::Uuid) -> Envelope<OrderCancelled> {
    Envelope::new(
        order_id,
        OrderCancelled {
            order_id,
            cancelled_at: Utc::now(),
        },
    )
}

#[tokio::test]
async fn an_order_cancelled_before_its_creation_arrives_is_never_decided() {
    let app = spawn_app().await;
    let created = order_created(1, "5.00");
    let order_id = created.payload.order_id;

    app.probe.publish(&cancelled(order_id)).await;
    let record = app
        .wait_for_record(order_id, |r| r["decision"] == "cancelled")
        .await;
    assert_eq!(record["attempts"], 0);

    app.probe.publish(&created).await;
    let record = app.wait_for_record(order_id, |r| r["attempts"] == 1).await;
    assert_eq!(record["decision"], "cancelled");
    // Counted, not decided: no order.processed was written.
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);

    // A duplicate cancellation changes nothing.
    app.probe.publish(&cancelled(order_id)).await;
    app.probe.publish(&created).await;
    let record = app.wait_for_record(order_id, |r| r["attempts"] == 2).await;
    assert_eq!(record["decision"], "cancelled");
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 0);
}

#[tokio::test]
async fn a_cancellation_supersedes_a_verdict_the_order_service_never_applied() {
    let app = spawn_app().await;
    let created = order_created(1, "5.00");
    let order_id = created.payload.order_id;
    app.probe.publish(&created).await;
    app.wait_for_record(order_id, |r| r["decision"] == "completed")
        .await;

    app.probe.publish(&cancelled(order_id)).await;
    let record = app
        .wait_for_record(order_id, |r| r["decision"] == "cancelled")
        .await;
    assert_eq!(record["attempts"], 1);
    // A redelivered creation leaves it cancelled and announces nothing more.
    app.probe.publish(&created).await;
    let record = app.wait_for_record(order_id, |r| r["attempts"] == 2).await;
    assert_eq!(record["decision"], "cancelled");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'order.processed'")
            .await,
        1,
        "only the superseded verdict's announcement"
    );
}
