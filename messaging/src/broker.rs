//! The broker connection, re-established on demand, and publishing with publisher confirms.
//!
//! Nothing here gives up on the broker: [`Broker::connection`] connects (and declares the topology)
//! when there is no live connection, and the consumer loop and the outbox relay call it again, with
//! backoff, whenever theirs breaks. A service therefore starts, serves HTTP and reports not-ready
//! while RabbitMQ is away, and resumes by itself when it returns.
//!
//! A broker that stops answering without closing its connection (a frozen node, a partition) is
//! noticed by heartbeats (`AMQP__HEARTBEAT_SECONDS`): lapin closes the connection after two missed
//! ones, and the next caller connects again. One that blocks its publishers (a memory or disk
//! alarm: `connection.blocked`) is remembered until it unblocks them, for readiness to say so;
//! publishers wait for confirms no longer than their timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use uuid::Uuid;

use crate::settings::Secret;
use crate::topology::Topology;
use crate::trace::{self, Batch, TraceContext};

/// Longest wait for a TCP + AMQP handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

pub struct Broker {
    /// The brokers, tried in turn from `preferred` (a cluster's nodes; one for a single broker).
    urls: Vec<Secret>,
    /// The one that answered last, tried first at the next connection.
    preferred: std::sync::atomic::AtomicUsize,
    /// The CA and client certificate of `amqps://` connections.
    tls: lapin::tcp::OwnedTLSConfig,
    topology: Topology,
    connection_name: String,
    current: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Why the last attempt to connect failed, as [`crate::disclose::broker`] tells it; cleared by
    /// the next that succeeds.
    last_error: Mutex<Option<String>>,
    /// Heartbeat interval asked of the broker; 0: none.
    heartbeat_seconds: u16,
    /// Why the broker blocks this connection's publishers, while it does.
    blocked: Arc<Mutex<Option<String>>>,
    /// Whether each new connection declares [`Broker::topology`] first.
    declares_topology: bool,
    /// Connections made so far (the first, then each reconnection).
    connections_made: std::sync::atomic::AtomicU64,
}

impl Broker {
    pub fn new(
        urls: Vec<Secret>,
        topology: Topology,
        connection_name: impl Into<String>,
        heartbeat_seconds: u16,
    ) -> Arc<Self> {
        Self::with_tls(
            urls,
            topology,
            connection_name,
            heartbeat_seconds,
            lapin::tcp::OwnedTLSConfig::default(),
        )
    }

    /// [`Broker::new`], with the CA and client certificate of `amqps://` connections.
    pub fn with_tls(
        urls: Vec<Secret>,
        topology: Topology,
        connection_name: impl Into<String>,
        heartbeat_seconds: u16,
        tls: lapin::tcp::OwnedTLSConfig,
    ) -> Arc<Self> {
        Self::build(
            urls,
            topology,
            connection_name.into(),
            heartbeat_seconds,
            tls,
            true,
        )
    }

