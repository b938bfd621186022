//! The operator's view of the dead-letter queue: listing, replaying, and who may do it.

use std::process::Command;

use contracts::events::{OrderProcessed, ProcessingStatus};
use messaging::headers::{self, Headers};
use messaging::topology::routing_keys;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, DEADLINE, TestApp, order_created, spawn_app, spawn_app_with};

async fn poison(app: &TestApp, body: &[u8]) {
    app.probe
        .publish_raw(
            routing_keys::ORDER_CREATED,
            body,
            lapin::BasicProperties::default().with_message_id("poison-1".into()),
        )
        .await;
}

async fn wait_for_dead_letters(app: &TestApp, count: u32) {
    let dlq = app
        .settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    test_support::wait_until("the dead-letter queue", DEADLINE, || async {
        (app.probe.message_count(&dlq).await == count).then_some(())
    })
    .await;
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn operator_endpoints_refuse_missing_and_wrong_tokens() {
    let app = spawn_app().await;
    for (method, path) in [
        (reqwest::Method::GET, "/dead-letters"),
        (reqwest::Method::POST, "/dead-letters/replay"),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let response = admin(&app, method.clone(), path, token).await;
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
        }
        let response = admin(&app, method.clone(), path, Some(ADMIN_TOKEN)).await;
        assert_eq!(response.status(), 200, "{method} {path}");
    }
}

#[tokio::test]
async fn operator_endpoints_take_operator_tokens_and_refuse_customers() {
    let issuer = test_support::identity::TestIssuer::new();
    let auth = issuer.settings();
    let app = spawn_app_with(|settings| settings.auth = auth).await;
    for path in [
        "/dead-letters",
        "/processed/00000000-0000-0000-0000-000000000000",
    ] {
        let operator = admin(
            &app,
            reqwest::Method::GET,
            path,
            Some(&issuer.operator("olga")),
        )
        .await;
        assert_ne!(operator.status(), 401, "{path}");
        assert_ne!(operator.status(), 403, "{path}");
        let customer = admin(
            &app,
            reqwest::Method::GET,
            path,
            Some(&issuer.customer("alice")),
        )
        .await;
        assert_eq!(customer.status(), 403, "{path}");
        let challenge = customer.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
    }
}

