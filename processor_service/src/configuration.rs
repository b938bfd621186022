//! Settings of the processor: defaults, then the TOML file named by
//! `PROCESSOR_SERVICE_CONFIG_FILE`, then `PROCESSOR_SERVICE__SECTION__KEY` environment variables.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::configuration::{
    AdminSettings, AmqpSettings, ConfigurationError, DatabaseSettings, HttpSettings,
    OutboxSettings, RedeliverySettings, RuntimeSettings, ShutdownSettings, check_common,
    check_range,
};
use shared::consumer::CrashPoint;
use shared::topology::RetryTiers;

pub const ENV_PREFIX: &str = "PROCESSOR_SERVICE";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSettings {
    /// Orders whose total exceeds this are rejected.
    pub max_order_total: Decimal,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkSettings {
    /// Simulated work per order, in milliseconds.
    pub delay_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Tries of one delivery, in process, with exponential backoff and jitter.
    pub immediate_attempts: u32,
    /// Delay before the first redelivery through the broker; doubles up to `max_delay_ms`.
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Broker deliveries before the message is dead-lettered and the order fails.
    pub max_attempts: u32,
}

impl RetrySettings {
    /// The part of these settings that is broker redelivery.
    pub fn redelivery(&self) -> RedeliverySettings {
        RedeliverySettings {
            initial_delay_ms: self.initial_delay_ms,
            max_delay_ms: self.max_delay_ms,
            max_attempts: self.max_attempts,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Probability (0.0..=1.0) that one processing attempt fails transiently: for tests and demos.
    pub transient_failure_rate: f64,
    /// Stop the consumer once as a crashed process would, at this point (tests and demos):
    /// `after_failure_recorded` or `after_dead_lettered`.
    #[serde(default)]
    pub crash_once_at: Option<CrashPoint>,
    /// Panic while processing any order of this customer (tests and demos): the panic is
    /// contained, the order fails, and its message is dead-lettered with the panic's message.
    #[serde(default)]
    pub panic_for_customer: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub outbox: OutboxSettings,
    pub shutdown: ShutdownSettings,
    pub runtime: RuntimeSettings,
    pub rules: RulesSettings,
    pub work: WorkSettings,
    pub retry: RetrySettings,
    pub faults: FaultSettings,
    pub admin: AdminSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("0.0.0.0", 8001),
            database: DatabaseSettings::at("postgres://postgres@127.0.0.1:5432/processor"),
            amqp: AmqpSettings::local(),
            outbox: OutboxSettings::default(),
            shutdown: ShutdownSettings::default(),
            runtime: RuntimeSettings::default(),
            rules: RulesSettings {
                max_order_total: Decimal::new(1_000_000, 2),
            },
            work: WorkSettings { delay_ms: 0 },
            retry: RetrySettings {
                immediate_attempts: 3,
                initial_delay_ms: 1000,
                max_delay_ms: 60_000,
                max_attempts: 5,
            },
            faults: FaultSettings {
                transient_failure_rate: 0.0,
                crash_once_at: None,
                panic_for_customer: None,
            },
            admin: AdminSettings::default(),
        }
    }
}

impl Settings {
    /// Loads and checks the settings; an error names the variable to fix.
    pub fn load() -> Result<Self, ConfigurationError> {
        let settings: Self = shared::configuration::load(ENV_PREFIX, &Self::default())?;
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
        if self.rules.max_order_total.is_sign_negative() {
            return Err(ConfigurationError::new(
                ENV_PREFIX,
                "rules.max_order_total",
                "must be >= 0",
            ));
        }
        check_range(ENV_PREFIX, "work.delay_ms", self.work.delay_ms, 0..=600_000)?;
        let retry = &self.retry;
        check_range(
            ENV_PREFIX,
            "retry.immediate_attempts",
            retry.immediate_attempts,
            1..=20,
        )?;
        retry.redelivery().check(ENV_PREFIX, "retry")?;
        check_range(
            ENV_PREFIX,
            "faults.transient_failure_rate",
            self.faults.transient_failure_rate,
            0.0..=1.0,
        )
    }

    /// The delay tiers of broker redelivery.
    pub fn retry_tiers(&self) -> RetryTiers {
        self.retry
            .redelivery()
            .tiers(&self.amqp.order_created_queue, self.amqp.queue_type)
    }
}
