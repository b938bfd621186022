//! Layered configuration: the service's defaults, then an optional TOML file, then environment
//! variables (`PREFIX__SECTION__KEY`). Every error names the environment variable to fix.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::topology::{QueueType, Topology};

/// A value that must never appear in logs (a URL with a password, a token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: call this only where it is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to bind, `0.0.0.0` in containers.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// How long an idle keep-alive connection is kept open, in seconds. Longer than the idle
    /// timeout of common client pools (hyper/reqwest and Go: 90 s), so that a client never sends
    /// a request on a connection the server is closing at that very moment.
    pub keep_alive_seconds: u64,
    /// The longest wait for a request's head (request line and headers), in milliseconds.
    pub head_timeout_ms: u64,
    /// The longest wait for a request's whole body, in milliseconds; a slower client gets 408.
    pub body_timeout_ms: u64,
}

impl HttpSettings {
    /// Listens on `host:port`, with the default timeouts.
    pub fn on(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            keep_alive_seconds: 120,
            head_timeout_ms: 5000,
            body_timeout_ms: 10_000,
        }
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_seconds)
    }

    pub fn head_timeout(&self) -> Duration {
        Duration::from_millis(self.head_timeout_ms)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "http.keep_alive_seconds",
            self.keep_alive_seconds,
            1..=3600,
        )?;
        check_range(
            prefix,
            "http.head_timeout_ms",
            self.head_timeout_ms,
            100..=600_000,
        )?;
        check_range(
            prefix,
            "http.body_timeout_ms",
            self.body_timeout_ms,
            100..=600_000,
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user[:password]@host:port/database`; the database is created if missing.
    pub url: Secret,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// A pooled connection idle for at least this long (milliseconds) is pinged before it is
    /// handed out, and replaced if dead; one in use more recently is handed out at once, which
    /// saves a round trip to PostgreSQL per statement. 0: ping before every use.
    pub ping_after_idle_ms: u64,
    /// Connections of the separate, read-only pool the API's reads (`GET /orders`...) use, so
    /// that however many reads arrive, the writers and consumers keep their own pool.
    pub read_max_connections: u32,
    /// `statement_timeout` of the read pool's sessions, in milliseconds: a read that runs
    /// longer is cancelled and answered 503.
    pub read_statement_timeout_ms: u64,
}

impl DatabaseSettings {
    /// The database at `url`, with the default pools.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            max_connections: 16,
            acquire_timeout_ms: 3000,
            ping_after_idle_ms: 1000,
            read_max_connections: 4,
            read_statement_timeout_ms: 2000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: Secret,
    /// Deliveries a consumer holds unacknowledged at once; also how many it processes concurrently.
    pub prefetch: u16,
    /// Durable topic exchange carrying `order.created` and `order.processed`.
    pub exchange: String,
    /// Exchange receiving what a queue dead-letters.
    pub dead_letter_exchange: String,
    /// The processor's work queue, bound to `order.created`.
    pub order_created_queue: String,
    /// The order service's queue, bound to `order.processed`.
    pub order_processed_queue: String,
    /// Where `order.created` messages that cannot be processed end.
    pub order_created_dead_letter_queue: String,
    /// Where `order.processed` messages that cannot be applied end.
    pub order_processed_dead_letter_queue: String,
    /// `classic` or `quorum`: the kind of the work and dead-letter queues. Both services must
    /// say the same, and an existing queue keeps its kind ([`QueueType`]).
    pub queue_type: QueueType,
    /// On quorum queues, the deliveries of one message after which the broker dead-letters it
    /// (`x-delivery-limit` of the work queues). A consumer returns the messages it holds once per
    /// outage of its database, so this is far above what outages reach; a message the broker
    /// dead-letters here can still be listed and replayed by its order id.
    pub delivery_limit: u32,
    /// AMQP heartbeat: a broker that stops answering without closing the connection is noticed
    /// within about twice this (the connection is then closed and made again), and readiness says
    /// so. 0 turns heartbeats off.
    pub heartbeat_seconds: u16,
    /// How long a consumer's group commit waits, from its oldest delivery, for more deliveries
    /// to write in the same statement (0: at once). At moderate load this makes fewer, larger
    /// statements, publish batches and acks, so less CPU per order and shorter queues everywhere,
    /// for up to this much more latency per hop; under load deliveries wait for the statement in
    /// flight anyway and it adds nothing.
    pub group_linger_ms: u64,
}

impl AmqpSettings {
    pub fn topology(&self) -> Topology {
        Topology {
            exchange: self.exchange.clone(),
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            order_created_queue: self.order_created_queue.clone(),
            order_processed_queue: self.order_processed_queue.clone(),
            order_created_dead_letter_queue: self.order_created_dead_letter_queue.clone(),
            order_processed_dead_letter_queue: self.order_processed_dead_letter_queue.clone(),
            queue_type: self.queue_type,
            delivery_limit: self.delivery_limit,
        }
    }

    /// The defaults of the messaging contract, pointing at the local broker.
    pub fn local() -> Self {
        let topology = Topology::default();
        Self {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefetch: 256,
            exchange: topology.exchange,
            dead_letter_exchange: topology.dead_letter_exchange,
            order_created_queue: topology.order_created_queue,
            order_processed_queue: topology.order_processed_queue,
            order_created_dead_letter_queue: topology.order_created_dead_letter_queue,
            order_processed_dead_letter_queue: topology.order_processed_dead_letter_queue,
            queue_type: topology.queue_type,
            delivery_limit: topology.delivery_limit,
            heartbeat_seconds: 10,
            group_linger_ms: 5,
        }
    }

    pub fn group_linger(&self) -> Duration {
        Duration::from_millis(self.group_linger_ms)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Run the relay in this instance. Off only for an API-only instance whose outbox another
    /// instance relays (rows wait in the database meanwhile; nothing is lost).
    pub relay_enabled: bool,
    /// Rows taken, published and marked sent together.
    pub batch_size: u32,
    /// Safety-net poll; the relay is normally woken at once by the commit (in process, or by
    /// PostgreSQL NOTIFY from another instance).
    pub poll_interval_ms: u64,
    /// Sent rows are deleted after this many hours.
    pub retention_hours: u32,
    /// Publish each event right after the commit that wrote it, from memory, instead of waiting
    /// for the relay to read it back (the relay stays as the safety net). Needs `relay_enabled`.
    pub publish_on_commit: bool,
    /// With `publish_on_commit`: how long a new row is left to the instance that wrote it before
    /// any relay may publish it (the time to notice that its writer stopped before publishing).
    pub lease_seconds: u32,
    /// The longest wait for the broker's confirms of one batch (and of a consumer's dead letter or
    /// retry). Past it the messages count as not confirmed: the relay's rows are released and its
    /// transaction ends, so a broker that blocks publishers (a memory or disk alarm) or stops
    /// answering holds no database transaction longer than this.
    pub confirm_timeout_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            relay_enabled: true,
            batch_size: 500,
            poll_interval_ms: 1000,
            retention_hours: 24,
            publish_on_commit: true,
            lease_seconds: 10,
            confirm_timeout_ms: 5000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// On SIGTERM/SIGINT, time allowed to finish in-flight work before exiting.
    pub grace_seconds: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { grace_seconds: 30 }
    }
}

/// The threads of the service's tokio runtime: the consumers, the outbox relay and the group
/// writers run there (the HTTP server has its own workers, one per core).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Worker threads. One measured fastest on 2 cores (BENCHMARKS.md, "Settings that matter"): the
    /// work there is a few tasks that batch, so a second thread adds wake-ups, not capacity. It
    /// replaces tokio's `TOKIO_WORKER_THREADS`.
    pub worker_threads: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self { worker_threads: 1 }
    }
}

impl RuntimeSettings {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "runtime.worker_threads",
            self.worker_threads,
            1..=1024,
        )
    }

    /// The multi-threaded runtime the service runs on.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads)
            .enable_all()
            .build()
    }
}

/// A configuration that cannot be used, naming the variable to fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {message}")]
pub struct ConfigurationError {
    pub variable: String,
    pub message: String,
}

impl ConfigurationError {
    /// An error about the setting at `path` (`amqp.prefetch`) of the service whose environment
    /// prefix is `prefix`.
    pub fn new(prefix: &str, path: &str, message: impl Into<String>) -> Self {
        Self {
            variable: env_var_name(prefix, path),
            message: message.into(),
        }
    }
}

/// `ORDER_SERVICE` + `amqp.prefetch` -> `ORDER_SERVICE__AMQP__PREFETCH`.
pub fn env_var_name(prefix: &str, path: &str) -> String {
    let mut name = prefix.to_owned();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        name.push_str("__");
        name.push_str(&part.to_uppercase());
    }
    name
}

/// Loads `T`: `defaults`, then the TOML file named by `{PREFIX}_CONFIG_FILE` if set, then the
/// environment variables `{PREFIX}__SECTION__KEY`.
pub fn load<T>(prefix: &str, defaults: &T) -> Result<T, ConfigurationError>
where
    T: Serialize + DeserializeOwned,
{
    let file_variable = format!("{prefix}_CONFIG_FILE");
    let mut builder = config::Config::builder().add_source(
        config::Config::try_from(defaults)
            .map_err(|e| ConfigurationError::new(prefix, "", e.to_string()))?,
    );
    if let Ok(path) = std::env::var(&file_variable) {
        builder = builder.add_source(config::File::new(&path, config::FileFormat::Toml));
    }
    builder
        .add_source(
            config::Environment::with_prefix(prefix)
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .and_then(|c| c.try_deserialize::<T>())
        .map_err(|e| from_config_error(prefix, &file_variable, e))
}

fn from_config_error(
    prefix: &str,
    file_variable: &str,
    error: config::ConfigError,
) -> ConfigurationError {
    let message = error.to_string();
    match &error {
        config::ConfigError::Foreign(_)
        | config::ConfigError::FileParse { .. }
        | config::ConfigError::NotFound(_) => ConfigurationError {
            variable: file_variable.to_owned(),
            message,
        },
        // Type and custom errors end with "for key `section.key`".
        _ => match message
            .rsplit_once("for key `")
            .and_then(|(_, rest)| rest.split('`').next())
        {
            Some(key) => ConfigurationError::new(prefix, key, message.clone()),
            // serde's own messages ("unknown field `prot`, expected ...") carry no path.
            None => ConfigurationError {
                variable: format!("{prefix}__*"),
                message,
            },
        },
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the operator endpoints (dead letters); without it they are disabled (403).
    pub token: Option<Secret>,
    /// Requests per second one client address may make to the operator endpoints, on average...
    pub requests_per_second: u32,
    /// ...and at once, after a quiet spell; beyond, 429 with `Retry-After`.
    pub burst: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            requests_per_second: 5,
            burst: 10,
        }
    }
}

