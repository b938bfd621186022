//! The metrics as an operator sees them: a real Prometheus scrapes both services (and RabbitMQ's
//! own endpoint), PromQL over what it scraped counts every order, and every expression of the
//! alerting rules and of the Grafana dashboard returns data, so none names a metric that is not
//! exported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_support::prometheus::PrometheusServer;

use crate::helpers::{DEADLINE, order, spawn_pipeline};

const ORDERS: usize = 12;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn alerts() -> PathBuf {
    repository().join("observability/prometheus/alerts.yml")
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repository().join("observability/prometheus"))
        .output()
        .expect("run promtool (Debian package prometheus)");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_alerting_rules_are_valid_and_pass_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The expression of each alerting rule, without its final comparison with a threshold (which
/// leaves no series while the alert does not fire): what the rule reads.
fn alert_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(alerts()).expect("alerts.yml");
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| {
            let expr = expr.trim();
            [" > ", " == ", " < "]
                .iter()
                .find_map(|op| expr.rsplit_once(op).map(|(left, _)| left.to_owned()))
                .unwrap_or_else(|| expr.to_owned())
        })
        .collect()
}

fn dashboard_expressions() -> Vec<String> {
    let path = repository().join("observability/grafana/dashboards/order-pipeline.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect()
}

fn host_port(address: &str) -> String {
    address.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn prometheus_counts_every_order_and_every_panel_and_alert_reads_exported_metrics() {
    let pipeline = spawn_pipeline("100.00").await;
    let mut ids = Vec::new();
    for index in 0..ORDERS {
        // One in four over the limit: rejected.
        let price = if index % 4 == 0 { "150.00" } else { "10.00" };
        let placed = pipeline.place(&order("observed", 1, price)).await;
        ids.push(placed["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        pipeline.wait_until_final(id).await;
    }
    // Both expositions are well-formed, with everything recorded so far.
    for service in [&pipeline.orders, &pipeline.processor] {
        let text = pipeline
            .client
            .get(format!("{}/metrics", service.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        test_support::prometheus::promtool_check(&text)
            .unwrap_or_else(|problem| panic!("{}: {problem}", service.address));
    }
    let server = PrometheusServer::start(
        &[
            ("order_service", host_port(&pipeline.orders.address)),
            ("processor_service", host_port(&pipeline.processor.address)),
            ("rabbitmq", "127.0.0.1:15692".to_owned()),
        ],
        &[alerts()],
    )
    .await;

    let expected = ORDERS as f64;
    let rejected = ORDERS.div_ceil(4) as f64;
    for (promql, value) in [
        ("sum(orders_created_total{job=\"order_service\"})", expected),
        (
            "sum(orders_finalized_total{job=\"order_service\"})",
            expected,
        ),
        (
            "sum(orders_finalized_total{job=\"order_service\",status=\"rejected\"})",
            rejected,
        ),
        (
            "sum(orders_create_to_final_seconds_count{job=\"order_service\"})",
            expected,
        ),
        (
            "sum(consumer_deliveries_total{job=\"processor_service\",outcome=\"acknowledged\"})",
            expected,
        ),
        (
            "sum(consumer_deliveries_total{job=\"order_service\",outcome=\"acknowledged\"})",
            expected,
        ),
        (
            "sum(outbox_published_total{job=\"processor_service\"})",
            expected,
        ),
        (
            "sum(outbox_published_total{job=\"order_service\"})",
            expected,
        ),
        (
            "sum(http_requests_total{job=\"order_service\",route=\"/orders\",method=\"POST\",status=\"201\"})",
            expected,
        ),
        ("min(up)", 1.0),
    ] {
        test_support::wait_until(&format!("{promql} = {value}"), DEADLINE, || async {
            (server.value(promql).await == Some(value)).then_some(())
        })
        .await;
    }

    let mut expressions = alert_expressions();
    assert_eq!(expressions.len(), 7, "{expressions:?}");
    expressions.extend(dashboard_expressions());
    for expression in &expressions {
        test_support::wait_until(
            &format!("data for {expression}"),
            Duration::from_secs(30),
            || async {
                let series = server.query(expression).await.unwrap_or_default();
                (!series.is_empty()).then_some(())
            },
        )
        .await;
    }
    // Nothing is wrong: no alert is pending or firing.
    assert!(
        server.alerts().await.is_empty(),
        "{:?}",
        server.alerts().await
    );
}
