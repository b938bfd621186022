//! The consumer loop: the one place where a message's fate is decided.
//!
//! Every delivery is decoded here. A message without `message_id`, not JSON, of another
//! `event_type` or of an unknown `schema_version` is poison: it goes straight to the dead-letter
//! queue. A decoded event goes to the service's [`Handler`], and its [`Outcome`] is carried out here:
//!
//! | outcome | what happens |
//! | --- | --- |
//! | `Ack` | acknowledged |
//! | `DeadLetter` | published to the dead-letter exchange with the failure headers (confirmed), then acknowledged |
//! | `Retry` | the processing itself failed: while attempts remain, published to the retry queue of its delay tier (which routes it back to the work queue when its TTL expires) with `x-attempt` + 1, then acknowledged; after the last attempt, [`Handler::exhausted`] records the outcome and only then is the message dead-lettered |
//! | `Park` | not the message's fault (a dependency is unavailable, or failed transiently; see `crate::failure`): returned to the queue at no cost in attempts, and the consumer parks |
//! | `Panicked` | the handler panicked: the panic stays in this delivery, which is handled like one out of attempts (outcome recorded, then dead-lettered with the panic's message) |
//!
//! **Parking.** The consumer stops taking deliveries; those in flight finish (one that committed
//! is acknowledged, one that meets the outage goes back), and closing the channel returns the
//! prefetched rest, each once per outage; then it probes its dependencies ([`Handler::ready`]) with
//! backoff, taking no message, and consumes again when they answer. Parks in a row without a
//! delivery settled in between wait longer each time before the first probe, so a dependency that
//! answers the probe but still fails the work (a statement timeout) is not a hot loop.
//!
//! Up to `prefetch` deliveries are handled concurrently. When the channel or connection breaks, the
//! loop reconnects with backoff; on shutdown it stops taking deliveries, lets the ones in flight
//! finish, and closes its channel so that prefetched but unhandled ones return to the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt, TryStreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::Broker;
use crate::events::{DecodeError, Envelope, Event};
use crate::failure::{Classify, FailureClass};
use crate::headers::{self, Headers};
use crate::meter::{ConsumerMetrics, Fate};
use crate::shutdown::{reconnect_backoff, sleep_unless_cancelled};
use crate::topology::RetryTiers;
use crate::trace::{self, TraceContext};

/// What becomes of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or a duplicate of something done): remove it from the queue.
    Ack,
    /// It can never succeed: move it to the dead-letter queue now.
    DeadLetter { reason: String },
    /// It failed transiently: try again later, and dead-letter it after the last attempt.
    Retry { reason: String },
    /// It failed for a reason outside the message: put it back and park the consumer.
    Park { reason: String },
    /// The handler panicked (set by the loop, which contains the panic; a handler does not
    /// return it): handled like a message out of attempts, with the panic's message as reason.
    Panicked { reason: String },
}

impl Outcome {
    /// The outcome of a failure of a dependency (the database, the broker) met while handling a
    /// delivery: unavailable or transient parks at no cost in attempts; a real error costs one.
    pub fn from_failure<E: Classify + std::fmt::Display>(error: &E) -> Self {
        match error.class() {
            FailureClass::Unavailable | FailureClass::Transient => Self::Park {
                reason: error.to_string(),
            },
            FailureClass::Error => Self::Retry {
                reason: error.to_string(),
            },
        }
    }
}

/// What recording the outcome of a message that ran out of attempts did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The failure is recorded (and announced): the message may go to the dead-letter queue.
    Recorded,
    /// Another delivery decided the order meanwhile: nothing failed, the message is acknowledged.
    DecidedOtherwise,
}

/// A decoded delivery, with where it stands in its attempts.
#[derive(Clone, Debug)]
pub struct Delivered<E> {
    pub envelope: Envelope<E>,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// An operator replayed it from the dead-letter queue.
    pub replayed: bool,
}

