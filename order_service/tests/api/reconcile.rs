//! The reconciliation sweep on its own: which orders it publishes again, how often, how many per
//! sweep, and that two instances sweeping at once publish each order once.

use chrono::Utc;
use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use messaging::broker::Broker;
use messaging::outbox::Relay;
use order_service::configuration::ReconcileSettings;
use order_service::reconcile::Reconciler;
use sea_orm::ConnectionTrait;
use std::time::Duration;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with, valid_order};

/// The app's own sweeper waits an hour: the test sweeps by hand.
async fn spawn() -> TestApp {
    spawn_app_with(|settings| settings.reconcile.interval = Duration::from_secs(3600)).await
}

fn reconciler(app: &TestApp, max_per_sweep: u32) -> Reconciler {
    let broker = Broker::new(
        app.settings.amqp.addresses(),
        app.settings.amqp.topology.clone(),
        "reconcile-test",
        10,
    );
    let relay = Relay::new(app.db.clone(), broker, app.settings.outbox.clone());
    Reconciler::new(
        app.db.clone(),
        relay.handoff(),
        ReconcileSettings {
            pending_after: Duration::from_secs(60),
            max_backoff: Duration::from_secs(600),
            interval: Duration::from_secs(3600),
            max_per_sweep,
        },
    )
}

/// Places `count` orders and makes them look placed an hour ago.
async fn old_pending_orders(app: &TestApp, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let order = app.create_order(&valid_order()).await;
        ids.push(order["id"].as_str().unwrap().parse().unwrap());
    }
    app.db
        .execute_unprepared("UPDATE orders SET created_at = now() - interval '1 hour'")
        .await
        .unwrap();
    ids
}

async fn republished(app: &TestApp, id: Uuid) -> i64 {
    // Each order's `order.created` has the order's id as event id: once when placed, then once
    // per re-publication.
    app.count(&format!(
        "SELECT count(*) - 1 FROM outbox WHERE event_id = '{id}' AND event_type = 'order.created'"
    ))
    .await
}

#[tokio::test]
async fn pending_orders_are_published_again_once_per_due_time_by_one_instance() {
    let app = spawn().await;
    let ids = old_pending_orders(&app, 5).await;
    let fresh = app.create_order(&valid_order()).await;
    let fresh: Uuid = fresh["id"].as_str().unwrap().parse().unwrap();

    let (a, b) = (reconciler(&app, 100), reconciler(&app, 100));
    let (first, second) = tokio::join!(a.sweep(), b.sweep());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.republished + second.republished,
        5,
        "{first:?} {second:?}"
    );
    for id in &ids {
        assert_eq!(republished(&app, *id).await, 1, "{id}");
    }
    // Placed a moment ago: not pending for long enough.
    assert_eq!(republished(&app, fresh).await, 0);

    // Not due again until its backoff has passed.
    let again = a.sweep().await.unwrap();
    assert!(again.ran);
    assert_eq!(again.republished, 0);
    app.db
        .execute_unprepared("UPDATE reconciliation SET next_at = now() - interval '1 second'")
        .await
        .unwrap();
    assert_eq!(a.sweep().await.unwrap().republished, 5);
    let attempts = app
        .count("SELECT min(attempts)::bigint FROM reconciliation")
        .await;
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_sweep_publishes_a_bounded_number_and_forgets_orders_that_became_final() {
    let app = spawn().await;
    let ids = old_pending_orders(&app, 5).await;
    let sweeper = reconciler(&app, 2);
    assert_eq!(sweeper.sweep().await.unwrap().republished, 2);
    assert_eq!(sweeper.sweep().await.unwrap().republished, 2);
    assert_eq!(sweeper.sweep().await.unwrap().republished, 1);
    assert_eq!(sweeper.sweep().await.unwrap().republished, 0);

    // One order becomes final; when due again, it leaves the table instead of going out again.
    let done = ids[0];
    app.probe
        .publish(&Envelope::new(
            done,
            OrderProcessed {
                order_id: done,
                status: ProcessingStatus::Completed,
                reason: None,
                processed_at: Utc::now(),
            },
        ))
        .await;
    app.wait_for_status(&done.to_string(), "completed").await;
    app.db
        .execute_unprepared("UPDATE reconciliation SET next_at = now() - interval '1 second'")
        .await
        .unwrap();
    let mut total = 0;
    for _ in 0..3 {
        total += sweeper.sweep().await.unwrap().republished;
    }
    assert_eq!(total, 4);
    assert_eq!(republished(&app, done).await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM reconciliation WHERE order_id = '{done}'"
        ))
        .await,
        0
    );
}
