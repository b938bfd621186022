//! The AMQP topology both services declare, idempotently, at start and after every reconnection
//! (the picture is in [`contracts::topology`]).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use serde::{Deserialize, Serialize};

pub use contracts::routing_keys;
use contracts::topology as names;

/// The kind of the work and dead-letter queues.
///
/// `quorum` (the default) is RabbitMQ's replicated queue (Raft over the cluster's nodes): a
/// message a publisher saw confirmed survives the loss of a minority of the nodes. `classic` is
/// its single-node durable queue. On one node both keep messages on disk, and they measured the
/// same cost here (BENCHMARKS.md, "Decisions, measured").
///
/// RabbitMQ cannot change the kind of an existing queue: a queue declared with the other kind
/// makes the declaration fail (`PRECONDITION_FAILED - inequivalent arg 'x-queue-type'`).
/// [`crate::migrate`] replaces such queues, moving their messages (`<service> queues migrate`).
/// The retry queues are of the same kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    #[default]
    Quorum,
}

impl QueueType {
    /// The declaration arguments that make a queue of this kind.
    fn arguments(self, mut arguments: FieldTable) -> FieldTable {
        if self == Self::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        arguments
    }

    /// The arguments of a queue that dead-letters (a work queue, a retry queue): on quorum
    /// queues, dead-lettering is at least once (the broker keeps a message until the target
    /// queue confirmed it, where the default may drop it), which needs `reject-publish` overflow.
    fn dead_lettering(self, mut arguments: FieldTable) -> FieldTable {
        if self == Self::Quorum {
            arguments.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString(LongString::from("at-least-once")),
            );
            arguments.insert(
                "x-overflow".into(),
                AMQPValue::LongString(LongString::from("reject-publish")),
            );
        }
        self.arguments(arguments)
    }
}

/// Names of the exchanges and queues, and the kind of the queues: the `amqp` section of a
/// service's settings holds these fields. The default names are the contract
/// ([`contracts::topology`]); tests prefix them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub exchange: String,
    pub dead_letter_exchange: String,
    pub order_created_queue: String,
    pub order_processed_queue: String,
    pub order_created_dead_letter_queue: String,
    pub order_processed_dead_letter_queue: String,
    /// The kind of the work and dead-letter queues.
    pub queue_type: QueueType,
    /// `x-delivery-limit` of quorum work queues. Read as a number or as a string of digits,
    /// since the settings it is flattened into hand it over as the environment wrote it.
    #[serde(deserialize_with = "number_or_digits")]
    pub delivery_limit: u32,
}

/// A `u32` written as a number or as a string of digits.
fn number_or_digits<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u32),
        Digits(String),
    }
    match Written::deserialize(deserializer)? {
        Written::Number(value) => Ok(value),
        Written::Digits(text) => text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("{text:?} is not a whole number up to {}", u32::MAX))
        }),
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            exchange: names::EXCHANGE.into(),
            dead_letter_exchange: names::DEAD_LETTER_EXCHANGE.into(),
            order_created_queue: names::ORDER_CREATED_QUEUE.into(),
            order_processed_queue: names::ORDER_PROCESSED_QUEUE.into(),
            order_created_dead_letter_queue: names::ORDER_CREATED_DEAD_LETTER_QUEUE.into(),
            order_processed_dead_letter_queue: names::ORDER_PROCESSED_DEAD_LETTER_QUEUE.into(),
            queue_type: QueueType::Quorum,
            delivery_limit: 1000,
        }
    }
}

impl Topology {
    /// Every name prefixed with `prefix.`: isolates tests sharing one broker.
    pub fn with_prefix(prefix: &str) -> Self {
        let base = Self::default();
        let p = |name: String| format!("{prefix}.{name}");
        Self {
            exchange: p(base.exchange),
            dead_letter_exchange: p(base.dead_letter_exchange),
            order_created_queue: p(base.order_created_queue),
            order_processed_queue: p(base.order_processed_queue),
            order_created_dead_letter_queue: p(base.order_created_dead_letter_queue),
            order_processed_dead_letter_queue: p(base.order_processed_dead_letter_queue),
            queue_type: base.queue_type,
            delivery_limit: base.delivery_limit,
        }
    }

