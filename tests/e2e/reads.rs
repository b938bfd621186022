//! Reads cannot starve the pipeline: the API's reads have their own read-only pool with a
//! `statement_timeout`, so 32 clients listing the worst filter (a status no order has: a scan of
//! every order) over 200,000 stored orders leave `POST /orders` and the consumers their own
//! connections. Placed orders are all accepted and all end final; a read that outlives its timeout
//! is a 503 problem, not a hung connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::Value;

use crate::helpers::{Pipeline, assert_agreement, order, spawn_pipeline_with};

const STORED: u32 = 200_000;
const READERS: usize = 32;
const PLACED: usize = 150;

async fn store_old_orders(pipeline: &Pipeline) {
    let db = Database::connect(pipeline.order_settings.database.url.expose())
        .await
        .unwrap();
    db.execute_unprepared(&format!(
        "INSERT INTO orders (id, customer_id, items, total_amount, status, created_at, updated_at) \
         SELECT gen_random_uuid(), 'bulk-' || (i % 100), \
                '[{{\"product_id\":\"product-1\",\"quantity\":2,\"price\":\"10.50\"}}]', \
                21.00, 'completed', now() - i * interval '1 second', now() - i * interval '1 second' \
         FROM generate_series(1, {STORED}) i; \
         ANALYZE orders;"
    ))
    .await
    .unwrap();
}

/// Lists the worst filter until `stop`; every answer is a page or a 503 problem with
/// `Retry-After`.
async fn read_until(pipeline: &Pipeline, stop: &AtomicBool, pages: &AtomicUsize) {
    let url = format!("{}/orders?status=failed&limit=500", pipeline.orders.address);
    while !stop.load(Ordering::Relaxed) {
        let response = pipeline
            .client
            .get(&url)
            .timeout(crate::helpers::DEADLINE)
            .send()
            .await
            .expect("every read is answered");
        match response.status().as_u16() {
            200 => {
                let page: Value = response.json().await.unwrap();
                assert_eq!(page["items"], Value::Array(vec![]));
                pages.fetch_add(1, Ordering::Relaxed);
            }
            503 => {
                assert!(response.headers().contains_key("retry-after"));
                assert_eq!(
                    response.headers()["content-type"],
                    "application/problem+json"
                );
            }
            other => panic!("a read answered {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worst_case_reads_over_200k_orders_leave_the_pipeline_alone() {
    let pipeline = spawn_pipeline_with(|orders, _| {
        orders.database.read_max_connections = 4;
        orders.database.read_statement_timeout = std::time::Duration::from_millis(2000);
    })
    .await;
    store_old_orders(&pipeline).await;

    let stop = AtomicBool::new(false);
    let pages = AtomicUsize::new(0);
    let readers = join_all((0..READERS).map(|_| read_until(&pipeline, &stop, &pages)));
    let placing = async {
        // A steady rate, as a shop's clients place orders.
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        let mut ids = Vec::new();
        for i in 0..PLACED {
            tick.tick().await;
            let response = pipeline
                .client
                .post(format!("{}/orders", pipeline.orders.address))
                .json(&order(&format!("steady-{i}"), 1, "5.00"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{:?}", response.text().await);
            let placed: Value = response.json().await.unwrap();
            ids.push(placed["id"].as_str().unwrap().to_owned());
        }
        stop.store(true, Ordering::Relaxed);
        ids
    };
    let (_, ids) = tokio::join!(readers, placing);
    assert!(
        pages.load(Ordering::Relaxed) >= READERS,
        "the reads were served too"
    );
    assert_agreement(
        &pipeline.client,
        &pipeline.orders.address,
        &pipeline.processor.address,
        &ids,
    )
    .await;
}

#[tokio::test]
async fn a_read_past_its_timeout_is_a_503_problem() {
    let pipeline = spawn_pipeline_with(|orders, _| {
        orders.database.read_statement_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let placed = pipeline.place(&order("c", 1, "5.00")).await;
    // Another session holds the table: the read waits on its lock until its timeout.
    let db = Database::connect(pipeline.order_settings.database.url.expose())
        .await
        .unwrap();
    let lock = db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for path in [
        "/orders?status=failed".to_owned(),
        format!("/orders/{}", placed["id"].as_str().unwrap()),
    ] {
        let response = pipeline
            .client
            .get(format!("{}{path}", pipeline.orders.address))
            .timeout(crate::helpers::DEADLINE)
            .send()
            .await
            .expect("answered, not hung");
        assert_eq!(response.status(), 503, "{path}");
        assert!(response.headers().contains_key("retry-after"));
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 503);
    }
    lock.rollback().await.unwrap();
    let response = pipeline
        .client
        .get(format!("{}/orders?status=failed", pipeline.orders.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
