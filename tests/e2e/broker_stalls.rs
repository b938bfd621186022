//! A broker that blocks its publishers (a memory alarm) or stops answering without closing its
//! connections (frozen): the services stay up, `/ready` says so, `POST /orders` keeps accepting
//! into the outbox, no database transaction stays open longer than the confirm timeout, and every
//! order ends final once the broker is back. Each test starts a RabbitMQ node of its own.

use std::time::Duration;

use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use service_kit::configuration::Secret;
use test_support::rabbit_node::RabbitNode;
use test_support::unique_id;

use crate::helpers::{DEADLINE, Pipeline, order, spawn_pipeline_with};

const CONFIRM_TIMEOUT_MS: u64 = 500;

async fn spawn_on(node: &RabbitNode, heartbeat_seconds: u16) -> Pipeline {
    let url = Secret::new(node.url());
    spawn_pipeline_with(move |orders, processor| {
        for amqp in [&mut orders.amqp, &mut processor.amqp] {
            amqp.url = url.clone();
            amqp.heartbeat = std::time::Duration::from_secs(heartbeat_seconds.into());
        }
        orders.outbox.confirm_timeout = std::time::Duration::from_millis(CONFIRM_TIMEOUT_MS);
        processor.outbox.confirm_timeout = std::time::Duration::from_millis(CONFIRM_TIMEOUT_MS);
        // Rows whose publish on commit got no confirm go to the relay's claim within a second:
        // the claim is the path that holds a transaction while it waits.
        orders.outbox.lease = std::time::Duration::from_secs(1);
    })
    .await
}

async fn place(pipeline: &Pipeline, count: usize, tag: &str) -> Vec<String> {
    let bodies: Vec<Value> = (0..count)
        .map(|i| order(&format!("{tag}{i}"), 1, "5.00"))
        .collect();
    join_all(bodies.iter().map(|body| pipeline.place(body)))
        .await
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The broker check of `/ready` once it satisfies `done`.
async fn wait_for_broker_check(url: String, done: impl Fn(&str) -> bool) -> String {
    let client = reqwest::Client::new();
    test_support::wait_until(&format!("{url}: the broker check"), DEADLINE, || async {
        let response = client.get(&url).send().await.ok()?;
        let status = response.status();
        let report: Value = response.json().await.ok()?;
        let broker = report["checks"]["broker"].as_str()?.to_owned();
        (done(&broker) && (status == 200) == (broker == "ok")).then_some(broker)
    })
    .await
}

/// The longest-running transaction on the order service's database, in milliseconds.
async fn longest_transaction_ms(pipeline: &Pipeline) -> f64 {
    let url = pipeline.order_settings.database.url.expose().to_owned();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let admin = Database::connect(format!("{}/postgres", test_support::database_server()))
        .await
        .unwrap();
    let row = admin
        .query_one_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!(
                "SELECT coalesce(max(extract(epoch FROM now() - xact_start) * 1000), 0)::float8 \
                 FROM pg_stat_activity WHERE datname = '{name}' AND xact_start IS NOT NULL"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let _ = admin.close().await;
    row.try_get_by_index(0).unwrap()
}

#[tokio::test]
#[ignore = "starts a RabbitMQ node of its own; run with --ignored --test-threads=1"]
async fn a_broker_that_blocks_publishers_holds_no_transaction_and_loses_nothing() {
    let node = RabbitNode::start(&unique_id()).await;
    let pipeline = spawn_on(&node, 10).await;
    let ready = pipeline.orders_url("/ready");
    wait_for_broker_check(ready.clone(), |broker| broker == "ok").await;
    let mut ids = place(&pipeline, 5, "before").await;
    for id in &ids {
        pipeline.wait_until_final(id).await;
    }

    node.block_publishers();
    // Orders keep coming; publishing them trips the alarm's block.
    ids.extend(place(&pipeline, 10, "blocked").await);
    let broker = wait_for_broker_check(ready.clone(), |broker| {
        broker.contains("connection.blocked")
    })
    .await;
    assert!(broker.starts_with("error"), "{broker}");
    ids.extend(place(&pipeline, 10, "while-blocked").await);
    // However long the block lasts, no transaction waits for a confirm past the timeout.
    for _ in 0..40 {
        let longest = longest_transaction_ms(&pipeline).await;
        assert!(
            longest < (CONFIRM_TIMEOUT_MS * 4) as f64,
            "a transaction has been open for {longest} ms"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    node.unblock_publishers();
    wait_for_broker_check(ready, |broker| broker == "ok").await;
    for id in &ids {
        pipeline
            .wait_for_order(id, "completed", |status| status == "completed")
            .await;
    }
    pipeline.assert_agreement(&ids).await;
}

#[tokio::test]
#[ignore = "starts a RabbitMQ node of its own; run with --ignored --test-threads=1"]
async fn a_frozen_broker_is_not_ready_within_the_heartbeat_and_loses_nothing() {
    let node = RabbitNode::start(&unique_id()).await;
    let pipeline = spawn_on(&node, 2).await;
    let (orders_ready, processor_ready) = (
        pipeline.orders_url("/ready"),
        pipeline.processor_url("/ready"),
    );
    wait_for_broker_check(orders_ready.clone(), |broker| broker == "ok").await;
    let mut ids = place(&pipeline, 5, "before").await;
    for id in &ids {
        pipeline.wait_until_final(id).await;
    }

    node.freeze();
    // The probe gets no answer at once; the missed heartbeats then close the connection.
    for ready in [&orders_ready, &processor_ready] {
        wait_for_broker_check(ready.clone(), |broker| broker.starts_with("error")).await;
    }
    ids.extend(place(&pipeline, 20, "frozen").await);
    for ready in [&orders_ready, &processor_ready] {
        let broker =
            wait_for_broker_check(ready.clone(), |broker| broker.contains("not connected")).await;
        assert!(broker.starts_with("error"), "{broker}");
    }

    node.thaw();
    for ready in [&orders_ready, &processor_ready] {
        wait_for_broker_check(ready.clone(), |broker| broker == "ok").await;
    }
    for id in &ids {
        pipeline
            .wait_for_order(id, "completed", |status| status == "completed")
            .await;
    }
    pipeline.assert_agreement(&ids).await;
}
