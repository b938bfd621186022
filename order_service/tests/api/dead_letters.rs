//! The dead letters of `order.processed`: a verdict the service cannot apply (a real error, not an
//! outage) is retried a bounded number of times through its retry queues, then dead-lettered with
//! the reason in its headers; the operator lists and replays it over HTTP and from the command
//! line, with the same shapes and protection as the processor's.

use std::process::Command;

use chrono::Utc;
use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use service_kit::configuration::Secret;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, valid_order};

const TOKEN: &str = "order-admin-token-0123456789abcdef";

/// With the static token; `loopback_without_token` keeps loopback clients in without one.
async fn spawn(loopback_without_token: bool) -> TestApp {
    spawn_app_with(|settings| {
        settings.admin.token = Some(Secret::new(TOKEN));
        settings.auth.loopback_without_token = Some(loopback_without_token);
        settings.retry.max_attempts = 2;
        settings.retry.initial_delay = std::time::Duration::from_millis(50);
        settings.retry.max_delay = std::time::Duration::from_millis(50);
    })
    .await
}

fn verdict(order_id: Uuid, status: ProcessingStatus) -> Envelope<OrderProcessed> {
    Envelope::new(
        order_id,
        OrderProcessed {
            order_id,
            status,
            reason: None,
            processed_at: Utc::now(),
        },
    )
}

/// Makes every update of `order_id` fail with a real (non-infrastructure) error.
async fn refuse_updates_of(app: &TestApp, order_id: Uuid) {
    app.db
        .execute_unprepared(&format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'order % is frozen', NEW.id; END $$; \
             CREATE TRIGGER refuse BEFORE UPDATE ON orders FOR EACH ROW \
             WHEN (NEW.id = '{order_id}') EXECUTE FUNCTION refuse();"
        ))
        .await
        .unwrap();
}

async fn wait_for_dead_letters(app: &TestApp, count: u32) {
    let queue = app
        .settings
        .amqp
        .topology
        .order_processed_dead_letter_queue
        .clone();
    test_support::wait_until("the dead-letter queue", DEADLINE, || async {
        (app.probe.message_count(&queue).await == count).then_some(())
    })
    .await;
}

fn cli(app: &TestApp, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .args(args)
        .envs(test_support::service_env(
            "ORDER_SERVICE",
            0,
            app.settings.database.url.expose(),
            &app.settings.amqp,
        ))
        .output()
        .expect("run order_service");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn a_verdict_that_cannot_be_applied_is_dead_lettered_listed_and_replayed() {
    let app = spawn(true).await;
    let order = app.create_order(&valid_order()).await;
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    refuse_updates_of(&app, id).await;

    app.probe
        .publish(&verdict(id, ProcessingStatus::Completed))
        .await;
    wait_for_dead_letters(&app, 1).await;
    assert_eq!(
        app.get_json(&format!("/orders/{id}")).await["status"],
        "pending"
    );

    let response = app
        .client
        .get(format!("{}/dead-letters", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    let letter = &listed[0];
    assert_eq!(letter["order_id"], id.to_string());
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["poison"], false);
    assert_eq!(letter["copies"], 1);
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("gave up after 2 attempts") && reason.contains("is frozen"),
        "{reason}"
    );
    assert_eq!(cli(&app, &["dead-letters", "list"]), listed);

    app.db
        .execute_unprepared("DROP TRIGGER refuse ON orders")
        .await
        .unwrap();
    assert_eq!(
        cli(
            &app,
            &["dead-letters", "replay", "--order-id", &id.to_string()]
        ),
        json!({"replayed": 1})
    );
    app.wait_for_status(&id.to_string(), "completed").await;
    wait_for_dead_letters(&app, 0).await;
}

#[tokio::test]
async fn the_operator_endpoints_need_the_token() {
    let app = spawn(false).await;
    for token in [None, Some("wrong")] {
        let mut request = app.client.get(format!("{}/dead-letters", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // Without keys or a static token, a token cannot be checked: refused, naming the settings.
    let unconfigured = spawn_app_with(|_| {}).await;
    let response = unconfigured
        .client
        .post(format!("{}/dead-letters/replay", unconfigured.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("ORDER_SERVICE__AUTH__"),
        "{problem}"
    );
}
