//! Load shedding: when too many new orders already wait to be stored, `POST /orders` refuses at
//! once with 503 and `Retry-After`, stores nothing for the refused ones, and every order it
//! accepted is stored once the database catches up.

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use sea_orm::{ConnectionTrait, TransactionTrait};

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, valid_order};

fn post(app: &TestApp) -> tokio::task::JoinHandle<reqwest::Response> {
    let (client, address) = (app.client.clone(), app.address.clone());
    tokio::spawn(async move {
        client
            .post(format!("{address}/orders"))
            .json(&valid_order())
            .send()
            .await
            .expect("POST /orders")
    })
}

#[tokio::test]
async fn orders_beyond_the_waiting_limit_are_refused_at_once_and_the_others_stored() {
    let app = spawn_app_with(|settings| settings.intake.max_waiting = 2).await;
    // A stalled database: each writer's insert waits for this lock.
    let lock = app.db.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE orders IN SHARE MODE")
        .await
        .unwrap();
    let writers = order_service::store::NEW_ORDER_WRITERS;
    let mut first = Vec::new();
    for n in 1..=writers {
        first.push(post(&app));
        test_support::wait_until(
            "an insert of each writer to wait for the lock",
            DEADLINE,
            || async {
                (app.count(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .await
                    == n as i64)
                    .then_some(())
            },
        )
        .await;
    }

    // Two more may wait behind them; the other four are refused without waiting. (An accepted
    // order cannot be answered while the table is locked, so the first four answers are those.)
    let mut posts: FuturesUnordered<_> = (0..6).map(|_| post(&app)).collect();
    for _ in 0..4 {
        let response = tokio::time::timeout(DEADLINE, posts.next())
            .await
            .expect("a refusal in time")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1", "says when to retry");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:order-pipeline:problem:overloaded");
    }

    lock.rollback().await.unwrap();
    for post in first {
        assert_eq!(post.await.unwrap().status(), 201);
    }
    while let Some(response) = posts.next().await {
        assert_eq!(response.unwrap().status(), 201, "a queued order is stored");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM orders").await,
        writers as i64 + 2
    );
}
