//! Message fuzzing: thousands of generated messages, hostile and extreme, published into each
//! service's work queue. Afterwards both services are alive and ready, every message was
//! acknowledged or dead-lettered with a reason, no order was changed by an invalid event, and a
//! normal order placed afterwards completes. Seeded (`FUZZ_SEED`, printed), bounded (`FUZZ_COUNT`
//! per queue, default 2,000).

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use messaging::topology::routing_keys;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{DEADLINE, Pipeline, order, spawn_pipeline};

/// The message: one line whose product overflows a decimal.
fn overflowing_order() -> Value {
    let id = Uuid::new_v4();
    envelope(
        "order.created",
        id,
        json!({"order_id": id, "customer_id": "c", "total_amount": "1", "created_at": now(),
               "items": [{"product_id": "p", "quantity": 4294967295u32, "price": "79228162514264337593543950"}]}),
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn envelope(event_type: &str, correlation_id: Uuid, payload: Value) -> Value {
    json!({"event_id": Uuid::new_v4(), "event_type": event_type, "schema_version": 1,
           "occurred_at": now(), "correlation_id": correlation_id, "payload": payload})
}

/// Strings people should never be able to smuggle: control, zero-width, bidi, long, empty.
fn odd_string(rng: &mut fastrand::Rng) -> String {
    let pieces = [
        "",
        " ",
        "\u{0}",
        "\u{7}\u{1b}[31m",
        "\u{200b}",
        "\u{202e}evil",
        "\u{2066}x\u{2069}",
        "\u{feff}",
        "Zoë 李 🎃",
        "'; DROP TABLE orders; --",
        "%s%n",
        "\\",
        "\"",
    ];
    let mut text = String::new();
    for _ in 0..rng.usize(1..4) {
        text.push_str(pieces[rng.usize(..pieces.len())]);
    }
    if rng.u8(..20) == 0 {
        text.push_str(&"x".repeat(rng.usize(1..5000)));
    }
    text
}

/// A number a JSON field might hold: extreme, negative, zero, fractional, huge.
fn odd_number(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(..9) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u32::MAX),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(0.5),
        6 => json!(1e308),
        7 => json!("79228162514264337593543950"),
        _ => json!("-0.000000000000000000000000001"),
    }
}

/// A well-typed `order.created` with extreme but valid-looking values: reaches the rules.
fn extreme_order(rng: &mut fastrand::Rng) -> Value {
    let id = Uuid::new_v4();
    let lines = match rng.u8(..50) {
        0 => 10_000,
        1 => 0,
        _ => rng.usize(1..20),
    };
    // Half of them add up (so the rules decide them, over or under the limit); the others
    // carry a total that disagrees with their lines, or lines that overflow a decimal.
    let consistent = rng.bool();
    let mut sum = Some(Decimal::ZERO);
    let items: Vec<Value> = (0..lines)
        .map(|_| {
            let (quantity, price) = if consistent {
                (rng.u32(1..10_000), Decimal::new(rng.i64(0..100_000_000), 2))
            } else {
                (
                    rng.u32(..),
                    Decimal::new(rng.i64(0..i64::MAX), rng.u32(0..3)),
                )
            };
            sum = sum.and_then(|sum| {
                Decimal::from(quantity)
                    .checked_mul(price)
                    .and_then(|amount| sum.checked_add(amount))
            });
            json!({"product_id": odd_string(rng), "quantity": quantity, "price": price.to_string()})
        })
        .collect();
    let total = match sum {
        Some(sum) if consistent => json!(sum.to_string()),
        _ => json!(format!("{}", rng.u64(..))),
    };
    envelope(
        "order.created",
        id,
        json!({"order_id": id, "customer_id": odd_string(rng), "items": items,
               "total_amount": total, "created_at": now()}),
    )
}

/// A well-typed `order.processed`: for an unknown order, or one of `known` (any move, the
/// impossible ones included).
fn extreme_verdict(rng: &mut fastrand::Rng, known: &[Uuid]) -> Value {
    let id = if rng.bool() && !known.is_empty() {
        known[rng.usize(..known.len())]
    } else {
        Uuid::new_v4()
    };
    let status = ["completed", "rejected", "failed"][rng.usize(..3)];
    envelope(
        "order.processed",
        id,
        json!({"order_id": id, "status": status, "reason": odd_string(rng), "processed_at": now()}),
    )
}

