//! The latency floors of `loadgen limits`, against the real PostgreSQL and RabbitMQ: each step is
//! timed, and the scratch table is dropped afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sea_orm::{ConnectionTrait, Database, Statement};

#[tokio::test]
async fn the_latency_floors_time_each_step_and_leave_nothing_behind() {
    let database_url = format!("{}/postgres", test_support::database_server());

    let commit = loadgen::limits::postgres_commit_latency(&database_url, 20)
        .await
        .unwrap();
    let confirm = loadgen::limits::rabbitmq_confirm_latency(&test_support::amqp_url(), 20)
        .await
        .unwrap();

    for latency in [&commit, &confirm] {
        assert_eq!(latency.count, 20);
        assert!(latency.p50_ms > 0.0, "{latency:?}");
        assert!(latency.p50_ms <= latency.p99_ms && latency.p99_ms <= latency.max_ms);
    }
    let db = Database::connect(&database_url).await.unwrap();
    let left = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'loadgen\\_floor\\_%'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(left, 0, "scratch table left behind");
}

#[tokio::test]
async fn settling_before_a_run_checkpoints_the_server() {
    let database_url = format!("{}/postgres", test_support::database_server());
    let db = Database::connect(&database_url).await.unwrap();
    let checkpoints = || async {
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT checkpoints_req FROM pg_stat_bgwriter",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
    };
    let before = checkpoints().await;

    loadgen::seed::settle(&database_url).await.unwrap();

    // Requested checkpoints only grow (other tests may request theirs meanwhile).
    assert!(checkpoints().await > before, "no checkpoint was requested");
}
