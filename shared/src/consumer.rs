//! The consumer loop: the one place where a message's fate is decided.
//!
//! Every delivery is decoded here (a message without `message_id`, not JSON, of another
//! `event_type` or an unknown `schema_version` is poison and is dead-lettered at once), then given
//! to the service's [`Handler`], whose [`Outcome`] is applied here: ack, dead-letter, or requeue.
//! Up to `prefetch` deliveries are handled concurrently. When the channel or connection breaks, the
//! loop reconnects with backoff; on shutdown it stops taking deliveries, lets the ones in flight
//! finish, and closes its channel so that prefetched but unhandled ones return to the queue.

use std::future::Future;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::events::{Envelope, Event};
use crate::shutdown::{reconnect_backoff, sleep_unless_cancelled};

/// What becomes of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or a duplicate of something done): remove it from the queue.
    Ack,
    /// It can never succeed: move it to the dead-letter queue.
    DeadLetter { reason: String },
    /// It failed for a reason outside the message (the database is down): put it back.
    Requeue { reason: String },
}

/// A service's handling of one event type.
pub trait Handler: Send + Sync + 'static {
    type Event: Event;

    fn handle(&self, envelope: Envelope<Self::Event>) -> impl Future<Output = Outcome> + Send;
}

/// Where and how to consume.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub queue: String,
    pub prefetch: u16,
    /// Pause before a requeued delivery goes back, so that an outage is not a hot loop.
    pub requeue_delay: std::time::Duration,
}

/// Consumes until `shutdown` trips, reconnecting whenever the broker goes away.
pub async fn run<H: Handler>(
    broker: Arc<Broker>,
    settings: ConsumerSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    while !shutdown.is_cancelled() {
        match consume(&broker, &settings, &handler, &shutdown).await {
            Ok(()) if shutdown.is_cancelled() => break,
            Ok(()) => {
                tracing::warn!(queue = %settings.queue, "consumer stream ended; consuming again");
            }
            Err(error) => {
                tracing::warn!(queue = %settings.queue, %error, "consumer lost its channel; reconnecting");
                let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(10));
                if !sleep_unless_cancelled(delay, &shutdown).await {
                    break;
                }
                continue;
            }
        }
        backoff = reconnect_backoff();
    }
    tracing::info!(queue = %settings.queue, "consumer stopped");
}

async fn consume<H: Handler>(
    broker: &Broker,
    settings: &ConsumerSettings,
    handler: &Arc<H>,
    shutdown: &CancellationToken,
) -> Result<(), lapin::Error> {
    let connection = broker.connection().await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            settings.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %settings.queue, prefetch = settings.prefetch, "consuming");
    let result = consumer
        .take_until(shutdown.clone().cancelled_owned())
        .try_for_each_concurrent(usize::from(settings.prefetch), |delivery| {
            let handler = handler.clone();
            let settings = settings.clone();
            async move {
                settle(&*handler, &settings, delivery).await;
                Ok(())
            }
        })
        .await;
    if channel.status().connected() {
        // Unacknowledged deliveries return to the queue when the channel closes.
        let _ = channel.close(200, "OK".into()).await;
    }
    result
}

async fn settle<H: Handler>(handler: &H, settings: &ConsumerSettings, delivery: Delivery) {
    let span = tracing::info_span!(
        "handle delivery",
        queue = %settings.queue,
        event_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        redelivered = delivery.redelivered,
    );
    async {
        let outcome = decide(handler, &delivery).await;
        let result = match &outcome {
            Outcome::Ack => delivery.ack(BasicAckOptions::default()).await,
            Outcome::DeadLetter { reason } => {
                tracing::warn!(%reason, "dead-lettering message");
                delivery.reject(BasicRejectOptions { requeue: false }).await
            }
            Outcome::Requeue { reason } => {
                tracing::warn!(%reason, "requeueing message");
                tokio::time::sleep(settings.requeue_delay).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
            }
        };
        if let Err(error) = result {
            // The channel is gone: the broker redelivers the message, and handlers are idempotent.
            tracing::warn!(%error, ?outcome, "could not settle delivery; it will be redelivered");
        }
    }
    .instrument(span)
    .await
}

async fn decide<H: Handler>(handler: &H, delivery: &Delivery) -> Outcome {
    let Some(message_id) = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
    else {
        return Outcome::DeadLetter {
            reason: "message has no message_id".into(),
        };
    };
    let envelope = match Envelope::<H::Event>::decode(&delivery.data) {
        Ok(envelope) => envelope,
        Err(error) => {
            return Outcome::DeadLetter {
                reason: error.to_string(),
            };
        }
    };
    let span = tracing::Span::current();
    span.record("event_id", tracing::field::display(envelope.event_id));
    span.record("order_id", tracing::field::display(envelope.correlation_id));
    if message_id != envelope.event_id.to_string() {
        return Outcome::DeadLetter {
            reason: crate::events::DecodeError::MessageIdMismatch {
                message_id,
                event_id: envelope.event_id,
            }
            .to_string(),
        };
    }
    handler.handle(envelope).await
}