impl AdminSettings {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "admin.requests_per_second",
            self.requests_per_second,
            1..=10_000,
        )?;
        check_range(prefix, "admin.burst", self.burst, 1..=10_000)
    }

    /// The token, if one is set and not empty.
    pub fn token(&self) -> Option<&Secret> {
        self.token
            .as_ref()
            .filter(|token| !token.expose().is_empty())
    }
}

/// Redelivery through the broker of a message whose handling failed (the `retry` section of a
/// service's settings): the delay doubles from `initial_delay_ms` to `max_delay_ms`, and after
/// `max_attempts` deliveries the message's outcome is recorded and it is dead-lettered.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverySettings {
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_attempts: u32,
}

impl Default for RedeliverySettings {
    fn default() -> Self {
        Self {
            initial_delay_ms: 1000,
            max_delay_ms: 60_000,
            max_attempts: 5,
        }
    }
}

impl RedeliverySettings {
    /// The delay tiers (retry queues) of `work_queue`, queues of `queue_type`.
    pub fn tiers(&self, work_queue: &str, queue_type: QueueType) -> crate::topology::RetryTiers {
        crate::topology::RetryTiers::new(
            work_queue,
            std::time::Duration::from_millis(self.initial_delay_ms),
            std::time::Duration::from_millis(self.max_delay_ms),
            self.max_attempts,
        )
        .of_type(queue_type)
    }