/// A service's handling of one event type.
pub trait Handler: Send + Sync + 'static {
    type Event: Event;

    fn handle(&self, delivery: &Delivered<Self::Event>) -> impl Future<Output = Outcome> + Send;

    /// Called after the last attempt, before the message is dead-lettered: records the message's
    /// outcome (the order failed, and its announcement). An error returns the message to the queue
    /// and parks the consumer: nothing is dead-lettered whose outcome is not recorded.
    fn exhausted(
        &self,
        _envelope: &Envelope<Self::Event>,
        _reason: &str,
        _attempts: u32,
    ) -> impl Future<Output = Result<Exhausted, String>> + Send {
        async { Ok(Exhausted::Recorded) }
    }

    /// Whether the handler's own dependencies answer; probed while the consumer is parked.
    fn ready(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
}

/// How a consumer retries: attempts are broker deliveries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
    pub tiers: RetryTiers,
}

/// A place in the handling of a delivery where a test can make the consumer stop as a crashed
/// process would: the delivery is left unsettled, the channel closes (so the broker returns it
/// and every other unacknowledged delivery to the queue), and the consumer consumes again, as a
/// restarted process would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPoint {
    /// After the outcome of a message out of attempts is committed, before it is dead-lettered.
    AfterFailureRecorded,
    /// After the broker confirmed the dead letter, before the delivery is acknowledged.
    AfterDeadLettered,
}

