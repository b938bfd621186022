//! The settings of the messaging layer (database, broker, outbox, redelivery), the secret type
//! that keeps credentials out of logs, and the errors that name the environment variable to fix.
//!
//! None of these types refuses unknown keys itself (serde cannot where a field is flattened): the
//! configuration loader refuses them in every section, naming the variable.
//!
//! Durations are [`Duration`]s here; in files and the environment they keep their unit in the
//! name (`_MS`, `_SECONDS`, `_HOURS`), through the [`millis`], [`seconds`] and [`hours`] adapters.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topology::{QueueType, RetryTiers, Topology};

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

macro_rules! duration_in {
    ($module:ident, $unit:literal, $to:expr, $from:expr) => {
        #[doc = concat!("A [`Duration`] written as a whole number of ", $unit, ".")]
        pub mod $module {
            use std::time::Duration;

            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(
                value: &Duration,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                let to: fn(&Duration) -> u128 = $to;
                serializer.serialize_u64(u64::try_from(to(value)).unwrap_or(u64::MAX))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Duration, D::Error> {
                let from: fn(u64) -> Option<Duration> = $from;
                let value = u64::deserialize(deserializer)?;
                from(value).ok_or_else(|| serde::de::Error::custom(concat!("too many ", $unit)))
            }
        }
    };
}

duration_in!(millis, "milliseconds", |d| d.as_millis(), |v| Some(
    Duration::from_millis(v)
));
duration_in!(seconds, "seconds", |d| u128::from(d.as_secs()), |v| Some(
    Duration::from_secs(v)
));
duration_in!(hours, "hours", |d| u128::from(d.as_secs() / 3600), |v| v
    .checked_mul(3600)
    .map(Duration::from_secs));

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user[:password]@host:port/database`; the database is created if missing.
    pub url: Secret,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing.
    #[serde(rename = "acquire_timeout_ms", with = "millis")]
    pub acquire_timeout: Duration,
    /// A pooled connection idle for at least this long is pinged before it is handed out, and
    /// replaced if dead; one in use more recently is handed out at once, which saves a round trip
    /// to PostgreSQL per statement. 0: ping before every use.
    #[serde(rename = "ping_after_idle_ms", with = "millis")]
    pub ping_after_idle: Duration,
    /// Connections of the separate, read-only pool the API's reads (`GET /orders`...) use, so
    /// that however many reads arrive, the writers and consumers keep their own pool.
    pub read_max_connections: u32,
    /// `statement_timeout` of the read pool's sessions: a read that runs longer is cancelled and
    /// answered 503.
    #[serde(rename = "read_statement_timeout_ms", with = "millis")]
    pub read_statement_timeout: Duration,
}

impl DatabaseSettings {
    /// The database at `url`, with the default pools.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            ping_after_idle: Duration::from_secs(1),
            read_max_connections: 4,
            read_statement_timeout: Duration::from_secs(2),
        }
    }

    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        let url = self.url.expose();
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(ConfigurationError::new(
                prefix,
                "database.url",
                "must be a postgres:// URL",
            ));
        }
        check_range(
            prefix,
            "database.max_connections",
            self.max_connections,
            1..=1000,
        )?;
        check_millis(
            prefix,
            "database.acquire_timeout_ms",
            self.acquire_timeout,
            1..=600_000,
        )?;
        check_millis(
            prefix,
            "database.ping_after_idle_ms",
            self.ping_after_idle,
            0..=3_600_000,
        )?;
        check_range(
            prefix,
            "database.read_max_connections",
            self.read_max_connections,
            1..=1000,
        )?;
        check_millis(
            prefix,
            "database.read_statement_timeout_ms",
            self.read_statement_timeout,
            1..=3_600_000,
        )
    }
}

/// The `amqp` section: the connection, and the [`Topology`]'s fields beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: Secret,
    /// Several brokers (the nodes of a cluster), comma-separated: each connection, the first
    /// and every reconnection, tries them in turn from the one that answered last. Unset: `url`.
    #[serde(default)]
    pub urls: Option<Secret>,
    /// Deliveries a consumer holds unacknowledged at once; also how many it processes concurrently.
    pub prefetch: u16,
    /// The exchange and queue names, the queues' kind and their delivery limit.
    #[serde(flatten, deserialize_with = "naming_the_field")]
    pub topology: Topology,
    /// AMQP heartbeat: a broker that stops answering without closing the connection is noticed
    /// within about twice this (the connection is then closed and made again), and readiness says
    /// so. 0 turns heartbeats off.
    #[serde(rename = "heartbeat_seconds", with = "seconds")]
    pub heartbeat: Duration,
    /// How long a consumer's group commit waits, from its oldest delivery, for more deliveries
    /// to write in the same statement (0: at once). At moderate load this makes fewer, larger
    /// statements, publish batches and acks, so less CPU per order and shorter queues everywhere,
    /// for up to this much more latency per hop; under load deliveries wait for the statement in
    /// flight anyway and it adds nothing.
    #[serde(rename = "group_linger_ms", with = "millis")]
    pub group_linger: Duration,
    /// With an `amqps://` URL: a CA file (PEM) the broker's certificate may be signed by, besides
    /// the system's roots.
    pub ca_file: Option<String>,
    /// A client certificate (PEM) for a broker that asks for one, with its key (PEM, PKCS#8).
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// Deserializes a flattened `T`, its errors starting with the field's name (`queue_type: ...`):
/// the loader only knows the section a flattened field failed in, and completes the path with it.
fn naming_the_field<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        serde::de::Error::custom(format!("{path}: {}", error.into_inner()))
    })
}