    /// Declares everything. Idempotent: the arguments are the same on every declaration, as the
    /// broker requires.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [&self.exchange, &self.dead_letter_exchange] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in self.queues() {
            queue.declare(channel).await?;
        }
        Ok(())
    }

    /// The work and dead-letter queues, as [`Topology::declare`] declares them.
    pub fn queues(&self) -> Vec<QueueDeclaration> {
        // Work queues: a rejected (requeue = false) message is dead-lettered to the DLX with its
        // original routing key, which routes it to the matching dead-letter queue.
        let mut work_queue_arguments = FieldTable::default();
        work_queue_arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_bytes())),
        );
        if self.queue_type == QueueType::Quorum {
            work_queue_arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            );
        }
        let work_queue_arguments = self.queue_type.dead_lettering(work_queue_arguments);
        let dead_letter_queue_arguments = self.queue_type.arguments(FieldTable::default());
        // The processor's work queue carries an order's creation and its cancellation: one queue,
        // so that a cancellation waits behind the creation it cancels.
        let mut queues = Vec::new();
        for (queue, dead_letter_queue, routing_keys) in [
            (
                &self.order_created_queue,
                &self.order_created_dead_letter_queue,
                &[routing_keys::ORDER_CREATED, routing_keys::ORDER_CANCELLED][..],
            ),
            (
                &self.order_processed_queue,
                &self.order_processed_dead_letter_queue,
                &[routing_keys::ORDER_PROCESSED][..],
            ),
        ] {
            let bound_to = |exchange: &String| {
                routing_keys
                    .iter()
                    .map(|&key| (exchange.clone(), key.to_owned()))
                    .collect()
            };
            queues.push(QueueDeclaration {
                name: queue.clone(),
                arguments: work_queue_arguments.clone(),
                bindings: bound_to(&self.exchange),
            });
            queues.push(QueueDeclaration {
                name: dead_letter_queue.clone(),
                arguments: dead_letter_queue_arguments.clone(),
                bindings: bound_to(&self.dead_letter_exchange),
            });
        }
        queues
    }

    /// The declarations of `work_queue` and of its dead-letter queue.
    pub fn queues_of(&self, work_queue: &str) -> Vec<QueueDeclaration> {
        let dead_letter_queue = if work_queue == self.order_created_queue {
            &self.order_created_dead_letter_queue
        } else {
            &self.order_processed_dead_letter_queue
        };
        self.queues()
            .into_iter()
            .filter(|queue| queue.name == work_queue || &queue.name == dead_letter_queue)
            .collect()
    }

    /// Removes everything `declare` made (tests clean up after themselves with this).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        for queue in [
            &self.order_created_queue,
            &self.order_processed_queue,
            &self.order_created_dead_letter_queue,
            &self.order_processed_dead_letter_queue,
        ] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [&self.exchange, &self.dead_letter_exchange] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// A durable queue as it is declared: its name, its arguments (which decide its kind) and the
/// bindings that route to it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDeclaration {
    pub name: String,
    pub arguments: FieldTable,
    /// `(exchange, routing key)` pairs.
    pub bindings: Vec<(String, String)>,
}

