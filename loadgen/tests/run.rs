//! A short run of loadgen against both services on the real PostgreSQL and RabbitMQ: every order
//! it posts ends final, and the report adds up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use loadgen::cli::{RunArgs, Target};
use sea_orm::{ConnectionTrait, Statement};
use test_support::Cleanup;
use tokio_util::sync::{CancellationToken, DropGuard};

struct Services {
    url: String,
    exchange: String,
    orders_db: service_kit::configuration::DatabaseSettings,
    _stop: DropGuard,
    _cleanup: Cleanup,
}

async fn spawn_services() -> Services {
    spawn_services_with(|_| {}).await
}

/// Both services, the order service's settings changed by `customize` first.
async fn spawn_services_with(
    customize: impl FnOnce(&mut order_service::configuration::Settings),
) -> Services {
    service_kit::telemetry::init_test_subscriber("loadgen_test");
    let id = test_support::unique_id();
    let amqp = test_support::amqp_settings(&id);
    let mut orders = order_service::configuration::Settings::default();
    orders.http.host = "127.0.0.1".into();
    orders.http.port = 0;
    orders.database = test_support::database_settings(&format!("orders_{id}"));
    orders.amqp = amqp.clone();
    customize(&mut orders);
    let orders_db = orders.database.clone();
    let mut processor = processor_service::configuration::Settings::default();
    processor.http.host = "127.0.0.1".into();
    processor.http.port = 0;
    processor.database = test_support::database_settings(&format!("processor_{id}"));
    processor.amqp = amqp.clone();
    let cleanup = Cleanup {
        databases: vec![
            orders.database.url.expose().to_owned(),
            processor.database.url.expose().to_owned(),
        ],
        topology: Some(amqp.topology.clone()),
        queues: [
            processor.retry_tiers().queues(),
            orders.retry_tiers().queues(),
        ]
        .concat(),
    };
    // The services declare the topology when they connect, in the background: declare it first,
    // so that loadgen can bind its queue to the exchange at once.
    test_support::BrokerProbe::connect(amqp.topology.clone()).await;
    let order_app = order_service::startup::build(orders).await.unwrap();
    let processor_app = processor_service::startup::build(processor).await.unwrap();
    let url = format!("http://127.0.0.1:{}", order_app.port());
    let stop = CancellationToken::new();
    tokio::spawn(order_app.run_until_stopped(stop.clone()));
    tokio::spawn(processor_app.run_until_stopped(stop.clone()));
    Services {
        url,
        exchange: amqp.topology.exchange,
        orders_db,
        _stop: stop.drop_guard(),
        _cleanup: cleanup,
    }
}

fn args(services: &Services) -> RunArgs {
    RunArgs {
        target: Target {
            url: services.url.clone(),
            amqp_url: test_support::amqp_url(),
            exchange: services.exchange.clone(),
            order_service_pid: Some(std::process::id()),
            processor_service_pid: Vec::new(),
            postgres_pid: None,
            rabbitmq_pid: Vec::new(),
            tokens: Default::default(),
        },
        orders: 200,
        concurrency: 8,
        rate: None,
        threads: 1,
        reject_ratio: 0.0,
        max_order_total: "10000.00".parse().unwrap(),
        deadline_seconds: 60,
        json: true,
        plot: None,
        quiet: true,
        idempotency_keys: false,
    }
}

#[tokio::test]
async fn a_closed_loop_run_follows_every_order_to_its_final_status() {
    let services = spawn_services().await;
    let report = loadgen::run::run(&args(&services)).await.unwrap();
    assert!(report.passed(), "{}", report.text());
    assert_eq!(report.accepted, 200);
    assert_eq!(report.refused, 0);
    assert_eq!(report.not_final, 0);
    assert_eq!(report.statuses.get("completed"), Some(&200));
    assert_eq!(report.end_to_end_latency.count, 200);
    assert!(
        report.send_lag.is_none(),
        "a closed loop has no schedule to be late for"
    );
    assert!(report.end_to_end_latency.p50_ms <= report.end_to_end_latency.p99_ms);
    assert!(report.final_per_s > 0.0);
    assert!(report.peak_rss_order_service_mib.unwrap() > 0.0);
    // The services run in this process, as loadgen does: both spent CPU on the orders.
    let cpu = report.cpu.as_ref().unwrap();
    assert!(cpu.per_order_us["order_service"] > 0.0, "{cpu:?}");
    assert_eq!(
        cpu.per_order_us["loadgen"],
        cpu.per_order_us["order_service"]
    );
    assert!(cpu.machine_busy_percent > 0.0 && cpu.machine_busy_percent <= 100.0);
    // Steal is part of the busy time (a host with no other guests steals none).
    assert!(
        cpu.machine_steal_percent >= 0.0 && cpu.machine_steal_percent <= cpu.machine_busy_percent,
        "{cpu:?}"
    );
    let timeline_finals: u64 = report.timeline.iter().map(|s| s.finals).sum();
    assert_eq!(timeline_finals, 200);
}

