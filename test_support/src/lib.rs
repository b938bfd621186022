//! Test support: every test gets its own databases and its own exchange
//! and queue names, and cleans them up; a [`BrokerProbe`] publishes raw messages and observes what
//! the services publish without taking it from their queues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use contracts::events::{Envelope, Event};
use messaging::topology::Topology;
use service_kit::configuration::{AmqpSettings, DatabaseSettings, Secret};

pub mod identity;
pub mod netns;
pub mod otlp;
pub mod outage;
pub mod prometheus;
pub mod rabbit_cluster;
pub mod rabbit_node;
pub mod schemathesis;
pub mod sse;
pub mod tls;
pub mod webdriver;

/// PostgreSQL server the tests use (`TEST_DATABASE_SERVER`, default the local one).
pub fn database_server() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// RabbitMQ the tests use (`TEST_AMQP_URL`, default the local one).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A short unique id for one test's resources.
pub fn unique_id() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn database_settings(name: &str) -> DatabaseSettings {
    DatabaseSettings {
        max_connections: 8,
        ..DatabaseSettings::at(format!("{}/{name}", database_server()))
    }
}

/// Broker settings whose every exchange and queue name carries `id`.
pub fn amqp_settings(id: &str) -> AmqpSettings {
    AmqpSettings {
        url: Secret::new(amqp_url()),
        prefetch: 32,
        topology: Topology::with_prefix(id),
        ..AmqpSettings::local()
    }
}

/// Polls `check` until it gives a value, failing the test after `deadline`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drops the test's databases and broker names when the test ends (also when it panics).
pub struct Cleanup {
    pub databases: Vec<String>,
    pub topology: Option<Topology>,
    /// Queues beyond the topology's (retry queues).
    pub queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let databases = std::mem::take(&mut self.databases);
        let topology = self.topology.take();
        let queues = std::mem::take(&mut self.queues);
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                for url in databases {
                    let _ = messaging::database::drop_database(&url).await;
                }
                if let Some(topology) = topology
                    && let Ok(connection) =
                        Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                    && let Ok(channel) = connection.create_channel().await
                {
                    let _ = topology.delete(&channel).await;
                    for queue in queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), Default::default())
                            .await;
                    }
                    let _ = connection.close(200, "OK".into()).await;
                }
            });
        })
        .join();
    }
}

/// A test's own connection to the broker: publishes like a service would, and taps routing keys.
pub struct BrokerProbe {
    pub topology: Topology,
    connection: Connection,
    channel: Channel,
}

