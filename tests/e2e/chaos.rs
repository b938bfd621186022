//! Disruptive tests: they stop the machine's RabbitMQ or PostgreSQL, or SIGKILL the services, so
//! they are ignored by default and run alone (`scripts/test.sh` and CI run them after the rest):
//!
//! ```sh
//! cargo test -p e2e -- --ignored --test-threads=1
//! ```
//!
//! Each sends a burst of orders, disrupts the pipeline in the middle of it, and checks that every
//! order that got a 201 reaches a final status exactly once. Each leaves the servers running.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::helpers::{Pipeline, get_json, order, spawn_pipeline_with, wait_final};
use crate::processes::wait_ready;

const LONG: Duration = Duration::from_secs(180);

/// Places `count` orders, `concurrency` at a time, retrying none: returns the ids that got a 201.
pub struct Burst {
    placed: Arc<Mutex<Vec<String>>>,
    attempted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Burst {
    /// `client` carries whatever identity the services ask for and a request timeout.
    pub fn start(
        client: reqwest::Client,
        orders_url: String,
        count: usize,
        concurrency: usize,
    ) -> Self {
        let placed = Arc::new(Mutex::new(Vec::new()));
        let attempted = Arc::new(AtomicUsize::new(0));
        let task = {
            let placed = placed.clone();
            let attempted = attempted.clone();
            tokio::spawn(async move {
                let workers = (0..concurrency).map(|worker| {
                    let client = client.clone();
                    let placed = placed.clone();
                    let attempted = attempted.clone();
                    let url = format!("{orders_url}/orders");
                    async move {
                        for i in (worker..count).step_by(concurrency) {
                            attempted.fetch_add(1, Ordering::SeqCst);
                            let body = order(&format!("chaos-{}", i % 10), 1, "3.00");
                            if let Ok(response) = client.post(&url).json(&body).send().await
                                && response.status() == 201
                                && let Ok(order) = response.json::<Value>().await
                            {
                                placed
                                    .lock()
                                    .await
                                    .push(order["id"].as_str().unwrap().to_owned());
                            }
                            // Pace the burst so that the disruption lands in its middle.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                });
                futures_util::future::join_all(workers).await;
            })
        };
        Self {
            placed,
            attempted,
            task,
        }
    }

    pub async fn wait_for_attempts(&self, n: usize) {
        test_support::wait_until(&format!("{n} orders attempted"), LONG, || async {
            (self.attempted.load(Ordering::SeqCst) >= n).then_some(())
        })
        .await;
    }

    pub async fn finish(self) -> Vec<String> {
        self.task.await.unwrap();
        let placed = self.placed.lock().await.clone();
        assert!(!placed.is_empty(), "no order of the burst got a 201");
        placed
    }
}

/// Every order reached a final status, moved once (history pending -> final), decided once.
/// Every order completed, once, and both services agree. With `one_attempt`, each order's
/// processing record counts one delivery: the outage cost no order an attempt.
pub async fn assert_all_final_once(
    client: &reqwest::Client,
    orders: &str,
    processor: &str,
    ids: &[String],
    one_attempt: bool,
) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    for id in ids {
        let order = wait_final(client, orders, id, LONG).await;
        assert_eq!(order["status"], "completed", "{order}");
        let history = get_json(client, format!("{orders}/orders/{id}/history")).await;
        assert_eq!(history.as_array().unwrap().len(), 2, "{id}: {history}");
        let record = get_json(client, format!("{processor}/processed/{id}")).await;
        assert_eq!(record["decision"], "completed");
        if one_attempt {
            assert_eq!(record["attempts"], 1, "{record}");
        }
    }
    crate::helpers::assert_agreement(client, orders, processor, ids).await;
}

async fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

#[tokio::test]
#[ignore = "disruptive: restarts RabbitMQ; run with --ignored --test-threads=1"]
async fn rabbitmq_stopped_and_started_during_a_burst_loses_and_duplicates_nothing() {
    let pipeline: Pipeline = spawn_pipeline_with(|_, processor| {
        processor.retry.initial_delay = std::time::Duration::from_millis(50);
        processor.retry.max_delay = std::time::Duration::from_millis(500);
    })
    .await;
    let client = pipeline.client.clone();
    wait_ready(
        &client,
        &[&pipeline.orders.address, &pipeline.processor.address],
    )
    .await;
    let burst = Burst::start(client.clone(), pipeline.orders.address.clone(), 300, 4);
    burst.wait_for_attempts(60).await;

    run("rabbitmqctl", &["stop_app"]).await;
    let outage = async {
        test_support::wait_until("order_service to report not ready", LONG, || async {
            let response = client
                .get(pipeline.orders_url("/ready"))
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            (body["status"] == "not_ready" && body["checks"]["broker"] != "ok").then_some(())
        })
        .await;
        // Orders are still accepted: the outbox holds their events.
        pipeline.place(&order("during-outage", 1, "1.00")).await
    }
    .await;
    run("rabbitmqctl", &["start_app"]).await;
    run("rabbitmqctl", &["await_startup"]).await;
    wait_ready(
        &client,
        &[&pipeline.orders.address, &pipeline.processor.address],
    )
    .await;

    let mut ids = burst.finish().await;
    ids.push(outage["id"].as_str().unwrap().to_owned());
    assert_all_final_once(
        &client,
        &pipeline.orders.address,
        &pipeline.processor.address,
        &ids,
        // Acknowledgements in flight when the broker stops are lost: those deliveries come again.
        false,
    )
    .await;
}

#[tokio::test]
#[ignore = "disruptive: stops PostgreSQL; run with --ignored --test-threads=1"]
async fn postgresql_stopped_under_load_loses_and_duplicates_nothing() {
    // Retries as small as they go: an outage that cost attempts would fail orders.
    let pipeline = spawn_pipeline_with(|orders, processor| {
        processor.retry.max_attempts = 2;
        processor.retry.immediate_attempts = 1;
        processor.retry.initial_delay = std::time::Duration::from_millis(50);
        processor.retry.max_delay = std::time::Duration::from_millis(200);
        orders.retry.max_attempts = 2;
        orders.retry.initial_delay = std::time::Duration::from_millis(50);
        orders.retry.max_delay = std::time::Duration::from_millis(200);
    })
    .await;
    let client = pipeline.client.clone();
    wait_ready(
        &client,
        &[&pipeline.orders.address, &pipeline.processor.address],
    )
    .await;
    let burst = Burst::start(client.clone(), pipeline.orders.address.clone(), 300, 4);
    burst.wait_for_attempts(60).await;

    let cluster = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &cluster,
            "main",
            "stop",
            "-m",
            "fast",
        ],
    )
    .await;
    let refused = async {
        test_support::wait_until("order_service to refuse with 503", LONG, || async {
            let response = client
                .post(pipeline.orders_url("/orders"))
                .json(&order("during-outage", 1, "1.00"))
                .send()
                .await
                .ok()?;
            (response.status() == 503).then_some(response)
        })
        .await
    }
    .await;
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &cluster, "main", "start"],
    )
    .await;
    wait_ready(
        &client,
        &[&pipeline.orders.address, &pipeline.processor.address],
    )
    .await;

    let ids = burst.finish().await;
    assert_all_final_once(
        &client,
        &pipeline.orders.address,
        &pipeline.processor.address,
        &ids,
        true,
    )
    .await;
}

#[tokio::test]
#[ignore = "disruptive: SIGKILLs service processes; run with --ignored --test-threads=1"]
async fn each_service_killed_during_a_burst_and_restarted_loses_and_duplicates_nothing() {
    let mut processes = crate::processes::start(&[], None).await;
    let (orders_url, processor_url) = (
        processes.orders_url.clone(),
        processes.processor_url.clone(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let burst = Burst::start(client.clone(), orders_url.clone(), 300, 4);
    burst.wait_for_attempts(60).await;
    processes.orders.kill_and_restart().await;
    wait_ready(&client, &[&orders_url]).await;
    burst.wait_for_attempts(150).await;
    processes.processor.kill_and_restart().await;
    wait_ready(&client, &[&processor_url]).await;

    let ids = burst.finish().await;
    // A killed processor's deliveries come again: attempts may grow, decisions may not.
    assert_all_final_once(&client, &orders_url, &processor_url, &ids, false).await;
}