/// Breaks a valid message in one way; returns the mutation's class.
fn mutate(rng: &mut fastrand::Rng, message: &mut Value) -> &'static str {
    let paths: [&[&str]; 6] = [
        &["event_id"],
        &["event_type"],
        &["schema_version"],
        &["correlation_id"],
        &["payload"],
        &["payload", "order_id"],
    ];
    let path = paths[rng.usize(..paths.len())];
    let (parent, key) = match path {
        [key] => (&mut *message, *key),
        [outer, key] => (&mut message[*outer], *key),
        _ => unreachable!(),
    };
    let Some(object) = parent.as_object_mut() else {
        return "field missing";
    };
    match rng.u8(..6) {
        0 => {
            object.remove(key);
            "field missing"
        }
        1 => {
            object.insert(key.into(), Value::Null);
            "field null"
        }
        2 => {
            object.insert(key.into(), json!([1, {"a": true}]));
            "field of the wrong type"
        }
        3 => {
            object.insert(key.into(), odd_number(rng));
            "odd number"
        }
        4 => {
            object.insert(key.into(), json!(odd_string(rng)));
            "odd string"
        }
        _ => {
            object.insert("schema_version".into(), json!(rng.u32(2..)));
            "unknown schema version"
        }
    }
}

/// One generated message: body, AMQP properties, and its class.
struct Generated {
    body: Vec<u8>,
    properties: BasicProperties,
    class: &'static str,
    /// Published twice (the same message id and body).
    twice: bool,
}

fn properties_for(message: &Value) -> BasicProperties {
    let mut properties = BasicProperties::default().with_content_type("application/json".into());
    // An AMQP short string holds 255 bytes at most.
    if let Some(id) = message["event_id"].as_str().filter(|id| id.len() <= 255) {
        properties = properties.with_message_id(id.into());
    }
    properties
}

fn generate(rng: &mut fastrand::Rng, valid: impl Fn(&mut fastrand::Rng) -> Value) -> Generated {
    let roll = rng.u8(..100);
    if roll < 40 {
        let message = valid(rng);
        return Generated {
            properties: properties_for(&message),
            body: serde_json::to_vec(&message).unwrap(),
            class: "valid envelope, extreme values",
            twice: false,
        };
    }
    if roll < 45 {
        let body: Vec<u8> = (0..rng.usize(1..2000)).map(|_| rng.u8(..)).collect();
        return Generated {
            body,
            properties: BasicProperties::default().with_message_id("bytes".into()),
            class: "not UTF-8 / random bytes",
            twice: false,
        };
    }
    if roll < 47 {
        let mut message = valid(rng);
        message["payload"]["customer_id"] = json!("m".repeat(1 << 20));
        return Generated {
            properties: properties_for(&message),
            body: serde_json::to_vec(&message).unwrap(),
            class: "megabyte string",
            twice: false,
        };
    }
    if roll < 55 {
        let message = valid(rng);
        let properties = match rng.u8(..4) {
            0 => BasicProperties::default(),
            1 => properties_for(&message).with_message_id(Uuid::new_v4().to_string().into()),
            2 => {
                let mut headers = FieldTable::default();
                headers.insert(
                    "x-attempt".into(),
                    AMQPValue::LongString(LongString::from("many")),
                );
                headers.insert("x-replayed-at".into(), AMQPValue::LongLongInt(-1));
                properties_for(&message).with_headers(headers)
            }
            _ => {
                let mut headers = FieldTable::default();
                headers.insert("x-attempt".into(), AMQPValue::LongLongInt(i64::MAX));
                properties_for(&message).with_headers(headers)
            }
        };
        return Generated {
            body: serde_json::to_vec(&message).unwrap(),
            properties,
            class: "missing or wrong AMQP properties and headers",
            twice: false,
        };
    }
    if roll < 60 {
        let mut message = valid(rng);
        message["payload"]["order_id"] = json!(Uuid::new_v4());
        return Generated {
            properties: properties_for(&message),
            body: serde_json::to_vec(&message).unwrap(),
            class: "mismatched ids",
            twice: false,
        };
    }
    if roll < 63 {
        let mut message = valid(rng);
        message["event_type"] = json!(["order.cancelled", "ORDER.CREATED", ""][rng.usize(..3)]);
        return Generated {
            properties: properties_for(&message),
            body: serde_json::to_vec(&message).unwrap(),
            class: "unknown event type",
            twice: false,
        };
    }
    if roll < 66 {
        let message = valid(rng);
        return Generated {
            properties: properties_for(&message),
            body: serde_json::to_vec(&message).unwrap(),
            class: "duplicate ids (published twice)",
            twice: true,
        };
    }
    let mut message = valid(rng);
    let class = mutate(rng, &mut message);
    Generated {
        properties: properties_for(&message),
        body: serde_json::to_vec(&message).unwrap(),
        class,
        twice: false,
    }
}

async fn publish_all(
    pipeline: &Pipeline,
    routing_key: &str,
    messages: Vec<Generated>,
) -> BTreeMap<&'static str, usize> {
    let mut classes = BTreeMap::new();
    for message in messages {
        *classes.entry(message.class).or_default() += 1;
        let copies = if message.twice { 2 } else { 1 };
        for _ in 0..copies {
            pipeline
                .probe
                .publish_raw(routing_key, &message.body, message.properties.clone())
                .await;
        }
    }
    classes
}

