//! The pipeline on a three-node RabbitMQ cluster (`scripts/rabbit-cluster.sh`), with quorum queues
//! and every node in `AMQP__URLS`: during a burst of orders one node stops cleanly and comes back,
//! then another is SIGKILLed and comes back. Nothing is lost and every order ends final once.
//! Ignored by default like the other disruptive tests (three more Erlang VMs on a small machine);
//! `scripts/test.sh` and CI run it with them.

use service_kit::configuration::Secret;

use crate::chaos::{Burst, assert_all_final_once};
use crate::helpers::{metric, spawn_pipeline_with};
use crate::processes::wait_ready;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "disruptive: runs a three-node cluster and stops its nodes; run with --ignored --test-threads=1"]
async fn nodes_of_the_cluster_stopped_and_killed_during_a_burst_lose_and_duplicate_nothing() {
    let id = test_support::unique_id();
    let cluster = test_support::rabbit_cluster::RabbitCluster::start(&id).await;
    let urls = cluster.urls().to_owned();
    let pipeline = spawn_pipeline_with(|orders, processor| {
        for amqp in [&mut orders.amqp, &mut processor.amqp] {
            amqp.urls = Some(Secret::new(urls.clone()));
        }
        processor.retry.initial_delay = std::time::Duration::from_millis(50);
        processor.retry.max_delay = std::time::Duration::from_millis(500);
    })
    .await;
    let client = pipeline.client.clone();
    let (orders, processor) = (
        pipeline.orders.address.clone(),
        pipeline.processor.address.clone(),
    );
    wait_ready(&client, &[&orders, &processor]).await;

    // The work queue is a quorum queue with a member on each node.
    let queues = cluster
        .ctl(&[
            "list_queues",
            "-q",
            "--formatter",
            "json",
            "name",
            "type",
            "members",
        ])
        .await;
    let queues: serde_json::Value = serde_json::from_str(&queues).unwrap();
    let work_queue = &pipeline
        .processor_settings
        .amqp
        .topology
        .order_created_queue;
    let listed = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["name"] == work_queue.as_str())
        .unwrap_or_else(|| panic!("{work_queue} in {queues}"));
    assert_eq!(listed["type"], "quorum", "{listed}");
    assert_eq!(listed["members"].as_array().unwrap().len(), 3, "{listed}");

    // About 10 s of orders at 4 at a time: each node comes back while orders still flow.
    let burst = Burst::start(client.clone(), orders.clone(), 2000, 4);
    burst.wait_for_attempts(200).await;
    // The node both services connected to first closes their connections and goes.
    cluster.stop_node(1).await;
    burst.wait_for_attempts(400).await;
    cluster.start_node(1).await;
    burst.wait_for_attempts(1000).await;
    // Another one just vanishes.
    cluster.kill_node(2).await;
    burst.wait_for_attempts(1200).await;
    cluster.start_node(2).await;
    wait_ready(&client, &[&orders, &processor]).await;

    let ids = burst.finish().await;
    // Both services lost a connection to a node and made another.
    for url in [&orders, &processor] {
        let reconnections = metric(&client, url, "broker_reconnections_total").await;
        assert!(reconnections >= 1.0, "{url}: {reconnections}");
    }
    // Acknowledgements and confirms in flight when a node goes are lost: those deliveries come
    // again, and are absorbed.
    assert_all_final_once(&client, &orders, &processor, &ids, false).await;
    drop(pipeline);
    drop(cluster);
}
