//! `GET /stats` against a known set of orders: counts by status, revenue, orders per minute and
//! create→decision percentiles agree with the orders themselves, before and after the deltas
//! are compacted.

use contracts::events::ProcessingStatus;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, spawn_app, verdict};

fn order(customer: &str, price: &str) -> Value {
    json!({"customer_id": customer, "items": [{"product_id": "p", "quantity": 2, "price": price}]})
}

async fn decide(app: &TestApp, id: &str, status: ProcessingStatus) {
    app.probe
        .publish(&verdict(id.parse().unwrap(), status))
        .await;
}

async fn scalar(app: &TestApp, sql: &str) -> String {
    use sea_orm::ConnectionTrait;
    let row = app
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<String>(0).unwrap()
}

/// The true create→decision times, in ms, from the orders' histories: each decided order's
/// first entry after `pending` that is not a cancellation.
async fn true_latencies(app: &TestApp, customer: Option<&str>) -> Vec<f64> {
    let filter = customer.map_or(String::new(), |c| format!("AND o.customer_id = '{c}'"));
    let text = scalar(
        app,
        &format!(
            "SELECT coalesce(string_agg(ms::text, ',' ORDER BY ms), '') FROM (
               SELECT extract(epoch FROM min(h.at) - o.created_at) * 1000 AS ms
               FROM orders o JOIN order_status_history h ON h.order_id = o.id
               WHERE h.status IN ('completed', 'rejected', 'failed') {filter}
               GROUP BY o.id, o.created_at) t"
        ),
    )
    .await;
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn assert_close(estimate: &Value, truth: f64, what: &str) {
    let estimate = estimate.as_f64().unwrap();
    // The estimate is in the truth's √2-wide bucket (under 1.41 ms, the first bucket: 0 to 1.41).
    let factor = std::f64::consts::SQRT_2;
    let within = if truth < factor {
        estimate <= factor
    } else {
        estimate >= truth / factor && estimate <= truth * factor
    };
    assert!(within, "{what}: estimate {estimate} ms, true {truth} ms");
}

async fn stats(app: &TestApp, query: &str) -> Value {
    app.get_json(&format!("/stats{query}")).await
}

#[tokio::test]
async fn the_figures_agree_with_the_orders_before_and_after_compaction() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (customer, price) in [
        ("ann", "10.00"),
        ("ann", "2.50"),
        ("ann", "7.25"),
        ("ann", "1.00"),
        ("ann", "3.00"),
        ("ben", "100.00"),
        ("ben", "0.05"),
        ("ben", "4.40"),
    ] {
        let placed = app.create_order(&order(customer, price)).await;
        ids.push(placed["id"].as_str().unwrap().to_owned());
    }
    use ProcessingStatus::*;
    // ann: completed 20.00 and 5.00, rejected, failed then completed 2.00 (a replay), pending.
    // ben: completed 200.00, cancelled, failed.
    for (index, status) in [
        (0, Completed),
        (1, Completed),
        (2, Rejected),
        (3, Failed),
        (5, Completed),
        (7, Failed),
    ] {
        decide(&app, &ids[index], status).await;
    }
    for (index, status) in [
        (0, "completed"),
        (1, "completed"),
        (2, "rejected"),
        (3, "failed"),
        (5, "completed"),
        (7, "failed"),
    ] {
        app.wait_for_status(&ids[index], status).await;
    }
    decide(&app, &ids[3], Completed).await;
    app.wait_for_status(&ids[3], "completed").await;
    let cancelled = app
        .client
        .post(format!("{}/orders/{}/cancel", app.address, ids[6]))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);

    let expected = json!({
        "orders": 8,
        "by_status": {"pending": 1, "completed": 4, "rejected": 1, "failed": 1, "cancelled": 1},
        "completed_revenue": "227.00",
    });
    let check = |figures: &Value| {
        for field in ["orders", "by_status", "completed_revenue"] {
            assert_eq!(figures[field], expected[field], "{field}: {figures}");
        }
        let per_minute: i64 = figures["placed_per_minute"]
            .as_array()
            .unwrap()
            .iter()
            .map(|minute| minute["orders"].as_i64().unwrap())
            .sum();
        assert_eq!(per_minute, 8);
        assert_eq!(
            figures["create_to_decision"]["orders"], 6,
            "first decisions only"
        );
    };
    let figures = stats(&app, "").await;
    check(&figures);
    // Independently: the orders table says the same.
    let revenue: Decimal = scalar(
        &app,
        "SELECT sum(total_amount)::text FROM orders WHERE status = 'completed'",
    )
    .await
    .parse()
    .unwrap();
    assert_eq!(revenue.to_string(), "227.00");
    let truths = true_latencies(&app, None).await;
    assert_eq!(truths.len(), 6);
    assert_close(
        &figures["create_to_decision"]["p50_ms"],
        nearest_rank(&truths, 0.5),
        "p50",
    );
    assert_close(
        &figures["create_to_decision"]["p99_ms"],
        nearest_rank(&truths, 0.99),
        "p99",
    );

    // One customer's figures.
    let anns = stats(&app, "?customer_id=ann").await;
    assert_eq!(anns["orders"], 5);
    assert_eq!(
        anns["by_status"],
        json!({"pending": 1, "completed": 3, "rejected": 1, "failed": 0, "cancelled": 0})
    );
    assert_eq!(anns["completed_revenue"], "27.00");
    let truths = true_latencies(&app, Some("ann")).await;
    assert_close(
        &anns["create_to_decision"]["p50_ms"],
        nearest_rank(&truths, 0.5),
        "ann's p50",
    );

    // Compacted: the same figures, read from the rollup.
    test_support::wait_until("the deltas to be compacted", DEADLINE, || async {
        (app.count("SELECT count(*) FROM order_figures_delta").await == 0
            && app
                .count("SELECT count(*) FROM order_latencies_delta")
                .await
                == 0)
            .then_some(())
    })
    .await;
    assert!(app.count("SELECT count(*) FROM order_figures").await >= 2);
    let compacted = stats(&app, "").await;
    assert_eq!(compacted["by_status"], figures["by_status"]);
    assert_eq!(
        compacted["create_to_decision"],
        figures["create_to_decision"]
    );
    check(&compacted);

    // A window before the orders holds none of them.
    let before = stats(
        &app,
        "?since=2020-01-01T00:00:00Z&until=2020-01-02T00:00:00Z",
    )
    .await;
    assert_eq!(before["orders"], 0);
    assert_eq!(before["create_to_decision"]["p50_ms"], Value::Null);
}

#[tokio::test]
async fn a_bad_window_is_a_problem_naming_its_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("?since=yesterday", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?customer_id=", "customer_id"),
    ] {
        let response = app.get(&format!("/stats{query}")).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
    // The window used is in the answer: the wrong way round, empty; too long, shortened.
    let backwards = stats(
        &app,
        "?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
    )
    .await;
    assert_eq!(backwards["since"], backwards["until"]);
    assert_eq!(backwards["orders"], 0);
    let long = stats(
        &app,
        "?since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
    )
    .await;
    assert_eq!(long["since"], "2026-01-29T00:00:00Z");
}
