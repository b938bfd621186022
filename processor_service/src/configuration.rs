//! Settings of the processor: defaults, then the TOML file named by
//! `PROCESSOR_SERVICE_CONFIG_FILE`, then `PROCESSOR_SERVICE__SECTION__KEY` environment variables.

use std::time::Duration;

use messaging::consumer::CrashPoint;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use service_kit::configuration::{
    AdminSettings, AmqpSettings, AuthSettings, ConfigurationError, DatabaseSettings, HttpSettings,
    OutboxSettings, RedeliverySettings, RuntimeSettings, ShutdownSettings, check_common,
    check_millis, check_range, millis,
};

pub const ENV_PREFIX: &str = "PROCESSOR_SERVICE";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RulesSettings {
    /// Orders whose total exceeds this are rejected.
    pub max_order_total: Decimal,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkSettings {
    /// Simulated work per order.
    #[serde(rename = "delay_ms", with = "millis")]
    pub delay: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrySettings {
    /// Tries of one delivery, in process, with exponential backoff and jitter.
    pub immediate_attempts: u32,
    /// Delay before the first redelivery through the broker; doubles up to `max_delay`.
    #[serde(rename = "initial_delay_ms", with = "millis")]
    pub initial_delay: Duration,
    #[serde(rename = "max_delay_ms", with = "millis")]
    pub max_delay: Duration,
    /// Broker deliveries before the message is dead-lettered and the order fails.
    pub max_attempts: u32,
}

impl RetrySettings {
    /// The part of these settings that is broker redelivery.
    pub fn redelivery(&self) -> RedeliverySettings {
        RedeliverySettings {
            initial_delay: self.initial_delay,
            max_delay: self.max_delay,
            max_attempts: self.max_attempts,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub auth: AuthSettings,
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
            work: WorkSettings {
                delay: Duration::ZERO,
            },
            retry: RetrySettings {
                immediate_attempts: 3,
                initial_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                max_attempts: 5,
            },
            faults: FaultSettings {
                transient_failure_rate: 0.0,
                crash_once_at: None,
                panic_for_customer: None,
            },
            admin: AdminSettings::default(),
            auth: AuthSettings::default(),
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
        if self.rules.max_order_total.is_sign_negative() {
            return Err(ConfigurationError::new(
                ENV_PREFIX,
                "rules.max_order_total",
                "must be >= 0",
            ));
        }
        check_millis(ENV_PREFIX, "work.delay_ms", self.work.delay, 0..=600_000)?;
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

    /// The delay tiers of broker redelivery of `order.created`, as the consumer declares them.
    pub fn retry_tiers(&self) -> messaging::topology::RetryTiers {
        self.retry.redelivery().tiers(
            &self.amqp.topology.order_created_queue,
            self.amqp.topology.queue_type,
        )
    }
}
