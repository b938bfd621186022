use contracts::events::{OrderProcessed, ProcessingStatus};
use messaging::topology::routing_keys;
use serde_json::Value;

use crate::helpers::{DEADLINE, order_created, spawn_app, spawn_app_with};

#[tokio::test]
async fn an_order_within_the_limit_is_completed_and_announced() {
    let app = spawn_app().await;
    let mut tap = app.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let event = order_created(2, "10.50");
    let order_id = event.payload.order_id;

    app.probe.publish(&event).await;

    let verdict = tap.next_event::<OrderProcessed>(DEADLINE).await;
    assert_eq!(verdict.payload.order_id, order_id);
    assert_eq!(verdict.correlation_id, order_id);
    assert_eq!(verdict.payload.status, ProcessingStatus::Completed);
    assert_eq!(verdict.payload.reason, None);
    let record = app
        .wait_for_record(order_id, |r| !r["decision"].is_null())
        .await;
    assert_eq!(record["decision"], "completed");
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["reason"], Value::Null);
    assert!(record["decided_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn an_order_over_the_limit_is_rejected_with_the_reason() {
    let app =
        spawn_app_with(|settings| settings.rules.max_order_total = "100.00".parse().unwrap()).await;
    let mut tap = app.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let over = order_created(1, "100.01");
    let at_limit = order_created(1, "100.00");

    app.probe.publish(&over).await;
    app.probe.publish(&at_limit).await;

    let mut verdicts = [
        tap.next_event::<OrderProcessed>(DEADLINE).await.payload,
        tap.next_event::<OrderProcessed>(DEADLINE).await.payload,
    ];
    verdicts.sort_by_key(|v| v.order_id != over.payload.order_id);
    assert_eq!(verdicts[0].status, ProcessingStatus::Rejected);
    let reason = verdicts[0].reason.clone().unwrap();
    assert!(reason.contains("exceeds the maximum of 100.00"), "{reason}");
    assert_eq!(verdicts[1].order_id, at_limit.payload.order_id);
    assert_eq!(verdicts[1].status, ProcessingStatus::Completed);
    let record = app
        .wait_for_record(over.payload.order_id, |r| !r["decision"].is_null())
        .await;
    assert_eq!(record["decision"], "rejected");
    assert_eq!(record["reason"], reason.as_str());
}

#[tokio::test]
async fn a_duplicated_order_created_is_processed_once() {
    let app = spawn_app().await;
    let mut tap = app.probe.tap(routing_keys::ORDER_PROCESSED).await;
    let event = order_created(1, "5.00");
    let order_id = event.payload.order_id;
    // The same event three times, and once more under another event id (a re-published order).
    let mut republished = event.clone();
    republished.event_id = uuid::Uuid::new_v4();
    for message in [&event, &event, &event, &republished] {
        app.probe.publish(message).await;
    }

    // Every delivery reached the processor (they may run concurrently: a decision guarded by
    // `decision IS NULL` admits one writer, whichever delivery gets there first)...
    let record = app
        .wait_for_record(order_id, |r| r["attempts"] == 4 && !r["decision"].is_null())
        .await;
    assert_eq!(record["decision"], "completed");
    // ...and exactly one decision came of them. Each duplicate announces that decision again (the
    // order service may have lost the first announcement; applying it twice changes nothing).
    assert_eq!(app.count("SELECT count(*) FROM processing").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM outbox").await, 4);
    let first = tap.next_event::<OrderProcessed>(DEADLINE).await;
    assert_eq!(first.payload.order_id, order_id);
    for _ in 0..3 {
        let again = tap.next_event::<OrderProcessed>(DEADLINE).await;
        assert_eq!(again.payload.status, first.payload.status);
        assert_eq!(again.payload.processed_at, first.payload.processed_at);
        assert_ne!(again.event_id, first.event_id);
    }
    test_support::wait_until("the outbox to be relayed", DEADLINE, || async {
        (app.count("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
    assert!(
        tap.try_next(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "a fifth order.processed was published"
    );
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_consuming_goes_on() {
    let app = spawn_app().await;
    let mut wrong_version = serde_json::to_value(order_created(1, "1.00")).unwrap();
    wrong_version["schema_version"] = 99.into();
    let mut inconsistent = order_created(1, "1.00");
    inconsistent.payload.total_amount = "0.50".parse().unwrap();
    let poison: Vec<(Vec<u8>, Option<String>)> = vec![
        (b"not json".to_vec(), Some("m1".into())),
        (
            br#"{"event_type":"order.created"}"#.to_vec(),
            Some("m2".into()),
        ),
        (
            serde_json::to_vec(&wrong_version).unwrap(),
            Some("m3".into()),
        ),
        (order_created(1, "1.00").encode().unwrap(), None),
        (
            inconsistent.encode().unwrap(),
            Some(inconsistent.event_id.to_string()),
        ),
    ];
    let count = poison.len() as u32;
    for (body, message_id) in poison {
        let mut properties = lapin::BasicProperties::default();
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        app.probe
            .publish_raw(routing_keys::ORDER_CREATED, &body, properties)
            .await;
    }
    let dlq = app
        .settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    test_support::wait_until(
        "every poison message in the dead-letter queue",
        DEADLINE,
        || async { (app.probe.message_count(&dlq).await == count).then_some(()) },
    )
    .await;
    // Only the inconsistent one names an order: its failure is recorded; the others, nothing.
    assert_eq!(app.count("SELECT count(*) FROM processing").await, 1);
    // Each with its reason; those that could not be decoded marked poison, without an order.
    let listed: Value = app
        .client
        .get(format!("{}/dead-letters", app.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Handled concurrently: the dead-letter queue's order is not the publishing order.
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), count as usize);
    let (poison, decoded): (Vec<&Value>, Vec<&Value>) =
        listed.iter().partition(|letter| letter["poison"] == true);
    assert_eq!(poison.len(), 4);
    assert!(poison.iter().all(|letter| letter["order_id"].is_null()));
    assert_eq!(
        decoded[0]["order_id"],
        inconsistent.payload.order_id.to_string()
    );
    assert!(
        decoded[0]["reason"]
            .as_str()
            .unwrap()
            .contains("differs from the sum")
    );
    // It names its order: the order failed, with the reason, before it was dead-lettered.
    let record = app
        .wait_for_record(inconsistent.payload.order_id, |r| r["decision"] == "failed")
        .await;
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("differs from the sum"),
        "{record}"
    );
    let reasons: Vec<&str> = poison
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    for expected in [
        "not valid JSON",
        "missing field",
        "unsupported schema_version 99",
        "no message_id",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }

    let good = order_created(1, "1.00");
    app.probe.publish(&good).await;
    app.wait_for_record(good.payload.order_id, |r| r["decision"] == "completed")
        .await;
}

/// Lines whose product overflows a decimal (anyone who can publish to the broker can send them):
/// the order fails with the reason and is dead-lettered, and the processor goes on.
#[tokio::test]
async fn an_order_whose_lines_overflow_a_decimal_fails_and_the_processor_goes_on() {
    let app = spawn_app().await;
    let mut hostile = order_created(1, "1.00");
    hostile.payload.items[0].quantity = u32::MAX;
    hostile.payload.items[0].price = "79228162514264337593543950".parse().unwrap();
    hostile.payload.total_amount = "1".parse().unwrap();
    app.probe.publish(&hostile).await;
    let record = app
        .wait_for_record(hostile.payload.order_id, |r| r["decision"] == "failed")
        .await;
    assert!(
        record["reason"].as_str().unwrap().contains("overflows"),
        "{record}"
    );
    let next = order_created(2, "10.50");
    app.probe.publish(&next).await;
    let record = app
        .wait_for_record(next.payload.order_id, |r| !r["decision"].is_null())
        .await;
    assert_eq!(record["decision"], "completed");
}

/// A panic while handling one delivery (injected for one customer) stays in that delivery: its
/// order fails with the panic's message and is dead-lettered, the deliveries around it complete,
/// and the processor goes on consuming and stays ready.
#[tokio::test]
async fn a_panic_in_one_delivery_fails_that_order_and_nothing_else() {
    let app = spawn_app_with(|settings| {
        settings.faults.panic_for_customer = Some("boom".into());
    })
    .await;
    let mut doomed = order_created(1, "1.00");
    doomed.payload.customer_id = "boom".into();
    let others: Vec<_> = (0..10).map(|_| order_created(1, "2.00")).collect();
    for (i, order) in others.iter().enumerate() {
        if i == 5 {
            app.probe.publish(&doomed).await;
        }
        app.probe.publish(order).await;
    }
    let record = app
        .wait_for_record(doomed.payload.order_id, |r| r["decision"] == "failed")
        .await;
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("injected panic for customer boom"),
        "{reason}"
    );
    for order in &others {
        let record = app
            .wait_for_record(order.payload.order_id, |r| !r["decision"].is_null())
            .await;
        assert_eq!(record["decision"], "completed");
    }
    let dlq = app
        .settings
        .amqp
        .topology
        .order_created_dead_letter_queue
        .clone();
    test_support::wait_until("the dead letter", DEADLINE, || async {
        (app.probe.message_count(&dlq).await == 1).then_some(())
    })
    .await;
    let letter = app.probe.peek(&dlq).await.unwrap();
    let headers = messaging::headers::Headers::from_table(letter.properties.headers().as_ref());
    assert!(
        headers
            .str(messaging::headers::FAILURE_REASON)
            .unwrap()
            .contains("handling panicked: injected panic"),
        "{headers:?}"
    );
    assert_eq!(app.get("/ready").await.status(), 200);
    let after = order_created(1, "3.00");
    app.probe.publish(&after).await;
    let record = app
        .wait_for_record(after.payload.order_id, |r| !r["decision"].is_null())
        .await;
    assert_eq!(record["decision"], "completed");
}