/// A [`CrashPoint`] armed to fire once (for tests and demos); unarmed by default.
#[derive(Clone, Debug, Default)]
pub struct CrashFault {
    point: Option<CrashPoint>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl CrashFault {
    pub fn once_at(point: Option<CrashPoint>) -> Self {
        Self {
            point,
            fired: Arc::default(),
        }
    }

    /// Whether to crash here: at the armed point, the first time only.
    fn fires_at(&self, point: CrashPoint) -> bool {
        self.point == Some(point) && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where and how to consume.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub queue: String,
    pub prefetch: u16,
    /// Exchange that routes dead letters to the dead-letter queue (by the original routing key).
    pub dead_letter_exchange: String,
    /// A key the dead-letter exchange routes to the dead-letter queue: a dead letter whose own
    /// key it does not route (a message put into the queue through the default exchange, a
    /// forged `x-original-routing-key`) goes under this one instead of coming back forever.
    pub dead_letter_routing_key: String,
    pub retry: RetryPolicy,
    /// The longest wait for the broker's confirm of a dead letter or a retry; past it the
    /// delivery goes back to the queue and the consumer parks.
    pub confirm_timeout: Duration,
    /// A crash to inject (tests); none by default.
    pub crash: CrashFault,
    /// Where the consumer counts its deliveries.
    pub metrics: ConsumerMetrics,
}

#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("parked: {0}")]
    Parked(String),
}

/// The first wait of a park before probing; doubled for each park in a row, up to [`MAX_PARK`].
const FIRST_PARK: Duration = Duration::from_millis(100);
const MAX_PARK: Duration = Duration::from_secs(10);

/// Consumes until `shutdown` trips, reconnecting whenever the broker goes away and pausing while
/// the handler's dependencies are down.
pub async fn run<H: Handler>(
    broker: Arc<Broker>,
    settings: ConsumerSettings,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    // Parks in a row with no delivery settled in between.
    let mut parks_in_a_row = 0u32;
    let progressed = std::sync::atomic::AtomicBool::new(false);
    while !shutdown.is_cancelled() {
        progressed.store(false, std::sync::atomic::Ordering::Relaxed);
        let result = consume(&broker, &settings, &handler, &shutdown, &progressed).await;
        if progressed.load(std::sync::atomic::Ordering::Relaxed) {
            parks_in_a_row = 0;
        }
        match result {
            Ok(()) if shutdown.is_cancelled() => break,
            Ok(()) => {
                tracing::warn!(queue = %settings.queue, "consumer stream ended; consuming again");
            }
            Err(Stop::Parked(reason)) => {
                let first = FIRST_PARK
                    .saturating_mul(1 << parks_in_a_row.min(10))
                    .min(MAX_PARK);
                parks_in_a_row = parks_in_a_row.saturating_add(1);
                tracing::warn!(
                    queue = %settings.queue,
                    %reason,
                    "consumer parked: deliveries returned to the queue; probing its dependencies"
                );
                if !sleep_unless_cancelled(first, &shutdown).await {
                    break;
                }
                let mut wait = reconnect_backoff();
                while !shutdown.is_cancelled() && !handler.ready().await {
                    let delay = wait.next().unwrap_or(Duration::from_secs(10));
                    if !sleep_unless_cancelled(delay, &shutdown).await {
                        break;
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::info!(queue = %settings.queue, "dependencies answer again; consumer resumes");
                continue;
            }
            Err(Stop::Broker(error)) => {
                tracing::warn!(queue = %settings.queue, %error, "consumer lost its channel; reconnecting");
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
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
    progressed: &std::sync::atomic::AtomicBool,
) -> Result<(), Stop> {
    let connection = broker.connection().await?;
    let channel = connection.create_channel().await?;
    // Dead letters and retries are published on a channel of their own, with confirms.
    let side = connection.create_channel().await?;
    side.confirm_select(ConfirmSelectOptions::default()).await?;
    settings.retry.tiers.declare(&channel).await?;
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
    settings.metrics.consuming.set(1.0);
    let side = &side;
    let (settled, acks) = mpsc::unbounded_channel();
    let acker = tokio::spawn(acknowledge_in_batches(channel.clone(), acks));
    let settled = &settled;
    // Parking stops taking deliveries; those in flight finish (a committed one is acknowledged,
    // one that meets the outage goes back), and the rest return when the channel closes.
    let parked = CancellationToken::new();
    let park_reason = std::sync::Mutex::new(None::<String>);
    let (parked_ref, park_reason_ref) = (&parked, &park_reason);
    let result = consumer
        .take_until(shutdown.clone().cancelled_owned())
        .take_until(parked.clone().cancelled_owned())
        .map_err(Stop::from)
        .try_for_each_concurrent(usize::from(settings.prefetch), |delivery| {
            let handler = handler.clone();
            async move {
                match settle(&*handler, settings, side, settled, delivery).await {
                    Ok(()) => progressed.store(true, std::sync::atomic::Ordering::Relaxed),
                    Err(reason) => {
                        if let Ok(mut first) = park_reason_ref.lock() {
                            first.get_or_insert(reason);
                        }
                        parked_ref.cancel();
                    }
                }
                Ok(())
            }
        })
        .await;
    let result = match park_reason.lock().ok().and_then(|mut reason| reason.take()) {
        Some(reason) => Err(Stop::Parked(reason)),
        None => result,
    };
    settings.metrics.consuming.set(0.0);
    // What was settled is acknowledged before the channel closes.
    let _ = settled.send(Settled::Flush);
    let _ = acker.await;
    for channel in [&channel, side] {
        if channel.status().connected() {
            // Unacknowledged deliveries return to the queue when the channel closes.
            let _ = channel.close(200, "OK".into()).await;
        }
    }
    result
}

async fn settle<H: Handler>(
    handler: &H,
    settings: &ConsumerSettings,
    side: &Channel,
    settled: &mpsc::UnboundedSender<Settled>,
    delivery: Delivery,
) -> Result<(), String> {
    let tag = delivery.delivery_tag;
    let headers = Headers::from_table(delivery.properties.headers().as_ref());
    let attempt = headers.attempt();
    // The trace of the publisher's span, if the message carries a valid one.
    let span = tracing::info_span!(
        parent: None,
        "handle delivery",
        otel.name = %format_args!("{} process", settings.queue),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %settings.queue,
        queue = %settings.queue,
        event_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        attempt,
        redelivered = delivery.redelivered,
    );
    trace::continue_from(
        &span,
        TraceContext::parse(
            headers.str(trace::TRACEPARENT),
            headers.str(trace::TRACESTATE),
        )
        .as_ref(),
    );
    let started = std::time::Instant::now();
    let mut fate = Fate::Returned;
    let fate_ref = &mut fate;
    let result = async {
        let (outcome, envelope) = decide(handler, &delivery, &headers, attempt).await;
        *fate_ref = match (&outcome, &envelope) {
            (Outcome::Ack, _) => Fate::Acknowledged,
            (Outcome::DeadLetter { .. }, None) => Fate::Poison,
            (Outcome::Retry { .. }, Some(_)) if attempt < settings.retry.max_attempts => {
                Fate::Retried
            }
            (Outcome::DeadLetter { .. } | Outcome::Retry { .. } | Outcome::Panicked { .. }, Some(_)) => {
                Fate::DeadLettered
            }
            _ => Fate::Returned,
        };
        let result = match outcome {
            Outcome::Ack => {
                // Acknowledged in a batch, with `multiple`, by the acker.
                let _ = settled.send(Settled::Ack(tag));
                return Ok(());
            }
            Outcome::DeadLetter { reason } => {
                let poison = envelope.is_none();
                dead_letter(
                    settings,
                    side,
                    settled,
                    &delivery,
                    headers,
                    &reason,
                    attempt,
                    poison,
                    envelope.as_ref().map(|e| e.correlation_id),
                )
                .await?
            }
            Outcome::Retry { reason } => {
                let Some(envelope) = envelope else {
                    // Only a decoded message is retried; anything else was poison.
                    return Err(park(&delivery, settled, reason).await);
                };
                let retry = &settings.retry;
                if attempt < retry.max_attempts {
                    let queue = retry.tiers.queue_for(attempt);
                    tracing::warn!(
                        event_id = ?message_id(&delivery),
                        order_id = %envelope.correlation_id,
                        %reason,
                        retry_queue = %queue,
                        "attempt failed; retrying later"
                    );
                    let mut next = failure_headers(headers, &delivery, &reason);
                    next.set_int(headers::ATTEMPT, i64::from(attempt) + 1);
                    match publish(settings.confirm_timeout, side, "", &queue, &delivery, next).await {
                        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                        Err(error) => {
                            let reason = format!("cannot schedule the retry: {error}");
                            return Err(park(&delivery, settled, reason).await);
                        }
                    }
                } else {
                    let reason = format!("gave up after {attempt} attempts: {reason}");
                    let failed = Failed {
                        envelope: &envelope,
                        reason: &reason,
                        attempt,
                    };
                    match fail_for_good(handler, settings, side, settled, &delivery, headers, failed)
                        .await?
                    {
                        Some(acked) => acked,
                        None => return Ok(()),
                    }
                }
            }
            Outcome::Park { reason } => return Err(park(&delivery, settled, reason).await),
            Outcome::Panicked { reason } => {
                let Some(envelope) = envelope else {
                    // Only a decoded message reaches the handler.
                    return Err(park(&delivery, settled, reason).await);
                };
                let failed = Failed {
                    envelope: &envelope,
                    reason: &reason,
                    attempt,
                };
                match fail_for_good(handler, settings, side, settled, &delivery, headers, failed)
                    .await?
                {
                    Some(acked) => acked,
                    None => return Ok(()),
                }
            }
        };
        let _ = settled.send(Settled::Done(tag));
        if let Err(error) = result {
            // The channel is gone: the broker redelivers the message, and handlers are idempotent.
            tracing::warn!(event_id = ?message_id(&delivery), %error, "could not settle delivery; it will be redelivered");
        }
        Ok(())
    }
    .instrument(span)
    .await;
    // A delivery that parked the consumer went back to the queue, whatever it was headed for.
    let fate = if result.is_err() {
        Fate::Returned
    } else {
        fate
    };
    settings.metrics.finished(fate, started.elapsed());
    result
}

/// The AMQP `message_id` of a delivery (the event id).
pub fn message_id(delivery: &Delivery) -> Option<String> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
}

/// A delivery the loop is done with.
#[derive(Debug)]
enum Settled {
    /// To be acknowledged (in a batch).
    Ack(u64),
    /// Already acknowledged, rejected or requeued on its own.
    Done(u64),
    /// Acknowledge what can be, then stop.
    Flush,
}

/// Acknowledges settled deliveries with `multiple`, as few frames as possible: delivery tags on a
/// channel run 1, 2, 3, ...; once every tag up to T is settled, one `basic.ack(T', multiple)`
/// covers them, T' being the highest of them to acknowledge (the others were settled on their
/// own). It acknowledges as soon as nothing more is waiting, so a lone delivery is not delayed.
async fn acknowledge_in_batches(channel: Channel, mut settled: mpsc::UnboundedReceiver<Settled>) {
    let mut done: std::collections::BTreeMap<u64, bool> = std::collections::BTreeMap::new();
    let mut contiguous = 0u64;
    let mut to_ack: Option<u64> = None;
    let mut stop = false;
    while !stop {
        let Some(first) = settled.recv().await else {
            break;
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Settled::Ack(tag) => {
                    done.insert(tag, true);
                }
                Settled::Done(tag) => {
                    done.insert(tag, false);
                }
                Settled::Flush => stop = true,
            }
            next = settled.try_recv().ok();
        }
        while let Some(ack) = done.remove(&(contiguous + 1)) {
            contiguous += 1;
            if ack {
                to_ack = Some(contiguous);
            }
        }
        if let Some(tag) = to_ack.take()
            && let Err(error) = channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
        {
            tracing::warn!(%error, "could not acknowledge; the broker redelivers, handlers are idempotent");
        }
    }
}

/// Decodes and hands the event to the handler; the envelope is `None` for poison.
async fn decide<H: Handler>(
    handler: &H,
    delivery: &Delivery,
    headers: &Headers,
    attempt: u32,
) -> (Outcome, Option<Envelope<H::Event>>) {
    let poison = |reason: String| (Outcome::DeadLetter { reason }, None);
    let Some(message_id) = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
    else {
        return poison("message has no message_id".into());
    };
    let envelope = match Envelope::<H::Event>::decode(&delivery.data) {
        Ok(envelope) => envelope,
        Err(error) => return poison(error.to_string()),
    };
    let span = tracing::Span::current();
    span.record("event_id", tracing::field::display(envelope.event_id));
    span.record("order_id", tracing::field::display(envelope.correlation_id));
    if message_id != envelope.event_id.to_string() {
        return poison(
            DecodeError::MessageIdMismatch {
                message_id,
                event_id: envelope.event_id,
            }
            .to_string(),
        );
    }
    // The order id is in the envelope and in the payload; a message where they differ is about
    // no one order, and is dead-lettered (under the envelope's) before any handler sees it.
    if envelope.payload.order_id() != envelope.correlation_id {
        let reason = format!(
            "payload order_id {} differs from correlation_id {}",
            envelope.payload.order_id(),
            envelope.correlation_id
        );
        return (Outcome::DeadLetter { reason }, Some(envelope));
    }
    let delivered = Delivered {
        envelope,
        attempt,
        replayed: headers.str(headers::REPLAYED_AT).is_some(),
    };
    // A panic in one delivery's handling stays in it: the others in flight go on, and the
    // consumer with them.
    let outcome = match std::panic::AssertUnwindSafe(handler.handle(&delivered))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(%message, "handling a delivery panicked; it is dead-lettered");
            Outcome::Panicked {
                reason: format!("handling panicked: {message}"),
            }
        }
    };
    (outcome, Some(delivered.envelope))
}

/// A decoded message that will never succeed, and why.
struct Failed<'a, E> {
    envelope: &'a Envelope<E>,
    reason: &'a str,
    attempt: u32,
}

/// Records the outcome of a message that will never succeed ([`Handler::exhausted`]: the order
/// fails, and is announced) and only then dead-letters it. `None` when another delivery decided
/// the order meanwhile (acknowledged); the outer error parks (the outcome could not be recorded).
async fn fail_for_good<H: Handler>(
    handler: &H,
    settings: &ConsumerSettings,
    side: &Channel,
    settled: &mpsc::UnboundedSender<Settled>,
    delivery: &Delivery,
    headers: Headers,
    failed: Failed<'_, H::Event>,
) -> Result<Option<Result<bool, lapin::Error>>, String> {
    let Failed {
        envelope,
        reason,
        attempt,
    } = failed;
    match handler.exhausted(envelope, reason, attempt).await {
        Ok(Exhausted::Recorded) => {
            if settings.crash.fires_at(CrashPoint::AfterFailureRecorded) {
                return Err(crash(CrashPoint::AfterFailureRecorded));
            }
            let acked = dead_letter(
                settings,
                side,
                settled,
                delivery,
                headers,
                reason,
                attempt,
                false,
                Some(envelope.correlation_id),
            )
            .await?;
            Ok(Some(acked))
        }
        Ok(Exhausted::DecidedOtherwise) => {
            let _ = settled.send(Settled::Ack(delivery.delivery_tag));
            Ok(None)
        }
        Err(error) => {
            let reason = format!("cannot record the failure: {error}");
            Err(park(delivery, settled, reason).await)
        }
    }
}

/// The headers of a message that failed: reason, first and last failure, original routing key.
fn failure_headers(mut headers: Headers, delivery: &Delivery, reason: &str) -> Headers {
    let now = headers::now_rfc3339();
    if headers.str(headers::FIRST_FAILED_AT).is_none() {
        headers.set_str(headers::FIRST_FAILED_AT, now.clone());
    }
    if headers.str(headers::ORIGINAL_ROUTING_KEY).is_none() {
        headers.set_str(
            headers::ORIGINAL_ROUTING_KEY,
            delivery.routing_key.to_string(),
        );
    }
    headers
        .set_str(headers::LAST_FAILED_AT, now)
        .set_str(headers::FAILURE_REASON, reason);
    headers
}

/// Publishes `delivery` to the dead-letter exchange with the failure headers and, once the broker
/// confirmed it, acknowledges it (the acknowledgement's own result inside). A dead letter the
/// broker did not take returns the delivery and parks the consumer (the outer error).
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    settings: &ConsumerSettings,
    side: &Channel,
    settled: &mpsc::UnboundedSender<Settled>,
    delivery: &Delivery,
    headers: Headers,
    reason: &str,
    attempt: u32,
    poison: bool,
    order_id: Option<uuid::Uuid>,
) -> Result<Result<bool, lapin::Error>, String> {
    tracing::warn!(
        event_id = ?message_id(delivery),
        order_id = ?order_id,
        %reason,
        poison,
        "dead-lettering message"
    );
    let mut headers = failure_headers(headers, delivery, reason);
    headers.set_int(headers::ATTEMPTS, i64::from(attempt));
    headers.remove(headers::ATTEMPT);
    if poison {
        headers.set_bool(headers::POISON, true);
    }
    if let Some(order_id) = order_id {
        headers.set_str(headers::ORDER_ID, order_id.to_string());
    }
    let routing_key = headers
        .str(headers::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.to_string());
    let mut published = publish(
        settings.confirm_timeout,
        side,
        &settings.dead_letter_exchange,
        &routing_key,
        delivery,
        headers.clone(),
    )
    .await;
    if matches!(published, Err(crate::broker::PublishError::Returned(_)))
        && routing_key != settings.dead_letter_routing_key
    {
        tracing::warn!(
            event_id = ?message_id(delivery),
            %routing_key,
            fallback = %settings.dead_letter_routing_key,
            "the dead-letter exchange routes no queue for this key; dead-lettered under the queue's own"
        );
        published = publish(
            settings.confirm_timeout,
            side,
            &settings.dead_letter_exchange,
            &settings.dead_letter_routing_key,
            delivery,
            headers,
        )
        .await;
    }
    match published {
        Ok(()) if settings.crash.fires_at(CrashPoint::AfterDeadLettered) => {
            Err(crash(CrashPoint::AfterDeadLettered))
        }
        Ok(()) => Ok(delivery.ack(BasicAckOptions::default()).await),
        Err(error) => {
            let reason = format!("cannot dead-letter: {error}");
            Err(park(delivery, settled, reason).await)
        }
    }
}