impl QueueDeclaration {
    /// Declares the queue (durable, with its arguments) and its bindings.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                self.arguments.clone(),
            )
            .await?;
        for (exchange, routing_key) in &self.bindings {
            channel
                .queue_bind(
                    self.name.as_str().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Whether the queue expires its messages into another one (a retry queue's `x-message-ttl`).
    pub fn expires_messages(&self) -> bool {
        self.arguments.inner().contains_key("x-message-ttl")
    }

    /// The queue kind's own argument (`x-queue-type`), without the others.
    pub fn kind_only(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if let Some(kind) = self.arguments.inner().get("x-queue-type") {
            arguments.insert("x-queue-type".into(), kind.clone());
        }
        arguments
    }
}

/// Messages ready (not held by a consumer) in `queue`, which must exist (a passive declare).
pub async fn ready_count(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    Ok(channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count())
}

/// Delayed redelivery without a plugin: one queue per delay, whose `x-message-ttl` expires the
/// message into the default exchange with the work queue's name as routing key, i.e. back to the
/// work queue. A queue per delay keeps every queue FIFO in expiry order.
///
/// ```text
/// work queue --(attempt n failed)--> {work queue}.retry.{delay}ms --(TTL)--> work queue
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryTiers {
    work_queue: String,
    /// The retry queues are of the work queue's kind: on quorum queues, a message waiting for
    /// its retry is replicated and dead-lettered back at least once.
    queue_type: QueueType,
    /// Delay after the failure of attempt i + 1.
    delays: Vec<std::time::Duration>,
}

impl RetryTiers {
    /// Delays growing from `initial` (doubling) to `max`, for `max_attempts - 1` retries.
    pub fn new(
        work_queue: &str,
        initial: std::time::Duration,
        max: std::time::Duration,
        max_attempts: u32,
    ) -> Self {
        let retries = max_attempts.saturating_sub(1).max(1);
        let delays = (0..retries)
            .map(|n| {
                let factor = 2u32.saturating_pow(n.min(31));
                initial.saturating_mul(factor).min(max)
            })
            .collect();
        Self {
            work_queue: work_queue.to_owned(),
            queue_type: QueueType::Quorum,
            delays,
        }
    }

    /// The same tiers, as queues of `queue_type`.
    pub fn of_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// How long a message waits after its attempt `attempt` (1-based) failed.
    pub fn delay_for(&self, attempt: u32) -> std::time::Duration {
        let index = (attempt.max(1) - 1) as usize;
        self.delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or_default()
    }

    fn queue_named(&self, delay: std::time::Duration) -> String {
        format!("{}.retry.{}ms", self.work_queue, delay.as_millis())
    }

    /// The retry queue for a message whose attempt `attempt` failed.
    pub fn queue_for(&self, attempt: u32) -> String {
        self.queue_named(self.delay_for(attempt))
    }

    /// Every retry queue, each once.
    pub fn queues(&self) -> Vec<String> {
        let mut names: Vec<String> = self.delays.iter().map(|d| self.queue_named(*d)).collect();
        names.dedup();
        names
    }

    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in self.declarations() {
            queue.declare(channel).await?;
        }
        Ok(())
    }

    /// The retry queues, as [`RetryTiers::declare`] declares them (no bindings: messages reach
    /// them through the default exchange).
    pub fn declarations(&self) -> Vec<QueueDeclaration> {
        let mut delays = self.delays.clone();
        delays.dedup();
        delays
            .into_iter()
            .map(|delay| {
                let mut arguments = FieldTable::default();
                arguments.insert(
                    "x-message-ttl".into(),
                    AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                );
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(LongString::from(&b""[..])),
                );
                arguments.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(LongString::from(self.work_queue.as_bytes())),
                );
                QueueDeclaration {
                    name: self.queue_named(delay),
                    arguments: self.queue_type.dead_lettering(arguments),
                    bindings: Vec::new(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_delays_double_from_the_initial_delay_up_to_the_maximum() {
        let tiers = RetryTiers::new("q", Duration::from_secs(1), Duration::from_secs(5), 6);
        let delays: Vec<_> = (1..=6).map(|n| tiers.delay_for(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5, 5]);
        assert_eq!(tiers.queue_for(1), "q.retry.1000ms");
        assert_eq!(
            tiers.queues(),
            [
                "q.retry.1000ms",
                "q.retry.2000ms",
                "q.retry.4000ms",
                "q.retry.5000ms"
            ]
        );
    }
}
