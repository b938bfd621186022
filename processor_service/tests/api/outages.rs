//! The processor's own database stops taking work, in each way the server can produce while it
//! runs: the consumer parks (stops taking deliveries, returns those in flight, probes), spends no
//! attempt, and every order ends with the decision the rules give it once the database answers.

use std::time::Duration;

use test_support::outage::{DatabaseOutage, TestRole};
use test_support::unique_id;

use crate::helpers::{DEADLINE, TestApp, order_created, spawn_app_with};

const ORDERS: usize = 20;

/// Retries as small as a recovery test can make them: an outage that cost attempts would fail
/// orders within a second.
fn small_retries(settings: &mut processor_service::configuration::Settings) {
    settings.retry.max_attempts = 2;
    settings.retry.immediate_attempts = 1;
    settings.retry.initial_delay = std::time::Duration::from_millis(50);
    settings.retry.max_delay = std::time::Duration::from_millis(200);
}

async fn spawn_as(role: &TestRole) -> (TestApp, String) {
    let database = format!("processor_{}", role.name);
    let settings = role.database_settings(&database);
    let app = spawn_app_with(move |s| {
        s.database = settings;
        small_retries(s);
    })
    .await;
    (app, database)
}

/// Waits until the work queue holds `count` messages and nobody consumes it: parked.
async fn wait_parked(app: &TestApp, count: u32) {
    let queue = app.settings.amqp.topology.order_created_queue.clone();
    test_support::wait_until("the consumer to park", DEADLINE, || async {
        (app.probe.queue_state(&queue).await == (count, 0)).then_some(())
    })
    .await;
}

/// What the consumer is seen to do while the outage lasts.
#[derive(PartialEq)]
enum WhileItLasts {
    /// Nothing to wait for: the pool replaces the sessions.
    Reconnects,
    /// It parks; probes pass (the server answers) and it tries again, parking again.
    Parks,
    /// It parks and stays parked: its probes fail.
    StaysParked,
}

/// Runs `outage` over orders published while it lasts, and checks the promise.
async fn outage_costs_no_attempt(
    outage: impl FnOnce(&TestRole) -> DatabaseOutage,
    expected: WhileItLasts,
) {
    let role = TestRole::create(&format!("r{}", unique_id())).await;
    let (app, database) = spawn_as(&role).await;
    // Warm: one order through, so the pool holds sessions the outage has to break.
    let warm = order_created(1, "1.00");
    app.probe.publish(&warm).await;
    app.wait_for_record(warm.payload.order_id, |r| r["decision"] == "completed")
        .await;

    let outage = outage(&role).begin(&database).await;
    let orders: Vec<_> = (0..ORDERS).map(|_| order_created(2, "10.50")).collect();
    for order in &orders {
        app.probe.publish(order).await;
    }
    if expected != WhileItLasts::Reconnects {
        wait_parked(&app, ORDERS as u32).await;
    }
    if expected == WhileItLasts::StaysParked {
        // Parked, it probes without taking messages: nobody consumes while the outage lasts.
        let queue = &app.settings.amqp.topology.order_created_queue;
        for _ in 0..20 {
            assert_eq!(
                app.probe.queue_state(queue).await,
                (ORDERS as u32, 0),
                "the consumer took deliveries while its database refused sessions"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    outage.end().await;

    for order in &orders {
        let record = app
            .wait_for_record(order.payload.order_id, |r| !r["decision"].is_null())
            .await;
        assert_eq!(record["decision"], "completed", "{record}");
        assert_eq!(record["attempts"], 1, "{record}");
    }
    let dead_letters = &app.settings.amqp.topology.order_created_dead_letter_queue;
    assert_eq!(app.probe.message_count(dead_letters).await, 0);
    for queue in app.settings.retry_tiers().queues() {
        assert_eq!(app.probe.message_count(&queue).await, 0, "{queue}");
    }
}

#[tokio::test]
async fn terminated_sessions_cost_no_attempt() {
    outage_costs_no_attempt(
        |_| DatabaseOutage::SessionsTerminated,
        WhileItLasts::Reconnects,
    )
    .await;
}

#[tokio::test]
async fn a_database_refusing_sessions_parks_the_consumer_and_costs_no_attempt() {
    outage_costs_no_attempt(
        |_| DatabaseOutage::ConnectionsRefused,
        WhileItLasts::StaysParked,
    )
    .await;
}

#[tokio::test]
async fn a_full_connection_limit_parks_the_consumer_and_costs_no_attempt() {
    outage_costs_no_attempt(
        |role| DatabaseOutage::ConnectionLimitZero {
            role: role.name.clone(),
        },
        WhileItLasts::StaysParked,
    )
    .await;
}

#[tokio::test]
async fn statements_cancelled_by_statement_timeout_cost_no_attempt() {
    outage_costs_no_attempt(
        |_| DatabaseOutage::StatementTimeout {
            table: "processing".into(),
        },
        WhileItLasts::Parks,
    )
    .await;
}