    fn build(
        urls: Vec<Secret>,
        topology: Topology,
        connection_name: String,
        heartbeat_seconds: u16,
        tls: lapin::tcp::OwnedTLSConfig,
        declares_topology: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            declares_topology,
            tls,
            urls,
            preferred: std::sync::atomic::AtomicUsize::new(0),
            topology,
            connection_name,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            heartbeat_seconds,
            blocked: Arc::new(Mutex::new(None)),
            connections_made: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// [`Broker::with_tls`] whose connections declare nothing: for [`crate::migrate`], which
    /// replaces the queues whose declaration the broker refuses.
    pub fn declaring_nothing(
        urls: Vec<Secret>,
        connection_name: impl Into<String>,
        heartbeat_seconds: u16,
        tls: lapin::tcp::OwnedTLSConfig,
    ) -> Arc<Self> {
        Self::build(
            urls,
            Topology::default(),
            connection_name.into(),
            heartbeat_seconds,
            tls,
            false,
        )
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().ok()?;
        current
            .as_ref()
            .filter(|connection| connection.status().connected())
            .cloned()
    }

    /// The live connection; connects and declares the topology first if there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        // One connection attempt at a time; whoever waited here reuses the winner's connection.
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let count = self.urls.len().max(1);
        let first = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        let mut failed = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(url) = self.urls.get(index) else {
                break;
            };
            match self.connect(url).await {
                Ok(connection) => {
                    self.preferred
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(mut last_error) = self.last_error.lock() {
                        *last_error = None;
                    }
                    return Ok(connection);
                }
                Err(error) => {
                    let disclosed = crate::disclose::broker(&error, url.expose());
                    if count > 1 {
                        tracing::warn!(connection = %self.connection_name, broker = index + 1, error = %disclosed, "a broker did not take the connection; trying the next");
                    }
                    if let Ok(mut last_error) = self.last_error.lock() {
                        *last_error = Some(disclosed);
                    }
                    failed = Some(error);
                }
            }
        }
        Err(failed.unwrap_or_else(|| {
            lapin::Error::from(std::io::Error::other("no broker address is configured"))
        }))
    }

    /// The address connected to last (or tried first next), for scrubbing what the broker says.
    fn address(&self) -> &str {
        let index = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        self.urls.get(index).map_or("", |url| url.expose())
    }

    /// A new connection to `url`, with the topology declared on it.
    async fn connect(&self, url: &Secret) -> Result<Arc<Connection>, lapin::Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(self.connection_name.as_bytes()));
        let mut uri: lapin::uri::AMQPUri = url
            .expose()
            .parse()
            .map_err(|error: String| lapin::Error::from(std::io::Error::other(error)))?;
        uri.query.heartbeat = Some(self.heartbeat_seconds);
        // An unreachable host would otherwise hold every caller for the TCP timeout.
        let runtime = lapin::runtime::default_runtime()?;
        let connection = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri_with_config(uri, properties, self.tls.clone(), runtime),
        )
        .await
        .map_err(|_| {
            lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to RabbitMQ timed out",
            ))
        })??;
        self.watch_blocked(&connection);
        if self.declares_topology {
            let channel = connection.create_channel().await?;
            self.topology.declare(&channel).await?;
            channel.close(200, "OK".into()).await?;
            tracing::info!(connection = %self.connection_name, "connected to RabbitMQ, topology declared");
        }
        let connection = Arc::new(connection);
        self.connections_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut current) = self.current.lock() {
            *current = Some(connection.clone());
        }
        Ok(connection)
    }

    /// Remembers `connection.blocked` and forgets it at `connection.unblocked` (or when the
    /// connection goes).
    fn watch_blocked(&self, connection: &Connection) {
        let blocked = self.blocked.clone();
        if let Ok(mut reason) = blocked.lock() {
            *reason = None;
        }
        let mut events = connection.events_listener();
        let name = self.connection_name.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let update = match event {
                    lapin::Event::ConnectionBlocked(reason) => {
                        tracing::warn!(connection = %name, %reason, "the broker blocks publishing (connection.blocked)");
                        Some(Some(reason))
                    }
                    lapin::Event::ConnectionUnblocked => {
                        tracing::info!(connection = %name, "the broker unblocked publishing");
                        Some(None)
                    }
                    _ => None,
                };
                if let (Some(update), Ok(mut reason)) = (update, blocked.lock()) {
                    *reason = update;
                }
            }
        });
    }

    /// Whether the service holds a live connection now (never connects).
    pub fn is_connected(&self) -> bool {
        self.live().is_some()
    }

    /// Connections made so far, with their topology declared: the first, then each reconnection.
    pub fn connections_made(&self) -> u64 {
        self.connections_made
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the broker blocks publishing on this connection (a resource alarm), while it does.
    pub fn blocked(&self) -> Option<String> {
        self.live()?;
        self.blocked.lock().ok().and_then(|reason| reason.clone())
    }

    /// For readiness: the broker answers now (a channel opened and closed on the live connection
    /// within `timeout`: a round trip, which a frozen broker does not make) and does not block
    /// publishing. Never connects. The error says what is wrong.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let Some(connection) = self.live() else {
            return Err(match self.last_error() {
                Some(error) => format!("not connected: {error}"),
                None => "not connected".to_owned(),
            });
        };
        if let Some(reason) = self.blocked() {
            let reason = crate::disclose::scrub(&reason, self.address());
            return Err(format!("connection.blocked: {reason}"));
        }
        let answered = tokio::time::timeout(timeout, async {
            let channel = connection.create_channel().await?;
            channel.close(200, "OK".into()).await
        })
        .await;
        match answered {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::warn!(%error, "the broker refused a channel to the readiness probe");
                Err(crate::disclose::broker(&error, self.address()))
            }
            Err(_) => Err(format!(
                "no answer within {} ms (connected, but the broker does not respond)",
                timeout.as_millis()
            )),
        }
    }

    /// Why the last attempt to connect (or to declare the topology) failed, if it did, without
    /// credentials or host names ([`crate::disclose`]).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|error| error.clone())
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        let connection = self.current.lock().ok().and_then(|mut c| c.take());
        if let Some(connection) = connection
            && connection.status().connected()
            && let Err(error) = connection.close(200, "shutting down".into()).await
        {
            tracing::warn!(%error, "closing the broker connection failed");
        }
    }
}

