//! A deployment on classic queues moves to quorum queues with `<service> queues migrate`: the
//! orders waiting in the work queue, a dead letter and a message waiting in a retry queue all
//! survive, and every order ends final once on the new queues. It refuses to start while a
//! service consumes the queues, or while an operator lists or replays their dead letters.

use lapin::BasicProperties;
use serde_json::Value;

use crate::helpers::{get_json, order, wait_final};
use crate::processes::{self, START, wait_ready};

const CLASSIC: [(&str, &str); 2] = [
    ("ORDER_SERVICE__AMQP__QUEUE_TYPE", "classic"),
    ("PROCESSOR_SERVICE__AMQP__QUEUE_TYPE", "classic"),
];

fn quorum() -> Vec<(&'static str, String)> {
    CLASSIC
        .iter()
        .map(|(name, _)| (*name, "quorum".to_owned()))
        .collect()
}

/// The kind of `queue` (`classic`, `quorum`), as the broker lists it.
async fn kind_of(queue: &str) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--formatter", "json", "name", "type"])
        .output()
        .await
        .expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl list_queues failed");
    let queues: Value = serde_json::from_slice(&output.stdout).unwrap();
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|listed| listed["name"] == queue)
        .and_then(|listed| listed["type"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

#[tokio::test]
async fn a_classic_deployment_moves_to_quorum_queues_losing_nothing() {
    let extra: Vec<(&str, String)> = CLASSIC
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let mut processes = processes::start(&extra, None).await;
    let client = reqwest::Client::new();
    let topology = processes.topology.clone();
    let place = |i: usize| {
        let client = client.clone();
        let url = format!("{}/orders", processes.orders_url);
        async move {
            let response = client
                .post(url)
                .json(&order(&format!("migration-{}", i % 3), 1, "2.00"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let order: Value = response.json().await.unwrap();
            order["id"].as_str().unwrap().to_owned()
        }
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(place(i).await);
    }
    // The processor stops: the next orders wait in its (classic) work queue.
    processes.processor.terminate().await;
    for i in 10..40 {
        ids.push(place(i).await);
    }
    let probe = test_support::BrokerProbe::connect(messaging::topology::Topology {
        queue_type: messaging::topology::QueueType::Classic,
        ..topology.clone()
    })
    .await;
    test_support::wait_until("30 orders waiting in the work queue", START, || async {
        (probe.message_count(&topology.order_created_queue).await >= 30).then_some(())
    })
    .await;
    // A dead letter, and a message waiting in a retry queue (not an order: it ends as poison).
    let retry_queue = processor_service::configuration::Settings::default()
        .retry
        .redelivery()
        .tiers(
            &topology.order_created_queue,
            messaging::topology::QueueType::Classic,
        )
        .queues()
        .pop()
        .unwrap();
    let message = |id: &str| BasicProperties::default().with_message_id(id.into());
    probe
        .publish_to_queue(
            &topology.order_created_dead_letter_queue,
            b"{\"dead\": true}",
            message("planted-dead-letter"),
        )
        .await;
    // As the consumer parks a failed delivery: with the routing key it was published with.
    let mut retry_headers = messaging::headers::Headers::default();
    retry_headers.set_str(
        messaging::headers::ORIGINAL_ROUTING_KEY,
        contracts::routing_keys::ORDER_CREATED,
    );
    probe
        .publish_to_queue(
            &retry_queue,
            b"not an order",
            message("planted-retry").with_headers(retry_headers.into_table()),
        )
        .await;
    processes.orders.terminate().await;
    drop(probe);
    assert_eq!(kind_of(&topology.order_created_queue).await, "classic");

    // An operator lists the dead letters meanwhile: the listing holds them unacknowledged, which
    // deleting the queue would drop. The migration refuses, changing nothing.
    let connection = lapin::Connection::connect(
        &test_support::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let dead_letters = &topology.order_created_dead_letter_queue;
    let turn = messaging::turn::Turn::take(&connection, dead_letters, std::time::Duration::ZERO)
        .await
        .unwrap();
    let listing = connection.create_channel().await.unwrap();
    let held = listing
        .basic_get(dead_letters.as_str().into(), Default::default())
        .await
        .unwrap();
    assert!(held.is_some(), "the planted dead letter");
    let refused = processes
        .processor
        .command_output(&["queues", "migrate"], &quorum())
        .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("being listed or replayed"), "{stderr}");
    assert_eq!(kind_of(dead_letters).await, "classic");
    // The listing ends: its dead letter is back in the queue.
    listing.close(200, "OK".into()).await.unwrap();
    turn.end().await.unwrap();
    let probe = test_support::BrokerProbe::connect(messaging::topology::Topology {
        queue_type: messaging::topology::QueueType::Classic,
        ..topology.clone()
    })
    .await;
    test_support::wait_until("the listed dead letter back", START, || async {
        (probe.message_count(dead_letters).await == 1).then_some(())
    })
    .await;
    drop(probe);
    let _ = connection.close(200, "OK".into()).await;

    // On classic queues, services that want quorum queues are refused: the migration first.
    let output = processes
        .processor
        .command_output(&["queues", "migrate"], &quorum())
        .await;
    assert!(output.status.success(), "{output:?}");
    // A migration that went well says nothing alarming: the refusals it expects on its probes
    // are not logged as errors.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("\"ERROR\""), "{stderr}");
    let migrated: Value = serde_json::from_slice(&output.stdout).unwrap();
    let moved = |queue: &str| {
        migrated
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["queue"] == queue)
            .map(|entry| entry["messages"].as_u64().unwrap())
    };
    assert!(
        moved(&topology.order_created_queue).unwrap() >= 30,
        "{migrated}"
    );
    assert_eq!(
        moved(&topology.order_created_dead_letter_queue),
        Some(1),
        "{migrated}"
    );
    assert!(moved(&retry_queue).is_some(), "{migrated}");
    let migrated_orders = processes
        .orders
        .command(&["queues", "migrate"], &quorum())
        .await;
    assert!(
        migrated_orders.contains(&topology.order_processed_queue),
        "{migrated_orders}"
    );
    // Done once: a second run has nothing to do.
    assert_eq!(
        processes
            .processor
            .command(&["queues", "migrate"], &quorum())
            .await
            .trim(),
        "[]"
    );
    for queue in [
        &topology.order_created_queue,
        &topology.order_created_dead_letter_queue,
        &topology.order_processed_queue,
        &topology.order_processed_dead_letter_queue,
        &retry_queue,
    ] {
        assert_eq!(kind_of(queue).await, "quorum", "{queue}");
    }

    processes.orders.start_again_with(&quorum());
    processes.processor.start_again_with(&quorum());
    wait_ready(&client, &[&processes.orders_url, &processes.processor_url]).await;
    for i in 40..50 {
        ids.push(place(i).await);
    }
    for id in &ids {
        let order = wait_final(&client, &processes.orders_url, id, START).await;
        assert_eq!(order["status"], "completed", "{order}");
        let history = get_json(
            &client,
            format!("{}/orders/{id}/history", processes.orders_url),
        )
        .await;
        assert_eq!(history.as_array().unwrap().len(), 2, "{id}: {history}");
    }
    crate::helpers::assert_agreement(
        &client,
        &processes.orders_url,
        &processes.processor_url,
        &ids,
    )
    .await;
    // Both planted messages are dead letters now: the one moved as it was, the retry one after
    // it expired into the work queue and was refused as poison.
    let letters = test_support::wait_until("both planted dead letters", START, || async {
        let listed: Value = serde_json::from_str(
            &processes
                .processor
                .command(&["dead-letters", "list"], &quorum())
                .await,
        )
        .ok()?;
        let ids: Vec<String> = listed
            .as_array()?
            .iter()
            .filter_map(|letter| letter["event_id"].as_str().map(str::to_owned))
            .collect();
        (ids.len() == 2).then_some(ids)
    })
    .await;
    assert!(
        letters.contains(&"planted-dead-letter".to_owned()),
        "{letters:?}"
    );
    assert!(letters.contains(&"planted-retry".to_owned()), "{letters:?}");
}

#[tokio::test]
async fn the_migration_changes_nothing_while_a_service_consumes_the_queues() {
    let extra: Vec<(&str, String)> = CLASSIC
        .iter()
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect();
    let processes = processes::start(&extra, None).await;
    let topology = processes.topology.clone();
    // Both services still run: their consumers hold their work queues.
    for process in [&processes.orders, &processes.processor] {
        let refused = process
            .command_output(&["queues", "migrate"], &quorum())
            .await;
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("stop the services"), "{stderr}");
    }
    for queue in [
        &topology.order_created_queue,
        &topology.order_created_dead_letter_queue,
        &topology.order_processed_queue,
    ] {
        assert_eq!(kind_of(queue).await, "classic", "{queue}");
        assert_eq!(
            kind_of(&messaging::migrate::holding_queue(queue)).await,
            "missing"
        );
    }
    // And the pipeline goes on as before.
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/orders", processes.orders_url))
        .json(&order("still-classic", 1, "1.00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.unwrap();
    let id = placed["id"].as_str().unwrap();
    let order = wait_final(&client, &processes.orders_url, id, START).await;
    assert_eq!(order["status"], "completed", "{order}");
}
