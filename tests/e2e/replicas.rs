//! Two instances of each service, as processes sharing one broker's queues and the two databases,
//! through a burst of orders placed on both order services; one of each is SIGKILLed in the middle
//! and started again. Every stored order (those whose 201 the kill cut off too) ends final once,
//! both services agree, every outbox row is published (by whichever relay claimed it), and the
//! duplicate deliveries idempotency absorbed are counted and reported. Ignored by default like the other disruptive tests.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, Database};

use crate::chaos::{Burst, assert_all_final_once};
use crate::helpers::{get_json, metric};
use crate::processes::{START, start_replicas, wait_ready};

/// The value of a query returning one bigint on `database`.
async fn count(database: &str, sql: &str) -> i64 {
    let db = Database::connect(database).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let _ = db.close().await;
    row.try_get_by_index(0).unwrap()
}

/// The id of every order stored in the order service's `database`.
async fn order_ids(database: &str) -> Vec<String> {
    let db = Database::connect(database).await.unwrap();
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT id::text FROM orders".to_owned(),
        ))
        .await
        .unwrap();
    let _ = db.close().await;
    rows.iter()
        .map(|row| row.try_get_by_index(0).unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "disruptive: SIGKILLs service processes; run with --ignored --test-threads=1"]
async fn two_instances_of_each_service_one_of_each_killed_lose_and_duplicate_nothing() {
    let mut replicas = start_replicas(2, 2, &[], None).await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let bursts = [
        Burst::start(client.clone(), replicas.orders_urls[0].clone(), 200, 2),
        Burst::start(client.clone(), replicas.orders_urls[1].clone(), 200, 2),
    ];
    bursts[0].wait_for_attempts(60).await;
    replicas.orders[0].kill_and_restart().await;
    bursts[1].wait_for_attempts(100).await;
    replicas.processors[0].kill_and_restart().await;
    wait_ready(&client, &replicas.urls()).await;

    let [first, second] = bursts;
    let mut accepted = first.finish().await;
    accepted.extend(second.finish().await);
    // An order the killed instance committed before its 201 reached the client is in the database
    // without the client knowing its id: every stored order is checked, and every 201 is stored.
    let ids = order_ids(&replicas.orders_database).await;
    let stored: HashSet<&String> = ids.iter().collect();
    for id in &accepted {
        assert!(
            stored.contains(id),
            "order {id} got a 201 and is not stored"
        );
    }
    println!(
        "replicas: {} orders got a 201, {} stored",
        accepted.len(),
        ids.len()
    );
    // Read through the instances that were not killed; the others answer the same (one database).
    assert_all_final_once(
        &client,
        &replicas.orders_urls[1],
        &replicas.processor_urls[1],
        &ids,
        false,
    )
    .await;
    for (orders, processor) in replicas.orders_urls.iter().zip(&replicas.processor_urls) {
        let id = &ids[0];
        let order = get_json(&client, format!("{orders}/orders/{id}")).await;
        assert_ne!(
            order["status"], "pending",
            "{orders} sees the shared database"
        );
        let record = get_json(&client, format!("{processor}/processed/{id}")).await;
        assert_eq!(record["decision"], order["status"], "{processor}");
    }

    // No outbox row is left unsent on either side: a row the killed instance wrote and did not
    // publish was claimed by a relay once its lease ran out.
    for database in [&replicas.orders_database, &replicas.processor_database] {
        test_support::wait_until("every outbox row sent", START, || async {
            (count(
                database,
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
            )
            .await
                == 0)
                .then_some(())
        })
        .await;
    }
    let published: i64 = count(
        &replicas.orders_database,
        "SELECT count(*) FROM outbox WHERE event_type = 'order.created'",
    )
    .await;
    assert!(
        published >= ids.len() as i64,
        "{published} order.created rows"
    );
    // Both surviving relays published (each instance's writes, and rows claimed from the other).
    for url in &replicas.orders_urls {
        assert!(
            metric(&client, url, "outbox_published_total").await > 0.0,
            "{url}"
        );
    }

    // Deliveries beyond one per order reached a processor that had decided the order already (a
    // redelivery after the kill, a second publication of the same event): absorbed.
    let deliveries: i64 = count(
        &replicas.processor_database,
        "SELECT coalesce(sum(attempts), 0)::bigint FROM processing",
    )
    .await;
    let decided = count(
        &replicas.processor_database,
        "SELECT count(*) FROM processing",
    )
    .await;
    assert_eq!(decided, ids.len() as i64);
    println!(
        "replicas: {} orders final once; {} deliveries, {} duplicates absorbed by idempotency",
        ids.len(),
        deliveries,
        deliveries - decided
    );
}