/// A message ready for the wire: the body is encoded once, when the event is written.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    pub event_id: Uuid,
    pub event_type: String,
    pub routing_key: String,
    pub correlation_id: Option<Uuid>,
    pub body: Vec<u8>,
    /// The context of the span that wrote the event, which its `publish` span continues.
    pub trace: Option<TraceContext>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker returned the message as unroutable: {0}")]
    Returned(String),
    #[error("no confirm within {0} ms")]
    TimedOut(u128),
    #[error(transparent)]
    Channel(#[from] lapin::Error),
}

/// A channel in confirm mode publishing to the topology's exchange, `mandatory` so that an
/// unroutable message comes back instead of vanishing.
pub struct Publisher {
    channel: Channel,
    exchange: ShortString,
    confirm_timeout: Duration,
    /// A batch timed out: confirms may still be outstanding on the channel, so it is not reused.
    timed_out: std::sync::atomic::AtomicBool,
}

impl Publisher {
    /// A publisher whose batches wait for their confirms `confirm_timeout` at most.
    pub async fn open(broker: &Broker, confirm_timeout: Duration) -> Result<Self, lapin::Error> {
        let connection = broker.connection().await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: broker.topology().exchange.as_str().into(),
            confirm_timeout,
            timed_out: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the channel can still publish; a broken one is replaced by the caller.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
            && !self.timed_out.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes every message with its confirm in flight together, then waits for all confirms.
    /// The result at index i says whether message i is safely with the broker.
    ///
    /// lapin's `basic_publish` returns once its I/O thread has written the message, so awaiting
    /// them one by one would cost a hand-off to that thread and back, a `write` and a TCP segment
    /// per message. Polled together, every message's frames are queued (in order: each takes its
    /// delivery tag and queues its frames on its first poll, and `join_all` polls them in order)
    /// before the thread wakes, and it writes the whole batch at once.
    ///
    /// The whole batch waits `confirm_timeout` at most: past it, every message counts as not
    /// confirmed (the broker may have some of them: they go out again, consumers are idempotent),
    /// and this publisher is not used again.
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Vec<Result<(), PublishError>> {
        match tokio::time::timeout(self.confirm_timeout, self.publish_all_unbounded(messages)).await
        {
            Ok(results) => results,
            Err(_) => {
                self.timed_out
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let millis = self.confirm_timeout.as_millis();
                messages
                    .iter()
                    .map(|_| Err(PublishError::TimedOut(millis)))
                    .collect()
            }
        }
    }

    async fn publish_all_unbounded(
        &self,
        messages: &[OutgoingMessage],
    ) -> Vec<Result<(), PublishError>> {
        let spans = PublishSpans::start(&self.exchange, messages);
        let sent = join_all(messages.iter().enumerate().map(|(index, message)| {
            self.channel.basic_publish(
                self.exchange.clone(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties(message, spans.context(index)),
            )
        }))
        .await;
        let results = join_all(
            sent.into_iter()
                .map(|confirm| async move { accepted(confirm?.await?) }),
        )
        .await;
        spans.finish(&results);
        results
    }

    pub async fn close(self) {
        if self.channel.status().connected() {
            let _ = self.channel.close(200, "OK".into()).await;
        }
    }
}

/// Whether the broker took a message: neither refused (nack) nor returned as unroutable.
fn accepted(confirmation: lapin::Confirmation) -> Result<(), PublishError> {
    if confirmation.is_nack() {
        return Err(PublishError::Nacked);
    }
    match confirmation.take_message() {
        Some(returned) => Err(PublishError::Returned(returned.reply_text.to_string())),
        None => Ok(()),
    }
}

/// Publishes a copy of `delivery` (its body and properties, with `headers` instead of its own)
/// to `exchange` with `routing_key`, persistent and `mandatory`, on `channel` (in confirm mode),
/// and waits for the broker's confirm `timeout` at most. How retries, dead letters and replays
/// move a message.
pub async fn republish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &lapin::message::Delivery,
    headers: lapin::types::FieldTable,
    timeout: Duration,
) -> Result<(), PublishError> {
    let properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(PERSISTENT);
    let confirmation = tokio::time::timeout(timeout, async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| PublishError::TimedOut(timeout.as_millis()))??;
    accepted(confirmation)
}

fn properties(message: &OutgoingMessage, trace: Option<&TraceContext>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message.event_id.to_string().into())
        .with_type(message.event_type.as_str().into())
        .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
    let properties = match trace {
        Some(trace) => {
            let mut headers = crate::headers::Headers::default();
            headers.set_str(trace::TRACEPARENT, trace.traceparent.as_str());
            if !trace.tracestate.is_empty() {
                headers.set_str(trace::TRACESTATE, trace.tracestate.as_str());
            }
            properties.with_headers(headers.into_table())
        }
        None => properties,
    };
    match message.correlation_id {
        Some(id) => properties.with_correlation_id(id.to_string().into()),
        None => properties,
    }
}

