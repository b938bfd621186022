use messaging::topology::QueueType;
use order_service::startup;
use tokio_util::sync::CancellationToken;

use crate::helpers::{DEADLINE, spawn_app};

#[tokio::test]
async fn health_answers_200_with_the_checks() {
    let app = spawn_app().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
}

#[tokio::test]
async fn ready_answers_200_once_database_and_broker_are_reachable() {
    let app = spawn_app().await;
    let body = test_support::wait_until("readiness", crate::helpers::DEADLINE, || async {
        let response = app.get("/ready").await;
        if response.status() == 200 {
            Some(response.json::<serde_json::Value>().await.unwrap())
        } else {
            None
        }
    })
    .await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["broker"], "ok");
}

#[tokio::test]
async fn ready_answers_503_naming_the_broker_when_it_is_unreachable() {
    let app = crate::helpers::spawn_app_with(|settings| {
        // Nothing listens on port 1.
        settings.amqp.url =
            service_kit::configuration::Secret::new("amqp://guest:guest@127.0.0.1:1/%2f");
    })
    .await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_ne!(body["checks"]["broker"], "ok");
    // Once it has tried, the check says why.
    test_support::wait_until("the broker check to give a reason", DEADLINE, || async {
        let body: serde_json::Value = app.get("/ready").await.json().await.unwrap();
        let broker = body["checks"]["broker"].as_str().unwrap().to_owned();
        broker.starts_with("error: not connected: ").then_some(())
    })
    .await;
    // Liveness stays 200, and orders are still accepted: the outbox holds their events.
    assert_eq!(app.get("/health").await.status(), 200);
    let response = app.post_order(&crate::helpers::valid_order()).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn unknown_routes_answer_a_problem_404() {
    let app = spawn_app().await;
    let response = app.get("/nope").await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn ready_names_the_brokers_refusal_when_the_queues_exist_with_another_kind() {
    // This one declares the queues as quorum queues (the default)...
    let app = spawn_app().await;
    // ...and a second instance on the same names wants classic queues.
    let mut settings = app.settings.clone();
    settings.amqp.topology.queue_type = QueueType::Classic;
    let other = startup::build(settings).await.unwrap();
    let address = format!("http://127.0.0.1:{}", other.port());
    let stop = CancellationToken::new();
    let running = tokio::spawn(other.run_until_stopped(stop.clone()));
    let broker = test_support::wait_until("the refusal in /ready", DEADLINE, || async {
        let response = app
            .client
            .get(format!("{address}/ready"))
            .send()
            .await
            .ok()?;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = response.json().await.ok()?;
        let broker = body["checks"]["broker"].as_str()?.to_owned();
        broker.contains("inequivalent arg").then_some(broker)
    })
    .await;
    assert!(broker.contains("PRECONDITION_FAILED"), "{broker}");
    stop.cancel();
    running.await.unwrap().unwrap();
}