/// Waits until `queue` is empty, every retry queue too, and a fresh order went through.
async fn drained(pipeline: &Pipeline, queues: &[String]) {
    test_support::wait_until("the work and retry queues to drain", DEADLINE, || async {
        for queue in queues {
            if pipeline.probe.message_count(queue).await > 0 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test]
async fn thousands_of_hostile_messages_never_stop_the_pipeline() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20_261_202);
    let count: usize = std::env::var("FUZZ_COUNT")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(2_000);
    eprintln!("fuzz: FUZZ_SEED={seed} FUZZ_COUNT={count}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let pipeline = spawn_pipeline("10000.00").await;

    // Real orders first: no invalid event may change them.
    let mut known = Vec::new();
    for i in 0..10 {
        let placed = pipeline.place(&order(&format!("k{i}"), 1, "5.00")).await;
        let id = placed["id"].as_str().unwrap().to_owned();
        pipeline
            .wait_for_order(&id, "completed", |s| s == "completed")
            .await;
        known.push(Uuid::parse_str(&id).unwrap());
    }
    let before: Vec<Value> = {
        let mut histories = Vec::new();
        for id in &known {
            histories.push(
                pipeline
                    .get(pipeline.orders_url(&format!("/orders/{id}/history")))
                    .await,
            );
        }
        histories
    };

    let mut created: Vec<Generated> = (0..count)
        .map(|_| generate(&mut rng, extreme_order))
        .collect();
    let fixed = overflowing_order();
    created.push(Generated {
        properties: properties_for(&fixed),
        body: serde_json::to_vec(&fixed).unwrap(),
        class: "fixed: the overflowing line",
        twice: false,
    });
    let processed: Vec<Generated> = (0..count)
        .map(|_| generate(&mut rng, |rng| extreme_verdict(rng, &known)))
        .collect();
    let created_classes = publish_all(&pipeline, routing_keys::ORDER_CREATED, created).await;
    let processed_classes = publish_all(&pipeline, routing_keys::ORDER_PROCESSED, processed).await;
    eprintln!("fuzz: order.created by class {created_classes:?}");
    eprintln!("fuzz: order.processed by class {processed_classes:?}");
    for classes in [&created_classes, &processed_classes] {
        let valid = classes["valid envelope, extreme values"];
        assert!(
            valid * 3 >= count,
            "seed {seed}: only {valid} valid envelopes"
        );
    }

    let amqp = &pipeline.processor_settings.amqp;
    let queues = [
        vec![
            amqp.topology.order_created_queue.clone(),
            amqp.topology.order_processed_queue.clone(),
        ],
        pipeline.processor_settings.retry_tiers().queues(),
        pipeline.order_settings.retry_tiers().queues(),
    ]
    .concat();
    drained(&pipeline, &queues).await;
    // A normal order goes through after them all.
    let after = pipeline.place(&order("after-fuzz", 1, "7.00")).await;
    let after = after["id"].as_str().unwrap().to_owned();
    pipeline
        .wait_for_order(&after, "completed", |s| s == "completed")
        .await;
    drained(&pipeline, &queues).await;

    for url in [
        pipeline.orders_url("/ready"),
        pipeline.processor_url("/ready"),
    ] {
        let response = pipeline.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "seed {seed}: {url}");
    }
    // Every dead letter says why.
    let broker = messaging::broker::Broker::new(
        vec![service_kit::configuration::Secret::new(
            test_support::amqp_url(),
        )],
        amqp.topology.clone(),
        "fuzz-test",
        10,
    );
    for queue in [
        &amqp.topology.order_created_dead_letter_queue,
        &amqp.topology.order_processed_dead_letter_queue,
    ] {
        let letters = service_kit::dead_letters::list(&broker, queue, usize::MAX)
            .await
            .unwrap();
        let copies: u32 = letters.iter().map(|letter| letter.copies).sum();
        eprintln!("fuzz: {copies} dead letters in {queue}");
        for letter in &letters {
            assert_ne!(
                letter.reason, "unknown",
                "seed {seed}: a dead letter without a reason in {queue}: {letter:?}"
            );
        }
        if queue == &amqp.topology.order_created_dead_letter_queue {
            // The fuzzer does not stop at decoding: many orders were decided by the rules.
            assert!(
                (copies as usize) < count * 85 / 100,
                "seed {seed}: {copies} of {count} order.created dead-lettered"
            );
        }
    }
    broker.close().await;
    // No invalid event moved the real orders.
    for (id, history) in known.iter().zip(&before) {
        let now = pipeline
            .get(pipeline.orders_url(&format!("/orders/{id}/history")))
            .await;
        assert_eq!(&now, history, "seed {seed}: order {id} changed");
    }
    let mut ids: Vec<String> = known.iter().map(Uuid::to_string).collect();
    ids.push(after);
    pipeline.assert_agreement(&ids).await;
}
