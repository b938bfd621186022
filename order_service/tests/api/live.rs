//! Live status over Server-Sent Events: an order's stream, resuming with `Last-Event-ID` after
//! changes that committed out of id order, and the bound on open streams.

use sea_orm::sqlx;
use serde_json::Value;
use test_support::prometheus::sample;
use test_support::sse::EventStream;

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_with, valid_order};

fn stream_request(app: &TestApp, path: &str) -> reqwest::RequestBuilder {
    app.client.get(format!("{}{path}", app.address))
}

async fn cancel(app: &TestApp, id: &str) {
    let response = app
        .client
        .post(format!("{}/orders/{id}/cancel", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Inserts a history row for `order_id` in a transaction left open, and answers its id.
async fn open_step(
    pool: &sqlx::PgPool,
    order_id: &str,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, i64) {
    let mut txn = pool.begin().await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO order_status_history (order_id, status, reason, at) \
         VALUES ($1::uuid, 'rejected', 'by hand', now()) RETURNING id",
    )
    .bind(order_id)
    .fetch_one(&mut *txn)
    .await
    .unwrap();
    (txn, id)
}

#[tokio::test]
async fn an_order_stream_starts_with_its_history_then_follows_it() {
    let app = spawn_app().await;
    let order = app.create_order(&valid_order()).await;
    let id = order["id"].as_str().unwrap();
    let mut events =
        EventStream::open(stream_request(&app, &format!("/orders/{id}/events")), None).await;
    let first = events.next_status(DEADLINE).await;
    assert_eq!(first["order_id"], id);
    assert_eq!(first["status"], "pending");
    assert_eq!(first["customer_id"], "customer-123");
    cancel(&app, id).await;
    let second = events.next_status(DEADLINE).await;
    assert_eq!(second["status"], "cancelled");
    assert!(second["seq"].as_i64() > first["seq"].as_i64());

    // Resumed after the first event: only the second again.
    let resumed_from = {
        let mut fresh =
            EventStream::open(stream_request(&app, &format!("/orders/{id}/events")), None).await;
        fresh.next_status(DEADLINE).await;
        fresh.last_event_id.clone().unwrap()
    };
    let mut resumed = EventStream::open(
        stream_request(&app, &format!("/orders/{id}/events")),
        Some(&resumed_from),
    )
    .await;
    assert_eq!(resumed.next_status(DEADLINE).await["status"], "cancelled");
}

/// Two writers: the first takes history id n, the second n + 1 and commits first. A client
/// that saw n + 1 and reconnects must still get n: "after the last id" would skip it for good.
#[tokio::test]
async fn a_client_resuming_gets_a_change_that_committed_after_a_later_id() {
    let app = spawn_app().await;
    let a = app.create_order(&valid_order()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = app.create_order(&valid_order()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pool = app.db.get_postgres_connection_pool().clone();

    let mut events = EventStream::open(stream_request(&app, "/orders/events"), None).await;
    let (first_writer, earlier) = open_step(&pool, &a).await;
    let (second_writer, later) = open_step(&pool, &b).await;
    assert!(earlier < later, "ids are drawn in insert order");
    second_writer.commit().await.unwrap();

    let seen = events.next_status(DEADLINE).await;
    assert_eq!(seen["seq"], later);
    assert_eq!(seen["order_id"], b.as_str());
    let last_event_id = events.last_event_id.clone().unwrap();
    drop(events);
    // The earlier id commits only now, after the client went.
    first_writer.commit().await.unwrap();

    let mut resumed =
        EventStream::open(stream_request(&app, "/orders/events"), Some(&last_event_id)).await;
    let missed = resumed.next_status(DEADLINE).await;
    assert_eq!(
        missed["seq"], earlier,
        "the change a sequence cursor would skip"
    );
    assert_eq!(missed["order_id"], a.as_str());
    assert_eq!(missed["reason"], "by hand");
    // Nothing twice: the next event is a new change, not the one seen before.
    cancel(&app, &b).await;
    let next = resumed.next_status(DEADLINE).await;
    assert_eq!(next["order_id"], b.as_str());
    assert_eq!(next["status"], "cancelled");
}

#[tokio::test]
async fn streams_are_bounded_and_a_bad_last_event_id_is_a_problem() {
    let app = spawn_app_with(|settings| {
        settings.live.max_connections = 1;
        settings.live.heartbeat = std::time::Duration::from_millis(100);
    })
    .await;
    let events = EventStream::open(stream_request(&app, "/orders/events"), None).await;
    let refused = stream_request(&app, "/orders/events").send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(refused.headers().contains_key("retry-after"));
    drop(events);
    // Its place is free once the service notices the client went.
    let events = test_support::wait_until("the stream's place to be free", DEADLINE, || async {
        let response = stream_request(&app, "/orders/events").send().await.unwrap();
        (response.status() == 200).then_some(response)
    })
    .await;
    drop(events);

    let app = spawn_app().await;
    let response = stream_request(&app, "/orders/events")
        .header("Last-Event-ID", "42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "Last-Event-ID");
    let unknown = uuid::Uuid::new_v4();
    let response = app.get(&format!("/orders/{unknown}/events")).await;
    assert_eq!(response.status(), 404);
}

/// A client that stops reading is dropped once its queue is full, not buffered forever: its
/// place is free again while its socket is still open.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|settings| settings.live.max_connections = 1).await;
    let order = app.create_order(&valid_order()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let address: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(address).await.unwrap();
    slow.write_all(b"GET /orders/events HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0_u8; 512];
    let read = slow.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"));
    // It holds the only place.
    let refused = stream_request(&app, "/orders/events").send().await.unwrap();
    assert_eq!(refused.status(), 503);

    // Far more changes than its queue and its socket hold, while it reads nothing.
    let pool = app.db.get_postgres_connection_pool().clone();
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, reason, at) \
         SELECT $1::uuid, 'rejected', 'flood', now() FROM generate_series(1, 50000)",
    )
    .bind(&order)
    .execute(&pool)
    .await
    .unwrap();
    let events =
        test_support::wait_until("the slow client's place to be free", DEADLINE, || async {
            let response = stream_request(&app, "/orders/events").send().await.unwrap();
            (response.status() == 200).then_some(response)
        })
        .await;
    // Counted: refused (the first try, and those while waiting), one dropped, one open (the
    // new one).
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused = sample(&metrics, "live_streams_refused_total", &[]).unwrap();
    assert!(refused >= 1.0, "{metrics}");
    assert_eq!(
        sample(&metrics, "live_streams_dropped_total", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "live_streams_open", &[]), Some(1.0));
    drop(events);
    drop(slow);
}
