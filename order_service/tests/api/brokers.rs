//! Several broker addresses (`AMQP__URLS`): a connection tries them in turn, so a broker that
//! refuses leaves the service to the next one.

use contracts::events::{Envelope, OrderCreated};
use contracts::routing_keys;
use service_kit::configuration::Secret;

use crate::helpers::{DEADLINE, spawn_app_with, valid_order};

#[tokio::test]
async fn a_refusing_first_broker_leaves_the_service_to_the_next() {
    // Nothing listens on this port: the first address refuses every connection.
    let closed = test_support::free_port();
    let app = spawn_app_with(|settings| {
        settings.amqp.urls = Some(Secret::new(format!(
            "amqp://guest:guest@127.0.0.1:{closed}/%2f, {}",
            test_support::amqp_url()
        )));
    })
    .await;
    test_support::wait_until("the service to be ready", DEADLINE, || async {
        (app.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CREATED).await;
    let order = app.create_order(&valid_order()).await;
    let event: Envelope<OrderCreated> = tap.next_event(DEADLINE).await;
    assert_eq!(
        event.payload.order_id.to_string(),
        order["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn with_no_broker_answering_readiness_says_why() {
    let (one, two) = (test_support::free_port(), test_support::free_port());
    let app = spawn_app_with(|settings| {
        settings.amqp.urls = Some(Secret::new(format!(
            "amqp://guest:guest@127.0.0.1:{one}/%2f,amqp://guest:guest@127.0.0.1:{two}/%2f"
        )));
    })
    .await;
    let body = test_support::wait_until("readiness to say why", DEADLINE, || async {
        let response = app.get("/ready").await;
        let body: serde_json::Value = response.json().await.unwrap();
        body["checks"]["broker"]
            .as_str()
            .filter(|check| check.contains("refused"))
            .map(str::to_owned)
    })
    .await;
    assert!(body.starts_with("error: not connected"), "{body}");
    assert!(!body.contains("guest"), "no credentials: {body}");
}
