//! Settings of the processor: defaults, then the TOML file named by
//! `PROCESSOR_SERVICE_CONFIG_FILE`, then `PROCESSOR_SERVICE__SECTION__KEY` environment variables.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::configuration::{
    AmqpSettings, ConfigurationError, DatabaseSettings, HttpSettings, OutboxSettings, Secret,
    ShutdownSettings, check_common, check_range,
};

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
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub outbox: OutboxSettings,
    pub shutdown: ShutdownSettings,
    pub rules: RulesSettings,
    pub work: WorkSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings {
                host: "0.0.0.0".into(),
                port: 8001,
            },
            database: DatabaseSettings {
                url: Secret::new("postgres://postgres@127.0.0.1:5432/processor"),
                max_connections: 16,
                acquire_timeout_ms: 3000,
            },
            amqp: AmqpSettings::local(),
            outbox: OutboxSettings::default(),
            shutdown: ShutdownSettings::default(),
            rules: RulesSettings {
                max_order_total: Decimal::new(1_000_000, 2),
            },
            work: WorkSettings { delay_ms: 0 },
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
            &self.database,
            &self.amqp,
            &self.outbox,
            &self.shutdown,
        )?;
        if self.rules.max_order_total.is_sign_negative() {
            return Err(ConfigurationError::new(
                ENV_PREFIX,
                "rules.max_order_total",
                "must be >= 0",
            ));
        }
        check_range(ENV_PREFIX, "work.delay_ms", self.work.delay_ms, 0..=600_000)
    }
}
