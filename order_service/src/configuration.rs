//! Settings of the order service: defaults, then the TOML file named by
//! `ORDER_SERVICE_CONFIG_FILE`, then `ORDER_SERVICE__SECTION__KEY` environment variables.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::configuration::{
    AdminSettings, AmqpSettings, AuthSettings, ConfigurationError, DatabaseSettings, HttpSettings,
    OutboxSettings, RedeliverySettings, RuntimeSettings, ShutdownSettings, check_common,
    check_millis, check_range, hours, millis, seconds,
};

pub const ENV_PREFIX: &str = "ORDER_SERVICE";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub outbox: OutboxSettings,
    pub shutdown: ShutdownSettings,
    pub runtime: RuntimeSettings,
    pub intake: IntakeSettings,
    /// Redelivery of an `order.processed` whose handling failed; after the last attempt it is
    /// dead-lettered with the reason in its headers.
    pub retry: RedeliverySettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub reconcile: ReconcileSettings,
    pub live: LiveSettings,
    pub processor: ProcessorLinkSettings,
}

/// Where the processor's HTTP API is: the order page's operator view reaches its dead letters
/// through this service (`/processor/dead-letters`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessorLinkSettings {
    pub url: String,
    /// The longest wait for its answer.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
}

impl Default for ProcessorLinkSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8001".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Live status streams (`GET /orders/events`, `GET /orders/{id}/events`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveSettings {
    /// Open streams at most, per instance; more are refused with 503.
    pub max_connections: usize,
    /// How often changes are read when no notification came (one lost with its connection).
    #[serde(rename = "poll_interval_ms", with = "millis")]
    pub poll_interval: Duration,
    /// A comment is sent on a stream idle this long: proxies keep it open, and a client that
    /// went is noticed (its place freed) by the second one that cannot be delivered.
    #[serde(rename = "heartbeat_ms", with = "millis")]
    pub heartbeat: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            poll_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(15),
        }
    }
}

/// Reconciliation: `order.created` is published again for orders still pending after
/// `pending_after_seconds` (`crate::reconcile`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReconcileSettings {
    /// An order pending this long is published again; then again after twice that, and so on.
    #[serde(rename = "pending_after_seconds", with = "seconds")]
    pub pending_after: Duration,
    /// The longest wait between two re-publications of one order.
    #[serde(rename = "max_backoff_seconds", with = "seconds")]
    pub max_backoff: Duration,
    /// How often a sweep runs.
    #[serde(rename = "interval_ms", with = "millis")]
    pub interval: Duration,
    /// Orders published again by one sweep at most.
    pub max_per_sweep: u32,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            pending_after: Duration::from_secs(300),
            max_backoff: Duration::from_secs(3600),
            interval: Duration::from_secs(30),
            max_per_sweep: 500,
        }
    }
}

/// How many new orders may wait to be stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntakeSettings {
    /// New orders waiting for their group commit at most (besides the group being written);
    /// beyond, `POST /orders` answers 503 with `Retry-After` at once instead of queueing. Bounds
    /// memory and latency under overload.
    pub max_waiting: usize,
    /// How long an `Idempotency-Key` names the order it placed at least: a retry within it is
    /// answered with that order; once the sweep after it released the key, the key places a new
    /// order. Zero: keys are kept as long as their orders.
    #[serde(rename = "idempotency_key_hours", with = "hours")]
    pub idempotency_key_ttl: Duration,
    /// How often the keys past `idempotency_key_ttl` are released.
    #[serde(rename = "key_sweep_interval_ms", with = "millis")]
    pub key_sweep_interval: Duration,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_waiting: 1024,
            idempotency_key_ttl: Duration::from_secs(24 * 3600),
            key_sweep_interval: Duration::from_secs(60),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("0.0.0.0", 8000),
            database: DatabaseSettings::at("postgres://postgres@127.0.0.1:5432/orders"),
            amqp: AmqpSettings::local(),
            outbox: OutboxSettings::default(),
            shutdown: ShutdownSettings::default(),
            runtime: RuntimeSettings::default(),
            intake: IntakeSettings::default(),
            retry: RedeliverySettings::default(),
            admin: AdminSettings::default(),
            auth: AuthSettings::default(),
            reconcile: ReconcileSettings::default(),
            live: LiveSettings::default(),
            processor: ProcessorLinkSettings::default(),
        }
    }
}

impl Settings {
    /// Loads and checks the settings; an error names the variable to fix.
    pub fn load() -> Result<Self, ConfigurationError> {
        let settings: Self = service_kit::configuration::load(ENV_PREFIX, &Self::default())?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigurationError> {
        check_common(
            ENV_PREFIX,
            &self.http,
            &self.database,
            &self.amqp,
            &self.outbox,
            &self.shutdown,
            &self.runtime,
        )?;
        self.admin.check(ENV_PREFIX)?;
        self.auth.check(ENV_PREFIX)?;
        check_range(
            ENV_PREFIX,
            "intake.max_waiting",
            self.intake.max_waiting,
            1..=100_000,
        )?;
        check_range(
            ENV_PREFIX,
            "intake.idempotency_key_hours",
            self.intake.idempotency_key_ttl.as_secs() / 3600,
            0..=87_600,
        )?;
        check_millis(
            ENV_PREFIX,
            "intake.key_sweep_interval_ms",
            self.intake.key_sweep_interval,
            10..=3_600_000,
        )?;
        self.retry.check(ENV_PREFIX, "retry")?;
        let reconcile = &self.reconcile;
        check_range(
            ENV_PREFIX,
            "reconcile.pending_after_seconds",
            reconcile.pending_after.as_secs(),
            1..=604_800,
        )?;
        check_range(
            ENV_PREFIX,
            "reconcile.max_backoff_seconds",
            reconcile.max_backoff.as_secs(),
            reconcile.pending_after.as_secs()..=604_800,
        )?;
        check_millis(
            ENV_PREFIX,
            "reconcile.interval_ms",
            reconcile.interval,
            10..=3_600_000,
        )?;
        check_range(
            ENV_PREFIX,
            "reconcile.max_per_sweep",
            reconcile.max_per_sweep,
            1..=100_000,
        )?;
        check_range(
            ENV_PREFIX,
            "live.max_connections",
            self.live.max_connections,
            1..=100_000,
        )?;
        check_millis(
            ENV_PREFIX,
            "live.poll_interval_ms",
            self.live.poll_interval,
            10..=60_000,
        )?;
        check_millis(
            ENV_PREFIX,
            "live.heartbeat_ms",
            self.live.heartbeat,
            10..=300_000,
        )?;
        check_millis(
            ENV_PREFIX,
            "processor.timeout_ms",
            self.processor.timeout,
            10..=600_000,
        )?;
        if !(self.processor.url.starts_with("http://")
            || self.processor.url.starts_with("https://"))
        {
            return Err(ConfigurationError::new(
                ENV_PREFIX,
                "processor.url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// The delay tiers of broker redelivery of `order.processed`, as the consumer declares them.
    pub fn retry_tiers(&self) -> messaging::topology::RetryTiers {
        self.retry.tiers(
            &self.amqp.topology.order_processed_queue,
            self.amqp.topology.queue_type,
        )
    }
}