#[tokio::test]
async fn without_keys_or_token_a_loopback_client_is_the_operator() {
    let app = spawn_app_with(|settings| settings.admin.token = None).await;
    let response = admin(&app, reqwest::Method::GET, "/dead-letters", None).await;
    assert_eq!(response.status(), 200);
    let response = admin(&app, reqwest::Method::POST, "/dead-letters/replay", None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn poison_whose_routing_key_the_dead_letter_exchange_does_not_route_is_dead_lettered_still() {
    let app = spawn_app().await;
    let queue = app.settings.amqp.topology.order_created_queue.clone();
    // Put straight into the work queue (its routing key is the queue's name), and with a forged
    // original routing key: the dead-letter exchange routes neither.
    app.probe
        .publish_to_queue(
            &queue,
            b"not json",
            lapin::BasicProperties::default().with_message_id("poison-direct".into()),
        )
        .await;
    let mut forged = Headers::default();
    forged.set_str(headers::ORIGINAL_ROUTING_KEY, "nowhere.at.all");
    app.probe
        .publish_raw(
            routing_keys::ORDER_CREATED,
            b"not json either",
            lapin::BasicProperties::default()
                .with_message_id("poison-forged".into())
                .with_headers(forged.into_table()),
        )
        .await;
    wait_for_dead_letters(&app, 2).await;
    // And the consumer goes on: an order placed after them is decided.
    let event = order_created(1, "1.00");
    app.probe.publish(&event).await;
    app.wait_for_record(event.correlation_id, |record| !record["decision"].is_null())
        .await;
    let listed: Value = admin(
        &app,
        reqwest::Method::GET,
        "/dead-letters",
        Some(ADMIN_TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    let mut ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|letter| letter["event_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["poison-direct", "poison-forged"], "{listed}");
}

#[tokio::test]
async fn poison_is_listed_without_an_order_and_replayed_only_when_asked() {
    let app = spawn_app().await;
    poison(&app, b"not json").await;
    wait_for_dead_letters(&app, 1).await;

    let listed: Value = admin(
        &app,
        reqwest::Method::GET,
        "/dead-letters",
        Some(ADMIN_TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    let letter = &listed[0];
    assert_eq!(letter["order_id"], Value::Null);
    assert_eq!(letter["event_id"], "poison-1");
    assert_eq!(letter["poison"], true);
    assert_eq!(letter["attempts"], 1);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{letter}"
    );
    assert!(letter["first_failed_at"].is_string());

    let replay = |body: Value| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/dead-letters/replay", app.address))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(replay(json!({})).await, json!({"replayed": 0}));
    wait_for_dead_letters(&app, 1).await;
    // Replayed, it is poison still, and lands in the dead-letter queue again.
    assert_eq!(
        replay(json!({"include_poison": true})).await,
        json!({"replayed": 1})
    );
    wait_for_dead_letters(&app, 1).await;
}

#[tokio::test]
async fn the_command_line_lists_and_replays_dead_letters() {
    let app = spawn_app_with(|settings| {
        settings.faults.transient_failure_rate = 1.0;
        settings.retry.immediate_attempts = 1;
        settings.retry.max_attempts = 1;
    })
    .await;
    let mut verdicts = app.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let event = order_created(1, "1.00");
    app.probe.publish(&event).await;
    wait_for_dead_letters(&app, 1).await;

    let cli = |args: &[&str]| {
        let amqp = &app.settings.amqp;
        let output = Command::new(env!("CARGO_BIN_EXE_processor_service"))
            .args(args)
            .env("PROCESSOR_SERVICE__AMQP__URL", amqp.url.expose())
            .env("PROCESSOR_SERVICE__AMQP__EXCHANGE", &amqp.topology.exchange)
            .env(
                "PROCESSOR_SERVICE__AMQP__DEAD_LETTER_EXCHANGE",
                &amqp.topology.dead_letter_exchange,
            )
            .env(
                "PROCESSOR_SERVICE__AMQP__ORDER_CREATED_QUEUE",
                &amqp.topology.order_created_queue,
            )
            .env(
                "PROCESSOR_SERVICE__AMQP__ORDER_PROCESSED_QUEUE",
                &amqp.topology.order_processed_queue,
            )
            .env(
                "PROCESSOR_SERVICE__AMQP__ORDER_CREATED_DEAD_LETTER_QUEUE",
                &amqp.topology.order_created_dead_letter_queue,
            )
            .env(
                "PROCESSOR_SERVICE__AMQP__ORDER_PROCESSED_DEAD_LETTER_QUEUE",
                &amqp.topology.order_processed_dead_letter_queue,
            )
            .output()
            .expect("run processor_service");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("JSON on stdout")
    };
    let listed = cli(&["dead-letters", "list"]);
    assert_eq!(listed[0]["order_id"], event.payload.order_id.to_string());
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 1 attempts")
    );

    let other = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        cli(&["dead-letters", "replay", "--order-id", &other]),
        json!({"replayed": 0})
    );
    assert_eq!(
        cli(&[
            "dead-letters",
            "replay",
            "--order-id",
            &event.payload.order_id.to_string()
        ]),
        json!({"replayed": 1})
    );
    // Still failing every attempt: it comes back to the dead-letter queue, marked replayed and
    // with its new failure...
    let dlq = app
        .settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    let returned = test_support::wait_until("the replayed letter back", DEADLINE, || async {
        let message = app.probe.peek(&dlq).await?;
        let h = Headers::from_table(message.properties.headers().as_ref());
        h.str(headers::REPLAYED_AT).is_some().then_some(h)
    })
    .await;
    assert_eq!(returned.int(headers::ATTEMPTS), Some(1));
    assert!(
        returned
            .str(headers::FAILURE_REASON)
            .unwrap()
            .contains("injected transient failure")
    );
    // ...and the order stays failed, decided and announced once: running out of attempts again
    // wrote no second `order.processed`.
    let record = app
        .wait_for_record(event.payload.order_id, |r| r["attempts"] == 2)
        .await;
    assert_eq!(record["decision"], "failed");
    assert!(record["reason"].as_str().unwrap().contains("gave up"));
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 1);
    let verdict = verdicts.next_event::<OrderProcessed>(DEADLINE).await;
    assert_eq!(verdict.payload.order_id, event.payload.order_id);
    assert_eq!(verdict.payload.status, ProcessingStatus::Failed);
    assert!(
        verdicts
            .try_next(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "a second order.processed was published"
    );
}

/// Every attempt fails, and the processor "crashes" once at `point` (the delivery left unsettled,
/// its channel closed, as a killed process leaves it). Returns the app and the order, once the
/// order's failure is recorded and its dead letter is in the queue `copies` times.
async fn crash_once_at(
    point: messaging::consumer::CrashPoint,
    copies: u32,
) -> (TestApp, uuid::Uuid) {
    let app = spawn_app_with(|settings| {
        settings.faults.transient_failure_rate = 1.0;
        settings.faults.crash_once_at = Some(point);
        settings.retry.max_attempts = 2;
        settings.retry.immediate_attempts = 1;
        settings.retry.initial_delay = std::time::Duration::from_millis(50);
        settings.retry.max_delay = std::time::Duration::from_millis(50);
    })
    .await;
    let mut tap = app.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let order = order_created(1, "5.00");
    let order_id = order.payload.order_id;
    app.probe.publish(&order).await;
    wait_for_dead_letters(&app, copies).await;
    let record = app
        .wait_for_record(order_id, |r| r["decision"] == "failed")
        .await;
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 2 attempts"),
        "{record}"
    );
    // The failure was announced; a redelivered copy announces it again, never anything else.
    let verdict = tap.next_event::<OrderProcessed>(DEADLINE).await;
    assert_eq!(verdict.payload.status, ProcessingStatus::Failed);
    while let Some(again) = tap.try_next(std::time::Duration::from_millis(300)).await {
        let again: contracts::events::Envelope<OrderProcessed> =
            contracts::events::Envelope::decode(&again.data).unwrap();
        assert_eq!(again.payload.status, ProcessingStatus::Failed);
        assert_eq!(again.payload.order_id, order_id);
    }
    (app, order_id)
}

async fn list(app: &TestApp) -> Value {
    let response = admin(
        app,
        reqwest::Method::GET,
        "/dead-letters",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_crash_between_recording_the_failure_and_dead_lettering_still_dead_letters_it() {
    let (app, order_id) =
        crash_once_at(messaging::consumer::CrashPoint::AfterFailureRecorded, 1).await;
    let listed = list(&app).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["order_id"], order_id.to_string());
    assert_eq!(listed[0]["copies"], 1);
    // Nothing else is waiting: the redelivered copy was dead-lettered, not retried again.
    assert_eq!(
        app.probe
            .message_count(&app.settings.amqp.topology.order_created_queue)
            .await,
        0
    );
}

#[tokio::test]
async fn copies_of_a_dead_letter_are_listed_and_replayed_once() {
    let (app, order_id) =
        crash_once_at(messaging::consumer::CrashPoint::AfterDeadLettered, 2).await;
    let listed = list(&app).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["order_id"], order_id.to_string());
    assert_eq!(listed[0]["copies"], 2);

    let replayed: Value = admin(
        &app,
        reqwest::Method::POST,
        "/dead-letters/replay",
        Some(ADMIN_TOKEN),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(replayed, json!({"replayed": 1}));
    // The replayed order fails again (every attempt does) and comes back once, as one copy.
    wait_for_dead_letters(&app, 1).await;
    let record = app.wait_for_record(order_id, |r| r["attempts"] == 5).await;
    assert_eq!(record["decision"], "failed");
}

#[tokio::test]
async fn listings_and_a_replay_at_once_each_find_every_dead_letter() {
    const LETTERS: u32 = 40;
    let app = spawn_app().await;
    let dlq = app
        .settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    let mut orders = Vec::new();
    for _ in 0..LETTERS {
        let event = order_created(1, "1.00");
        let mut failed = Headers::default();
        failed.set_str(headers::ORDER_ID, event.correlation_id.to_string());
        failed.set_str(headers::FAILURE_REASON, "gave up after 5 attempts: test");
        app.probe
            .publish_to_queue(
                &dlq,
                &serde_json::to_vec(&event).unwrap(),
                lapin::BasicProperties::default()
                    .with_message_id(event.event_id.to_string().into())
                    .with_headers(failed.into_table()),
            )
            .await;
        orders.push(event.correlation_id);
    }
    wait_for_dead_letters(&app, LETTERS).await;

    // Three operators list at once: each takes the queue's messages in turn, and sees them all.
    let (first, second, third) = tokio::join!(list(&app), list(&app), list(&app));
    for listed in [first, second, third] {
        assert_eq!(
            listed.as_array().unwrap().len(),
            LETTERS as usize,
            "{listed}"
        );
    }
    // A replay while two others list: it finds and moves every one.
    let replay = async {
        admin(
            &app,
            reqwest::Method::POST,
            "/dead-letters/replay",
            Some(ADMIN_TOKEN),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()
    };
    let (replayed, _, _) = tokio::join!(replay, list(&app), list(&app));
    assert_eq!(replayed, json!({"replayed": LETTERS}));
    for order in orders {
        app.wait_for_record(order, |record| !record["decision"].is_null())
            .await;
    }
    wait_for_dead_letters(&app, 0).await;
}
