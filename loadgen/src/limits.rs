//! `loadgen limits`: what the broker and the database alone can do on this machine, measured the
//! way the pipeline uses them: their throughput, and the latency of one durable step of each
//! taken alone (the floor under the pipeline's latency). Scratch queues and tables are removed
//! afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use serde::Serialize;

use crate::report::{Latency, new_histogram};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Limits {
    /// Persistent messages/s through a durable queue: published with confirms (in flight
    /// together, 500 at a time) and consumed with one ack per message.
    pub rabbitmq_msgs_per_s_ack_each: f64,
    /// The same, acknowledging 50 messages at a time (`multiple`).
    pub rabbitmq_msgs_per_s_ack_50: f64,
    /// Single-row INSERT commits/s with 8 connections.
    pub postgres_inserts_per_s: f64,
    /// One single-row INSERT commit at a time, paced at [`FLOOR_RATE`]/s: the floor under the
    /// POST latency (every accepted order waits for one commit) on this machine's disk.
    pub postgres_commit_latency: Latency,
    /// One persistent message published to a durable queue and its confirm, one at a time,
    /// paced at [`FLOOR_RATE`]/s: what each of the two broker hops of an order costs at least.
    pub rabbitmq_confirm_latency: Latency,
}

/// Operations per second of the latency floors: slow enough that they do not queue.
pub const FLOOR_RATE: u64 = 200;

impl Limits {
    /// Orders/s the broker allows: every order crosses it twice.
    pub fn broker_bound_orders_per_s(&self) -> f64 {
        self.rabbitmq_msgs_per_s_ack_each / 2.0
    }

    /// How far `later` (the same limits measured again) moved from these, as fractions.
    pub fn drift(&self, later: &Limits) -> Drift {
        let change = |before: f64, after: f64| {
            if before > 0.0 {
                after / before - 1.0
            } else {
                0.0
            }
        };
        Drift {
            rabbitmq: change(
                self.rabbitmq_msgs_per_s_ack_each,
                later.rabbitmq_msgs_per_s_ack_each,
            ),
            postgres: change(self.postgres_inserts_per_s, later.postgres_inserts_per_s),
            commit_p99: change(
                self.postgres_commit_latency.p99_ms,
                later.postgres_commit_latency.p99_ms,
            ),
        }
    }
}

/// How much the machine's own limits moved between the start and the end of a bench: on a
/// shared machine they can fall by a third within the hour (BENCHMARKS.md), and then the
/// pipeline's numbers measure the machine as much as the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Drift {
    /// RabbitMQ msg/s (acking each): after / before - 1.
    pub rabbitmq: f64,
    /// PostgreSQL insert commits/s: after / before - 1.
    pub postgres: f64,
    /// One commit's p99 latency: after / before - 1.
    pub commit_p99: f64,
}

impl Drift {
    /// Throughput moves of more than this share make a bench's ratios doubtful.
    pub const TOLERATED: f64 = 0.15;

    /// Whether the broker's or the database's throughput moved by more than [`Self::TOLERATED`].
    pub fn is_large(&self) -> bool {
        self.rabbitmq.abs() > Self::TOLERATED || self.postgres.abs() > Self::TOLERATED
    }
}

/// A body the size of an `order.created` event.
fn body() -> Vec<u8> {
    let mut body = br#"{"event_id":"00000000-0000-0000-0000-000000000000","event_type":"order.created","schema_version":1,"payload":{"#.to_vec();
    body.resize(420, b' ');
    body.extend_from_slice(b"}}");
    body
}

/// A connection, a channel in confirm mode and a durable scratch queue named `{prefix}.{uuid}`
/// (the caller deletes it).
async fn confirming_queue(
    amqp_url: &str,
    prefix: &str,
) -> anyhow::Result<(Connection, Channel, String)> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let queue = format!("{prefix}.{}", uuid::Uuid::new_v4().simple());
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, queue))
}

/// Publishes `body` as a persistent message to `queue` through the default exchange; the
/// returned confirm resolves when the broker has it.
async fn publish_persistent(
    channel: &Channel,
    queue: &str,
    body: &[u8],
) -> lapin::Result<lapin::PublisherConfirm> {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
}

/// Deletes a scratch queue of [`confirming_queue`] and closes its connection.
async fn remove_queue(connection: Connection, channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "OK".into()).await
}