    /// Checks the ranges; an error names `{section}.{field}`.
    pub fn check(&self, prefix: &str, section: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            &format!("{section}.initial_delay_ms"),
            self.initial_delay_ms,
            1..=3_600_000,
        )?;
        check_range(
            prefix,
            &format!("{section}.max_delay_ms"),
            self.max_delay_ms,
            self.initial_delay_ms..=86_400_000,
        )?;
        check_range(
            prefix,
            &format!("{section}.max_attempts"),
            self.max_attempts,
            1..=100,
        )
    }
}

/// Fails with the variable's name unless `value` lies in `range`.
pub fn check_range<V>(
    prefix: &str,
    path: &str,
    value: V,
    range: std::ops::RangeInclusive<V>,
) -> Result<(), ConfigurationError>
where
    V: PartialOrd + fmt::Display,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigurationError::new(
            prefix,
            path,
            format!(
                "{value} is out of range ({}..={})",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Checks what every service has in common.
pub fn check_common(
    prefix: &str,
    http: &HttpSettings,
    database: &DatabaseSettings,
    amqp: &AmqpSettings,
    outbox: &OutboxSettings,
    shutdown: &ShutdownSettings,
    runtime: &RuntimeSettings,
) -> Result<(), ConfigurationError> {
    http.check(prefix)?;
    if !database.url.expose().starts_with("postgres://")
        && !database.url.expose().starts_with("postgresql://")
    {
        return Err(ConfigurationError::new(
            prefix,
            "database.url",
            "must be a postgres:// URL",
        ));
    }
    check_range(
        prefix,
        "database.max_connections",
        database.max_connections,
        1..=1000,
    )?;
    check_range(
        prefix,
        "database.acquire_timeout_ms",
        database.acquire_timeout_ms,
        1..=600_000,
    )?;
    check_range(
        prefix,
        "database.ping_after_idle_ms",
        database.ping_after_idle_ms,
        0..=3_600_000,
    )?;
    check_range(
        prefix,
        "database.read_max_connections",
        database.read_max_connections,
        1..=1000,
    )?;
    check_range(
        prefix,
        "database.read_statement_timeout_ms",
        database.read_statement_timeout_ms,
        1..=3_600_000,
    )?;
    if amqp.url.expose().parse::<lapin::uri::AMQPUri>().is_err() {
        return Err(ConfigurationError::new(
            prefix,
            "amqp.url",
            "must be an amqp:// URL",
        ));
    }
    check_range(prefix, "amqp.prefetch", amqp.prefetch, 1..=10_000)?;
    check_range(
        prefix,
        "amqp.group_linger_ms",
        amqp.group_linger_ms,
        0..=1_000,
    )?;
    check_range(
        prefix,
        "amqp.delivery_limit",
        amqp.delivery_limit,
        1..=1_000_000,
    )?;
    check_range(
        prefix,
        "amqp.heartbeat_seconds",
        amqp.heartbeat_seconds,
        0..=3_600,
    )?;
    for (path, name) in [
        ("amqp.exchange", &amqp.exchange),
        ("amqp.dead_letter_exchange", &amqp.dead_letter_exchange),
        ("amqp.order_created_queue", &amqp.order_created_queue),
        ("amqp.order_processed_queue", &amqp.order_processed_queue),
        (
            "amqp.order_created_dead_letter_queue",
            &amqp.order_created_dead_letter_queue,
        ),
        (
            "amqp.order_processed_dead_letter_queue",
            &amqp.order_processed_dead_letter_queue,
        ),
    ] {
        if name.is_empty() || name.len() > 255 {
            return Err(ConfigurationError::new(
                prefix,
                path,
                "must be 1..=255 characters",
            ));
        }
    }
    check_range(prefix, "outbox.batch_size", outbox.batch_size, 1..=10_000)?;
    check_range(
        prefix,
        "outbox.poll_interval_ms",
        outbox.poll_interval_ms,
        10..=3_600_000,
    )?;
    check_range(
        prefix,
        "outbox.confirm_timeout_ms",
        outbox.confirm_timeout_ms,
        10..=600_000,
    )?;
    check_range(
        prefix,
        "outbox.lease_seconds",
        outbox.lease_seconds,
        1..=3600,
    )?;
    check_range(
        prefix,
        "shutdown.grace_seconds",
        shutdown.grace_seconds,
        1..=3600,
    )?;
    runtime.check(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_names_follow_the_double_underscore_convention() {
        assert_eq!(
            env_var_name("ORDER_SERVICE", "amqp.prefetch"),
            "ORDER_SERVICE__AMQP__PREFETCH"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("postgres://u:hunter2@h/db");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn the_runtime_needs_a_worker_thread() {
        assert_eq!(RuntimeSettings::default().worker_threads, 1);
        let error = RuntimeSettings { worker_threads: 0 }
            .check("P")
            .unwrap_err();
        assert_eq!(error.variable, "P__RUNTIME__WORKER_THREADS");
    }

    #[test]
    fn the_runtime_has_the_configured_worker_threads() {
        let runtime = RuntimeSettings { worker_threads: 3 }.build().unwrap();
        assert_eq!(runtime.metrics().num_workers(), 3);
    }

    #[test]
    fn ranges_name_the_variable() {
        let error = check_range("P", "amqp.prefetch", 0u16, 1..=10).unwrap_err();
        assert_eq!(error.variable, "P__AMQP__PREFETCH");
    }
}