impl AmqpSettings {
    /// The defaults of the messaging contract, pointing at the local broker.
    pub fn local() -> Self {
        Self {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            urls: None,
            prefetch: 256,
            topology: Topology::default(),
            heartbeat: Duration::from_secs(10),
            group_linger: Duration::from_millis(5),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }

    /// The TLS configuration of `amqps://` connections: the CA and client certificate files,
    /// read now (a missing or unreadable file names its variable).
    pub fn tls(&self, prefix: &str) -> Result<lapin::tcp::OwnedTLSConfig, ConfigurationError> {
        let read =
            |path: &Option<String>, key: &str| -> Result<Option<Vec<u8>>, ConfigurationError> {
                match path
                    .as_deref()
                    .map(str::trim)
                    .filter(|path| !path.is_empty())
                {
                    None => Ok(None),
                    Some(path) => std::fs::read(path).map(Some).map_err(|error| {
                        ConfigurationError::new(prefix, key, format!("cannot read {path}: {error}"))
                    }),
                }
            };
        let cert_chain = read(&self.ca_file, "amqp.ca_file")?
            .map(|pem| {
                String::from_utf8(pem).map_err(|_| {
                    ConfigurationError::new(prefix, "amqp.ca_file", "must be PEM text")
                })
            })
            .transpose()?;
        let identity = match (
            read(&self.client_cert_file, "amqp.client_cert_file")?,
            read(&self.client_key_file, "amqp.client_key_file")?,
        ) {
            (Some(pem), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 { pem, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigurationError::new(
                    prefix,
                    "amqp.client_key_file",
                    "must be set with amqp.client_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigurationError::new(
                    prefix,
                    "amqp.client_cert_file",
                    "must be set with amqp.client_key_file",
                ));
            }
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }

    /// The heartbeat in whole seconds, as AMQP negotiates it.
    pub fn heartbeat_seconds(&self) -> u16 {
        u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX)
    }

    /// The brokers to connect to, in order: `urls` when set, else `url`.
    pub fn addresses(&self) -> Vec<Secret> {
        match &self.urls {
            Some(urls) => urls
                .expose()
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(Secret::new)
                .collect(),
            None => vec![self.url.clone()],
        }
    }

    /// Whether any broker is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        self.addresses()
            .iter()
            .any(|url| url.expose().starts_with("amqps://"))
    }

    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        if self.url.expose().parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(ConfigurationError::new(
                prefix,
                "amqp.url",
                "must be an amqp:// or amqps:// URL",
            ));
        }
        if self.urls.is_some() {
            let addresses = self.addresses();
            if addresses.is_empty()
                || addresses
                    .iter()
                    .any(|url| url.expose().parse::<lapin::uri::AMQPUri>().is_err())
            {
                return Err(ConfigurationError::new(
                    prefix,
                    "amqp.urls",
                    "must be amqp:// or amqps:// URLs, comma-separated",
                ));
            }
        }
        check_range(prefix, "amqp.prefetch", self.prefetch, 1..=10_000)?;
        check_millis(prefix, "amqp.group_linger_ms", self.group_linger, 0..=1_000)?;
        let topology = &self.topology;
        check_range(
            prefix,
            "amqp.delivery_limit",
            topology.delivery_limit,
            1..=1_000_000,
        )?;
        check_range(
            prefix,
            "amqp.heartbeat_seconds",
            self.heartbeat.as_secs(),
            0..=3_600,
        )?;
        for (path, name) in [
            ("amqp.exchange", &topology.exchange),
            ("amqp.dead_letter_exchange", &topology.dead_letter_exchange),
            ("amqp.order_created_queue", &topology.order_created_queue),
            (
                "amqp.order_processed_queue",
                &topology.order_processed_queue,
            ),
            (
                "amqp.order_created_dead_letter_queue",
                &topology.order_created_dead_letter_queue,
            ),
            (
                "amqp.order_processed_dead_letter_queue",
                &topology.order_processed_dead_letter_queue,
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
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxSettings {
    /// Run the relay in this instance. Off only for an API-only instance whose outbox another
    /// instance relays (rows wait in the database meanwhile; nothing is lost).
    pub relay_enabled: bool,
    /// Rows taken, published and marked sent together.
    pub batch_size: u32,
    /// Safety-net poll; the relay is normally woken at once by the commit (in process, or by
    /// PostgreSQL NOTIFY from another instance).
    #[serde(rename = "poll_interval_ms", with = "millis")]
    pub poll_interval: Duration,
    /// Sent rows are deleted after this long.
    #[serde(rename = "retention_hours", with = "hours")]
    pub retention: Duration,
    /// Publish each event right after the commit that wrote it, from memory, instead of waiting
    /// for the relay to read it back (the relay stays as the safety net). Needs `relay_enabled`.
    pub publish_on_commit: bool,
    /// With `publish_on_commit`: how long a new row is left to the instance that wrote it before
    /// any relay may publish it (the time to notice that its writer stopped before publishing).
    #[serde(rename = "lease_seconds", with = "seconds")]
    pub lease: Duration,
    /// The longest wait for the broker's confirms of one batch (and of a consumer's dead letter or
    /// retry). Past it the messages count as not confirmed: the relay's rows are released and its
    /// transaction ends, so a broker that blocks publishers (a memory or disk alarm) or stops
    /// answering holds no database transaction longer than this.
    #[serde(rename = "confirm_timeout_ms", with = "millis")]
    pub confirm_timeout: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            relay_enabled: true,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            publish_on_commit: true,
            lease: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(5),
        }
    }
}