/// A pool of `connections` and a scratch table named `{prefix}_{uuid}` (the caller drops it).
async fn scratch_table(
    database_url: &str,
    connections: u32,
    prefix: &str,
) -> anyhow::Result<(DatabaseConnection, String)> {
    let mut options = ConnectOptions::new(database_url.to_owned());
    options
        .max_connections(connections)
        .min_connections(connections)
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    let table = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    db.execute_unprepared(&format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .await?;
    Ok((db, table))
}

pub async fn rabbitmq(amqp_url: &str, messages: u64, ack_every: u64) -> anyhow::Result<f64> {
    let (connection, publisher, queue) = confirming_queue(amqp_url, "loadgen.limits").await?;
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(500, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "limits".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut received = 0u64;
        while received < messages {
            let Some(Ok(delivery)) = consumer.next().await else {
                break;
            };
            received += 1;
            if received.is_multiple_of(ack_every) || received == messages {
                delivery
                    .ack(BasicAckOptions {
                        multiple: ack_every > 1,
                    })
                    .await?;
            }
        }
        anyhow::Ok(received)
    });
    let body = Arc::new(body());
    let mut sent = 0u64;
    while sent < messages {
        let batch = (messages - sent).min(500);
        // Queued together, as the services' publisher does (`Publisher::publish_all`): lapin's
        // I/O thread writes what is queued at once instead of one message per wake-up.
        let confirms =
            join_all((0..batch).map(|_| publish_persistent(&publisher, &queue, &body))).await;
        for confirm in confirms {
            confirm?.await?;
        }
        sent += batch;
    }
    let received = consume.await??;
    let elapsed = started.elapsed().as_secs_f64();
    remove_queue(connection, &publisher, &queue).await?;
    Ok(received as f64 / elapsed)
}

pub async fn postgres(database_url: &str, inserts: u64) -> anyhow::Result<f64> {
    let (db, table) = scratch_table(database_url, 8, "loadgen_limits").await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let db = db.clone();
            let sql = format!("INSERT INTO {table} (body) VALUES ('order {worker}')");
            tokio::spawn(async move {
                for _ in 0..inserts / 8 {
                    db.execute_unprepared(&sql).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = (inserts / 8 * 8) as f64 / started.elapsed().as_secs_f64();
    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await?;
    db.close().await?;
    Ok(rate)
}

/// Calls `step` `count` times at [`FLOOR_RATE`] per second, one at a time, and returns the
/// latency of the steps alone (not counted from the schedule: a floor, not a queue).
async fn paced<F, Fut>(count: u64, mut step: F) -> anyhow::Result<Latency>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut histogram = new_histogram();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / FLOOR_RATE));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..count {
        ticks.tick().await;
        let started = Instant::now();
        step().await?;
        histogram.saturating_record(started.elapsed().as_micros() as u64);
    }
    Ok(Latency::of(&histogram))
}

pub async fn postgres_commit_latency(database_url: &str, commits: u64) -> anyhow::Result<Latency> {
    let (db, table) = scratch_table(database_url, 1, "loadgen_floor").await?;
    let sql = format!("INSERT INTO {table} (body) VALUES ('order')");
    let latency = paced(commits, || async {
        db.execute_unprepared(&sql).await?;
        Ok(())
    })
    .await;
    db.execute_unprepared(&format!("DROP TABLE {table}"))
        .await?;
    db.close().await?;
    latency
}

pub async fn rabbitmq_confirm_latency(amqp_url: &str, messages: u64) -> anyhow::Result<Latency> {
    let (connection, channel, queue) = confirming_queue(amqp_url, "loadgen.floor").await?;
    let body = body();
    let latency = paced(messages, || async {
        publish_persistent(&channel, &queue, &body).await?.await?;
        Ok(())
    })
    .await;
    remove_queue(connection, &channel, &queue).await?;
    latency
}

pub async fn measure(
    amqp_url: &str,
    database_url: &str,
    messages: u64,
    inserts: u64,
) -> anyhow::Result<Limits> {
    Ok(Limits {
        rabbitmq_msgs_per_s_ack_each: rabbitmq(amqp_url, messages, 1).await?,
        rabbitmq_msgs_per_s_ack_50: rabbitmq(amqp_url, messages, 50).await?,
        postgres_inserts_per_s: postgres(database_url, inserts).await?,
        // Five seconds each.
        postgres_commit_latency: postgres_commit_latency(database_url, 5 * FLOOR_RATE).await?,
        rabbitmq_confirm_latency: rabbitmq_confirm_latency(amqp_url, 5 * FLOOR_RATE).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rabbitmq: f64, postgres: f64, commit_p99_ms: f64) -> Limits {
        Limits {
            rabbitmq_msgs_per_s_ack_each: rabbitmq,
            postgres_inserts_per_s: postgres,
            postgres_commit_latency: Latency {
                p99_ms: commit_p99_ms,
                ..Latency::default()
            },
            ..Limits::default()
        }
    }

    #[test]
    fn drift_is_the_relative_move_of_each_limit() {
        let drift = limits(10_000.0, 6_000.0, 2.0).drift(&limits(6_600.0, 4_200.0, 4.0));
        assert!((drift.rabbitmq + 0.34).abs() < 1e-9, "{drift:?}");
        assert!((drift.postgres + 0.30).abs() < 1e-9, "{drift:?}");
        assert!((drift.commit_p99 - 1.0).abs() < 1e-9, "{drift:?}");
        assert!(drift.is_large());
    }

    #[test]
    fn a_machine_that_holds_steady_shows_no_large_drift() {
        let before = limits(10_000.0, 6_000.0, 2.0);
        assert!(!before.drift(&limits(9_000.0, 6_800.0, 3.0)).is_large());
        assert!(before.drift(&limits(8_400.0, 6_000.0, 2.0)).is_large());
        assert!(before.drift(&limits(10_000.0, 7_000.0, 2.0)).is_large());
        // Nothing measured before: no move to speak of.
        assert!(!limits(0.0, 0.0, 0.0).drift(&before).is_large());
    }
}