#[tokio::test]
async fn an_open_loop_from_several_threads_sends_each_order_of_the_schedule_once() {
    let services = spawn_services().await;
    let run = RunArgs {
        rate: Some(300.0),
        orders: 120,
        threads: 3,
        ..args(&services)
    };
    let report = loadgen::run::run(&run).await.unwrap();
    assert!(report.passed(), "{}", report.text());
    assert_eq!(report.accepted + report.refused, 120, "{}", report.text());
    assert_eq!(report.accepted, 120, "{}", report.text());
    assert_eq!(report.not_final, 0);
    assert_eq!(
        report.send_lag.as_ref().map(|lag| lag.count),
        Some(120),
        "every order was scheduled"
    );
}

#[tokio::test]
async fn an_open_loop_run_with_rejections_reports_each_status_and_draws_its_plot() {
    let services = spawn_services().await;
    let plot = std::env::temp_dir().join(format!("loadgen-{}.svg", test_support::unique_id()));
    let run = RunArgs {
        rate: Some(200.0),
        orders: 150,
        reject_ratio: 0.2,
        plot: Some(plot.clone()),
        idempotency_keys: true,
        ..args(&services)
    };
    let report = loadgen::run::run(&run).await.unwrap();
    assert!(report.passed(), "{}", report.text());
    assert_eq!(report.mode, "open");
    // The schedule spread the orders: the last was not sent before it was due.
    assert!(report.duration_s >= 149.0 / 200.0, "{}", report.text());
    // Each order's lateness leaving loadgen is counted apart from the service's time.
    let lag = report
        .send_lag
        .as_ref()
        .expect("an open loop reports its send lag");
    assert_eq!(lag.count, 150);
    assert!(lag.p50_ms <= lag.max_ms);
    assert!(report.text().contains("sent late"));
    let completed = report.statuses.get("completed").copied().unwrap_or(0);
    let rejected = report.statuses.get("rejected").copied().unwrap_or(0);
    assert_eq!(completed + rejected, 150);
    assert!(rejected > 0 && completed > 0, "{:?}", report.statuses);
    // Each order went with a key of its own.
    let db = messaging::database::connect(&services.orders_db)
        .await
        .unwrap();
    let keys = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(DISTINCT idempotency_key) FROM orders",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(keys, 150);
    loadgen::plot::draw(&report, &plot).unwrap();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("p99"));
    let _ = std::fs::remove_file(plot);
}

#[tokio::test]
async fn with_tokens_each_order_is_placed_as_its_customer() {
    const SECRET: &str = "loadgen-test-secret-0123456789abcdef";
    let services = spawn_services_with(|orders| {
        orders.auth.issuer = Some("loadgen-test".into());
        orders.auth.audience = Some("order-pipeline".into());
        orders.auth.hs256_secret = Some(service_kit::configuration::Secret::new(SECRET));
    })
    .await;
    // Without tokens, the service refuses every order: authentication is on.
    let mut run = args(&services);
    run.orders = 20;
    let refused = loadgen::run::run(&run).await.unwrap();
    assert_eq!(refused.accepted, 0, "{}", refused.text());
    assert_eq!(refused.refused, 20, "{}", refused.text());

    let key = std::env::temp_dir().join(format!("loadgen-{}.key", test_support::unique_id()));
    std::fs::write(&key, SECRET).unwrap();
    run.orders = 200;
    run.target.tokens = loadgen::cli::TokenArgs {
        token_signing: Some(loadgen::tokens::Signing::Hs256),
        token_key: Some(key.clone()),
        token_issuer: "loadgen-test".into(),
        token_audience: "order-pipeline".into(),
    };
    let report = loadgen::run::run(&run).await.unwrap();
    std::fs::remove_file(&key).unwrap();
    assert!(report.passed(), "{}", report.text());
    assert_eq!(report.accepted, 200);
    assert_eq!(report.not_final, 0);
}