impl OutboxSettings {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(prefix, "outbox.batch_size", self.batch_size, 1..=10_000)?;
        check_millis(
            prefix,
            "outbox.poll_interval_ms",
            self.poll_interval,
            10..=3_600_000,
        )?;
        check_millis(
            prefix,
            "outbox.confirm_timeout_ms",
            self.confirm_timeout,
            10..=600_000,
        )?;
        check_range(
            prefix,
            "outbox.lease_seconds",
            self.lease.as_secs(),
            1..=3600,
        )?;
        check_range(
            prefix,
            "outbox.retention_hours",
            self.retention.as_secs() / 3600,
            0..=87_600,
        )
    }
}

/// Redelivery through the broker of a message whose handling failed (the `retry` section of a
/// service's settings): the delay doubles from `initial_delay` to `max_delay`, and after
/// `max_attempts` deliveries the message's outcome is recorded and it is dead-lettered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedeliverySettings {
    #[serde(rename = "initial_delay_ms", with = "millis")]
    pub initial_delay: Duration,
    #[serde(rename = "max_delay_ms", with = "millis")]
    pub max_delay: Duration,
    pub max_attempts: u32,
}

impl Default for RedeliverySettings {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

impl RedeliverySettings {
    /// The delay tiers (retry queues) of `work_queue`, queues of `queue_type`.
    pub fn tiers(&self, work_queue: &str, queue_type: QueueType) -> RetryTiers {
        RetryTiers::new(
            work_queue,
            self.initial_delay,
            self.max_delay,
            self.max_attempts,
        )
        .of_type(queue_type)
    }

    /// Checks the ranges; an error names `{section}.{field}`.
    pub fn check(&self, prefix: &str, section: &str) -> Result<(), ConfigurationError> {
        check_millis(
            prefix,
            &format!("{section}.initial_delay_ms"),
            self.initial_delay,
            1..=3_600_000,
        )?;
        check_millis(
            prefix,
            &format!("{section}.max_delay_ms"),
            self.max_delay,
            self.initial_delay.as_millis()..=86_400_000,
        )?;
        check_range(
            prefix,
            &format!("{section}.max_attempts"),
            self.max_attempts,
            1..=100,
        )
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

/// Fails with the variable's name unless `value` lies in `range`.
pub fn check_range<V>(
    prefix: &str,
    path: &str,
    value: V,
    range: RangeInclusive<V>,
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

/// [`check_range`] for a duration set in milliseconds.
pub fn check_millis(
    prefix: &str,
    path: &str,
    value: Duration,
    range: RangeInclusive<u128>,
) -> Result<(), ConfigurationError> {
    check_range(prefix, path, value.as_millis(), range)
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
    fn ranges_name_the_variable() {
        let error = check_range("P", "amqp.prefetch", 0u16, 1..=10).unwrap_err();
        assert_eq!(error.variable, "P__AMQP__PREFETCH");
    }

    #[test]
    fn durations_keep_their_unit_in_files_and_the_environment() {
        let outbox = OutboxSettings::default();
        let json = serde_json::to_value(&outbox).unwrap();
        assert_eq!(json["poll_interval_ms"], 1000);
        assert_eq!(json["retention_hours"], 24);
        assert_eq!(json["lease_seconds"], 10);
        let back: OutboxSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back.retention, Duration::from_secs(24 * 3600));
        assert_eq!(back.confirm_timeout, Duration::from_secs(5));
    }
}