/// An injected crash: the delivery stays unsettled (the acknowledgements after it wait with it),
/// and the consumer stops and closes its channel.
fn crash(point: CrashPoint) -> String {
    tracing::error!(?point, "injected crash: the delivery is left unsettled");
    format!("injected crash at {point:?}")
}

/// Returns `delivery` to its queue at no cost in attempts; gives back `reason`, for the consumer
/// to park on (it returns the other deliveries in flight when it closes its channel).
async fn park(
    delivery: &Delivery,
    settled: &mpsc::UnboundedSender<Settled>,
    reason: String,
) -> String {
    tracing::warn!(event_id = ?message_id(delivery), %reason, "returning message to its queue");
    let result = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(event_id = ?message_id(delivery), %error, "could not return it; the broker redelivers it when the channel closes");
    }
    let _ = settled.send(Settled::Done(delivery.delivery_tag));
    reason
}

/// Publishes a copy of `delivery` with `headers` and waits for the broker's confirm, `timeout`
/// at most ([`crate::broker::republish`]).
async fn publish(
    timeout: Duration,
    side: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    headers: Headers,
) -> Result<(), crate::broker::PublishError> {
    crate::broker::republish(
        side,
        exchange,
        routing_key,
        delivery,
        headers.into_table(),
        timeout,
    )
    .await
}