/// The spans of one [`Publisher::publish_all`]: a `publish` span per message that carries a
/// trace, a child of the span that wrote the event, and a `publish batch` span for them all,
/// linked from each message's span. Nothing when no message carries a trace.
struct PublishSpans {
    _batch: Option<Batch>,
    /// Per message: its span and the context its headers carry.
    messages: Vec<Option<(tracing::Span, TraceContext)>>,
}

impl PublishSpans {
    fn start(exchange: &ShortString, messages: &[OutgoingMessage]) -> Self {
        if messages.iter().all(|message| message.trace.is_none()) {
            return Self {
                _batch: None,
                messages: Vec::new(),
            };
        }
        let batch = Batch::new(tracing::info_span!(
            parent: None,
            "publish batch",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %exchange,
            messaging.batch.message_count = messages.len(),
        ));
        let messages = messages
            .iter()
            .map(|message| {
                let parent = message.trace.as_ref()?;
                let span = tracing::info_span!(
                    parent: None,
                    "publish",
                    otel.name = %format_args!("{} publish", message.routing_key),
                    otel.kind = "producer",
                    otel.status_code = tracing::field::Empty,
                    messaging.system = "rabbitmq",
                    messaging.destination.name = %exchange,
                    messaging.rabbitmq.destination.routing_key = %message.routing_key,
                    messaging.message.id = %message.event_id,
                    order_id = message.correlation_id.map(tracing::field::display),
                );
                trace::continue_from(&span, Some(parent));
                batch.link(&span);
                let context = TraceContext::of(&span)?;
                Some((span, context))
            })
            .collect();
        Self {
            _batch: Some(batch),
            messages,
        }
    }

    fn context(&self, index: usize) -> Option<&TraceContext> {
        self.messages
            .get(index)
            .and_then(Option::as_ref)
            .map(|(_, context)| context)
    }

    /// Marks the spans of messages the broker did not take as failed; dropping ends them all.
    fn finish(self, results: &[Result<(), PublishError>]) {
        for (message, result) in self.messages.iter().zip(results) {
            if let (Some((span, _)), Err(error)) = (message, result) {
                span.record("otel.status_code", "ERROR");
                tracing::debug!(parent: span, %error, "not confirmed");
            }
        }
    }
}
