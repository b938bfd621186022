//! `loadgen seed` against the real PostgreSQL: the history it loads looks like one the order
//! service wrote itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use test_support::Cleanup;

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

#[tokio::test]
async fn seeded_orders_have_time_ordered_ids_loadgens_customers_and_their_history() {
    let settings = test_support::database_settings(&format!("seed_{}", test_support::unique_id()));
    let _cleanup = Cleanup {
        databases: vec![settings.url.expose().to_owned()],
        topology: None,
        queues: Vec::new(),
    };
    let db = messaging::database::connect(&settings).await.unwrap();
    migration::migrate::<migration::OrdersMigrator>(&db)
        .await
        .unwrap();

    let orders = 2_500;
    loadgen::seed::seed(settings.url.expose(), orders)
        .await
        .unwrap();

    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 2_500);
    assert_eq!(
        count(&db, "SELECT count(*) FROM order_status_history").await,
        5_000
    );
    // UUIDv7, as the service makes them, whose time is the order's own: id order is time order.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM orders WHERE substr(id::text, 15, 1) <> '7' \
             OR substr(id::text, 20, 1) NOT IN ('8', '9', 'a', 'b') \
             OR ('x' || replace(substr(id::text, 1, 13), '-', ''))::bit(48)::bigint \
                <> floor(extract(epoch FROM created_at) * 1000)::bigint"
        )
        .await,
        0,
        "ids that are not UUIDv7 of their order's time"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM (SELECT id, lag(id) OVER (ORDER BY created_at) AS before \
             FROM orders) AS o WHERE id <= before"
        )
        .await,
        0,
        "ids out of time order"
    );
    // A month old: new orders come first in the listing.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM orders WHERE created_at > now() - interval '29 days'"
        )
        .await,
        0
    );
    // The customers loadgen posts for, every one of them.
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(DISTINCT customer_id) FROM orders \
                 WHERE customer_id ~ '^customer-[0-9]+$' \
                 AND substr(customer_id, 10)::int BETWEEN 1 AND {}",
                loadgen::orders::CUSTOMERS
            )
        )
        .await,
        i64::from(loadgen::orders::CUSTOMERS)
    );
    db.close().await.unwrap();
}
