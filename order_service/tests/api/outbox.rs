//! The outbox: an order committed but not yet published is published after a restart.

use contracts::events::OrderCreated;
use messaging::topology::routing_keys;
use sea_orm::ConnectionTrait;

use crate::helpers::{DEADLINE, spawn_app_with, valid_order};

#[tokio::test]
async fn an_order_committed_before_a_stop_is_published_after_the_restart() {
    // An instance whose relay never runs: it stops after the commit, before any publish.
    let app = spawn_app_with(|settings| settings.outbox.relay_enabled = false).await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CREATED).await;
    let order = app.create_order(&valid_order()).await;
    // Without a relay here, the row is not leased: any instance's relay may take it at once.
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND leased_until IS NULL")
            .await,
        1
    );
    let stopped = app.stop().await;

    let app = stopped
        .restart(|settings| settings.outbox.relay_enabled = true)
        .await;

    let event = tap.next_event::<OrderCreated>(DEADLINE).await;
    assert_eq!(
        event.payload.order_id.to_string(),
        order["id"].as_str().unwrap()
    );
    test_support::wait_until("the outbox row to be marked sent", DEADLINE, || async {
        (app.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 1);
}

#[tokio::test]
async fn an_order_is_published_on_commit_while_its_row_is_leased_and_then_marked_sent() {
    // A lease far longer than the test: only the publish on commit can send the event in time,
    // not the relay's claim (which leaves a leased row alone).
    let app =
        spawn_app_with(|settings| settings.outbox.lease = std::time::Duration::from_secs(3600))
            .await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CREATED).await;
    let order = app.create_order(&valid_order()).await;

    let event = tap.next_event::<OrderCreated>(DEADLINE).await;
    assert_eq!(
        event.payload.order_id.to_string(),
        order["id"].as_str().unwrap()
    );
    test_support::wait_until("the outbox row to be marked sent", DEADLINE, || async {
        (app.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM outbox \
             WHERE leased_until > now() + interval '1 hour' - interval '1 minute' AND attempts = 0"
        )
        .await,
        1,
        "written with this instance's lease, published at the first attempt"
    );
}

#[tokio::test]
async fn the_relay_leaves_a_leased_row_alone_until_its_lease_runs_out() {
    let app = spawn_app_with(|settings| {
        settings.outbox.poll_interval = std::time::Duration::from_millis(100)
    })
    .await;
    let row = |label: &str, lease: &str| {
        format!(
            "INSERT INTO outbox (event_id, event_type, routing_key, body, leased_until) \
             VALUES (gen_random_uuid(), '{label}', 'order.created', '\\x7b7d', {lease})"
        )
    };
    // Oldest first: a claim that ignored leases would take the leased row before the other.
    for sql in [
        row("leased", "now() + interval '1 hour'"),
        row("free", "NULL"),
    ] {
        app.db
            .execute_unprepared(&sql)
            .await
            .expect("insert an outbox row");
    }
    let sent = |label: &'static str| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM outbox WHERE event_type = '{label}' AND sent_at IS NOT NULL"
            ))
            .await
                == 1
        }
    };

    test_support::wait_until("the row without a lease to be sent", DEADLINE, || async {
        sent("free").await.then_some(())
    })
    .await;
    assert!(!sent("leased").await, "a leased row was taken by the relay");

    // Its writer stopped before publishing it: once the lease runs out, the relay takes it.
    app.db
        .execute_unprepared(
            "UPDATE outbox SET leased_until = now() - interval '1 second' \
             WHERE event_type = 'leased'",
        )
        .await
        .expect("end the lease");
    test_support::wait_until("the formerly leased row to be sent", DEADLINE, || async {
        sent("leased").await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn many_orders_are_each_published_once() {
    let app = spawn_app_with(|settings| settings.outbox.batch_size = 7).await;
    let mut tap = app.probe.tap(routing_keys::ORDER_CREATED).await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..30 {
        ids.insert(
            app.create_order(&valid_order()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let event = tap.next_event::<OrderCreated>(DEADLINE).await;
        assert!(
            seen.insert(event.payload.order_id.to_string()),
            "published twice"
        );
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn an_unroutable_event_is_never_marked_sent_and_goes_out_once_it_can_be_routed() {
    let app = spawn_app_with(|settings| {
        settings.outbox.poll_interval = std::time::Duration::from_millis(100)
    })
    .await;
    let probe = &app.probe;
    let queue = app.settings.amqp.topology.order_created_queue.clone();
    // Once the service has connected (and declared its topology)...
    test_support::wait_until("readiness", DEADLINE, || async {
        (app.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    // ...nothing is bound to order.created: the broker returns the mandatory message.
    probe
        .set_binding(&queue, routing_keys::ORDER_CREATED, false)
        .await;
    app.create_order(&valid_order()).await;

    let error: String =
        test_support::wait_until("a failed publishing attempt", DEADLINE, || async {
            use sea_orm::ConnectionTrait;
            let row = app
                .db
                .query_one_raw(sea_orm::Statement::from_string(
                    app.db.get_database_backend(),
                    "SELECT last_error FROM outbox WHERE sent_at IS NULL AND attempts > 0",
                ))
                .await
                .unwrap()?;
            row.try_get_by_index::<Option<String>>(0).unwrap()
        })
        .await;
    assert!(error.contains("unroutable"), "{error}");
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .await,
        0
    );

    probe
        .set_binding(&queue, routing_keys::ORDER_CREATED, true)
        .await;
    test_support::wait_until("the event to be published", DEADLINE, || async {
        (probe.message_count(&queue).await == 1).then_some(())
    })
    .await;
    test_support::wait_until("the row to be marked sent", DEADLINE, || async {
        (app.count("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            .await
            == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_purge_deletes_only_rows_sent_before_the_retention_window() {
    let app = spawn_app_with(|settings| settings.outbox.relay_enabled = false).await;
    let row = |label: &str, created_hours_ago: i32, sent_hours_ago: Option<i32>| {
        let sent = match sent_hours_ago {
            Some(hours) => format!("now() - interval '{hours} hours'"),
            None => "NULL".to_owned(),
        };
        format!(
            "INSERT INTO outbox (event_id, event_type, routing_key, body, created_at, sent_at) \
             VALUES (gen_random_uuid(), '{label}', 'order.created', '\\x7b7d', \
                     now() - interval '{created_hours_ago} hours', {sent})"
        )
    };
    for sql in [
        row("old-sent", 30, Some(29)),
        row("old-unsent", 30, None),
        row("old-but-sent-lately", 30, Some(1)),
        row("new-sent", 1, Some(1)),
    ] {
        app.db
            .execute_unprepared(&sql)
            .await
            .expect("insert an outbox row");
    }

    let purged = messaging::outbox::purge_sent(&app.db, std::time::Duration::from_secs(24 * 3600))
        .await
        .expect("purge");

    assert_eq!(purged, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'old-sent'")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 3);
}

/// `Publisher::publish_all` queues every message before lapin's I/O thread writes them (one
/// write for the batch, not one hand-off per message): the batch must still reach the broker
/// complete, each message confirmed, in the order given. 300 messages: more than `join_all`
/// polls as a plain list (it switches to an ordered stream above 30).
#[tokio::test]
async fn a_batch_published_together_is_confirmed_and_arrives_in_order() {
    let id = test_support::unique_id();
    let topology = messaging::topology::Topology::with_prefix(&id);
    let _cleanup = test_support::Cleanup {
        databases: Vec::new(),
        topology: Some(topology.clone()),
        queues: Vec::new(),
    };
    let probe = test_support::BrokerProbe::connect(topology.clone()).await;
    let mut tap = probe.tap(routing_keys::ORDER_CREATED).await;
    let broker = messaging::broker::Broker::new(
        vec![service_kit::configuration::Secret::new(
            test_support::amqp_url(),
        )],
        topology,
        "publish-all-test",
        10,
    );
    let publisher = messaging::broker::Publisher::open(&broker, std::time::Duration::from_secs(10))
        .await
        .expect("open a publisher");
    let messages: Vec<messaging::broker::OutgoingMessage> = (0..300)
        .map(|n| messaging::broker::OutgoingMessage {
            event_id: uuid::Uuid::new_v4(),
            event_type: "order.created".into(),
            routing_key: routing_keys::ORDER_CREATED.into(),
            correlation_id: None,
            body: format!("{{\"n\":{n}}}").into_bytes(),
            trace: None,
        })
        .collect();

    let results = publisher.publish_all(&messages).await;

    assert_eq!(results.len(), messages.len());
    for (n, result) in results.iter().enumerate() {
        assert!(result.is_ok(), "message {n} not confirmed: {result:?}");
    }
    for (n, message) in messages.iter().enumerate() {
        let delivery = tap.next(DEADLINE).await;
        assert_eq!(
            messaging::consumer::message_id(&delivery),
            Some(message.event_id.to_string()),
            "message {n} out of order"
        );
        assert_eq!(delivery.data, message.body);
    }
    publisher.close().await;
    broker.close().await;
}