impl BrokerProbe {
    /// Connects and declares the topology (so messages can be routed before a service starts).
    pub async fn connect(topology: Topology) -> Self {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare topology");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Self {
            topology,
            connection,
            channel,
        }
    }

    /// Publishes `body` to the test's exchange and waits for the broker's confirm.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let exchange = self.topology.exchange.clone();
        self.publish_to(&exchange, routing_key, false, body, properties)
            .await;
    }

    /// Publishes `body` straight into `queue` (through the default exchange), persistent; a
    /// message no queue takes fails the test.
    pub async fn publish_to_queue(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.publish_to("", queue, true, body, properties).await;
    }

    async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) {
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(
            confirmation.is_ack() && confirmation.take_message().is_none(),
            "broker refused or returned the test message"
        );
    }

    /// Publishes an event as a service would (`message_id` = `event_id`).
    pub async fn publish<P: Event>(&self, event: &Envelope<P>) {
        self.publish_raw(
            P::ROUTING_KEY,
            &event.encode().expect("encode"),
            BasicProperties::default()
                .with_message_id(event.event_id.to_string().into())
                .with_content_type("application/json".into()),
        )
        .await;
    }

    /// A private queue receiving a copy of everything published with `routing_key`.
    pub async fn tap(&self, routing_key: &str) -> Tap {
        let channel = self.connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare tap queue");
        channel
            .queue_bind(
                queue.name().clone(),
                self.topology.exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind tap queue");
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume tap queue");
        Tap {
            _channel: channel,
            consumer,
        }
    }

    /// Binds or unbinds `queue` from the test's exchange for `routing_key`.
    pub async fn set_binding(&self, queue: &str, routing_key: &str, bound: bool) {
        if bound {
            self.channel
                .queue_bind(
                    queue.into(),
                    self.topology.exchange.as_str().into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind");
        } else {
            self.channel
                .queue_unbind(
                    queue.into(),
                    self.topology.exchange.as_str().into(),
                    routing_key.into(),
                    FieldTable::default(),
                )
                .await
                .expect("unbind");
        }
    }

    /// Removes every ready message of `queue` (what a careless operator or a lost node does).
    pub async fn purge(&self, queue: &str) -> u32 {
        self.channel
            .queue_purge(queue.into(), Default::default())
            .await
            .expect("purge")
    }

    /// Deletes `queue` with its messages.
    pub async fn delete_queue(&self, queue: &str) -> u32 {
        self.channel
            .queue_delete(queue.into(), Default::default())
            .await
            .expect("delete")
    }

    /// Takes the first message of `queue` and returns it with `basic.nack(requeue)`, as a consumer
    /// that cannot handle it would; false if the queue is empty.
    pub async fn take_and_return(&self, queue: &str) -> bool {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get");
        match message {
            Some(message) => {
                message
                    .delivery
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .expect("nack");
                true
            }
            None => false,
        }
    }

    /// Looks at the first message of `queue` and puts it back.
    pub async fn peek(&self, queue: &str) -> Option<Delivery> {
        let channel = self.connection.create_channel().await.expect("channel");
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")?;
        // Closing the channel returns the unacknowledged message to the queue.
        channel.close(200, "OK".into()).await.expect("close");
        Some(message.delivery)
    }

    /// Messages ready in `queue` and consumers on it: a parked consumer has none.
    pub async fn queue_state(&self, queue: &str) -> (u32, u32) {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        (declared.message_count(), declared.consumer_count())
    }

    /// Messages ready in `queue`.
    pub async fn message_count(&self, queue: &str) -> u32 {
        messaging::topology::ready_count(&self.channel, queue)
            .await
            .expect("passive declare")
    }
}

/// Copies of the messages of one routing key, in order.
pub struct Tap {
    _channel: Channel,
    consumer: Consumer,
}

impl Tap {
    /// The next message, failing the test after `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Delivery {
        let delivery = tokio::time::timeout(deadline, self.consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no message within {deadline:?}"))
            .expect("tap consumer ended")
            .expect("tap delivery");
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack tap delivery");
        delivery
    }

    /// The next message decoded as `P`.
    pub async fn next_event<P: Event>(&mut self, deadline: Duration) -> Envelope<P> {
        let delivery = self.next(deadline).await;
        let envelope = Envelope::<P>::decode(&delivery.data).expect("decode tapped event");
        assert_eq!(
            messaging::consumer::message_id(&delivery),
            Some(envelope.event_id.to_string()),
            "message_id must equal event_id"
        );
        envelope
    }

    /// Whether a message arrives within `window`: only for asserting that nothing more came after
    /// a condition that guarantees it would have been published already.
    pub async fn try_next(&mut self, window: Duration) -> Option<Delivery> {
        let delivery = tokio::time::timeout(window, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        Some(delivery)
    }
}

/// The environment that points a service binary (`prefix` = `ORDER_SERVICE` or
/// `PROCESSOR_SERVICE`) at a test's database and broker names.
pub fn service_env(
    prefix: &str,
    port: u16,
    database_url: &str,
    amqp: &AmqpSettings,
) -> Vec<(String, String)> {
    let var = |key: &str| format!("{prefix}__{key}");
    vec![
        (var("HTTP__HOST"), "127.0.0.1".into()),
        (var("HTTP__PORT"), port.to_string()),
        (var("DATABASE__URL"), database_url.into()),
        (var("AMQP__URL"), amqp.url.expose().into()),
        (var("AMQP__EXCHANGE"), amqp.topology.exchange.clone()),
        (
            var("AMQP__DEAD_LETTER_EXCHANGE"),
            amqp.topology.dead_letter_exchange.clone(),
        ),
        (
            var("AMQP__ORDER_CREATED_QUEUE"),
            amqp.topology.order_created_queue.clone(),
        ),
        (
            var("AMQP__ORDER_PROCESSED_QUEUE"),
            amqp.topology.order_processed_queue.clone(),
        ),
        (
            var("AMQP__ORDER_CREATED_DEAD_LETTER_QUEUE"),
            amqp.topology.order_created_dead_letter_queue.clone(),
        ),
        (
            var("AMQP__ORDER_PROCESSED_DEAD_LETTER_QUEUE"),
            amqp.topology.order_processed_dead_letter_queue.clone(),
        ),
        (
            var("AMQP__QUEUE_TYPE"),
            serde_json::to_value(amqp.topology.queue_type)
                .ok()
                .and_then(|kind| kind.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        (
            var("AMQP__DELIVERY_LIMIT"),
            amqp.topology.delivery_limit.to_string(),
        ),
    ]
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts the service binary, waits until it serves HTTP, sends SIGTERM, and asserts that it exits
/// with code 0 within its grace period. `own_queues` names the queues the service declares beyond
/// the topology (the processor's retry queues), which are removed afterwards with it.
pub fn assert_sigterm_exits_cleanly(
    binary: &str,
    prefix: &str,
    database: &str,
    own_queues: impl FnOnce(&AmqpSettings) -> Vec<String>,
) {
    use std::time::Instant;

    let id = unique_id();
    let amqp = amqp_settings(&id);
    let database = database_settings(&format!("{database}_{id}"));
    let _cleanup = Cleanup {
        databases: vec![database.url.expose().to_owned()],
        topology: Some(amqp.topology.clone()),
        queues: own_queues(&amqp),
    };
    let port = free_port();
    let mut child = std::process::Command::new(binary)
        .envs(service_env(prefix, port, database.url.expose(), &amqp))
        .env(format!("{prefix}__SHUTDOWN__GRACE_SECONDS"), "10")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the service");
    let started = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < started, "{binary} did not start");
        assert!(child.try_wait().unwrap().is_none(), "{binary} exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{binary} did not stop within its grace period");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{binary} exit status");
}
