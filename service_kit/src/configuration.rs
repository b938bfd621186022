//! Layered configuration: the service's defaults, then an optional TOML file, then environment
//! variables (`PREFIX__SECTION__KEY`). Every error names the environment variable to fix.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use messaging::settings::{
    AmqpSettings, ConfigurationError, DatabaseSettings, OutboxSettings, RedeliverySettings, Secret,
    check_millis, check_range, env_var_name, hours, millis, seconds,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpSettings {
    /// Address to bind, `0.0.0.0` in containers.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// How long an idle keep-alive connection is kept open. Longer than the idle timeout of
    /// common client pools (hyper/reqwest and Go: 90 s), so that a client never sends a request
    /// on a connection the server is closing at that very moment.
    #[serde(rename = "keep_alive_seconds", with = "seconds")]
    pub keep_alive: Duration,
    /// The longest wait for a request's head (request line and headers).
    #[serde(rename = "head_timeout_ms", with = "millis")]
    pub head_timeout: Duration,
    /// The longest wait for a request's whole body; a slower client gets 408.
    #[serde(rename = "body_timeout_ms", with = "millis")]
    pub body_timeout: Duration,
    /// Threads serving HTTP, each with its own event loop; 0: one per core.
    pub workers: usize,
}

impl HttpSettings {
    /// Listens on `host:port`, with the default timeouts.
    pub fn on(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            keep_alive: Duration::from_secs(120),
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            workers: 0,
        }
    }

    fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "http.keep_alive_seconds",
            self.keep_alive.as_secs(),
            1..=3600,
        )?;
        check_millis(
            prefix,
            "http.head_timeout_ms",
            self.head_timeout,
            100..=600_000,
        )?;
        check_millis(
            prefix,
            "http.body_timeout_ms",
            self.body_timeout,
            100..=600_000,
        )?;
        check_range(prefix, "http.workers", self.workers, 0..=256)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShutdownSettings {
    /// On SIGTERM/SIGINT, time allowed to finish in-flight work before exiting.
    #[serde(rename = "grace_seconds", with = "seconds")]
    pub grace: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
        }
    }
}

/// The threads of the service's tokio runtime: the consumers, the outbox relay and the group
/// writers run there (the HTTP server has its own workers, one per core).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    let config = builder
        .add_source(
            config::Environment::with_prefix(prefix)
                .prefix_separator("__")
                .separator("__"),
        )
        .build()
        .map_err(|e| from_config_error(prefix, &file_variable, e))?;
    let given: serde_json::Value = config
        .clone()
        .try_deserialize()
        .map_err(|e| from_config_error(prefix, &file_variable, e))?;
    let settings: T = config
        .try_deserialize()
        .map_err(|e| from_config_error(prefix, &file_variable, e))?;
    // Every key given must be one the settings have: written back, they show every key they
    // read, flattened sections included.
    let known = serde_json::to_value(&settings)
        .map_err(|e| ConfigurationError::new(prefix, "", e.to_string()))?;
    match unknown_key(&given, &known) {
        Some(path) => Err(ConfigurationError::new(
            prefix,
            &path,
            "unknown setting (misspelt, or in the wrong section?)",
        )),
        None => Ok(settings),
    }
}

fn is_field_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The path (`amqp.exchnage`) of the first key of `given` that `known` does not have.
fn unknown_key(given: &serde_json::Value, known: &serde_json::Value) -> Option<String> {
    let (serde_json::Value::Object(given), serde_json::Value::Object(known)) = (given, known)
    else {
        return None;
    };
    given.iter().find_map(|(key, value)| match known.get(key) {
        None => Some(key.clone()),
        Some(inner) => unknown_key(value, inner).map(|path| format!("{key}.{path}")),
    })
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
            // A flattened field's error starts with its name (`queue_type: ...`), and the
            // key is its section's.
            Some(key) => match message.split_once(": ") {
                Some((field, rest)) if is_field_name(field) => {
                    ConfigurationError::new(prefix, &format!("{key}.{field}"), rest)
                }
                _ => ConfigurationError::new(prefix, key, message.clone()),
            },
            // serde's own messages ("unknown field `prot`, expected ...") carry no path.
            None => ConfigurationError {
                variable: format!("{prefix}__*"),
                message,
            },
        },
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The shortest operator token accepted: anything shorter is refused at start.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl AdminSettings {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "admin.requests_per_second",
            self.requests_per_second,
            1..=10_000,
        )?;
        check_range(prefix, "admin.burst", self.burst, 1..=10_000)?;
        match self.token() {
            Some(token) if token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS => {
                Err(ConfigurationError::new(
                    prefix,
                    "admin.token",
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN_CHARS} characters (for example \
                         `openssl rand -hex 32`); unset, the operator endpoints are disabled"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The token, if one is set and not empty.
    pub fn token(&self) -> Option<&Secret> {
        self.token
            .as_ref()
            .filter(|token| !token.expose().is_empty())
    }
}

/// Who may call the HTTP APIs (`crate::auth`): bearer JWTs verified against the configured keys,
/// the static operator token (`admin.token`), and, with neither, loopback clients without a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthSettings {
    /// The `iss` every token must carry; required once a key is configured.
    pub issuer: Option<String>,
    /// An `aud` every token must carry; required once a key is configured.
    pub audience: Option<String>,
    /// HS256 shared secret, at least 32 bytes.
    pub hs256_secret: Option<Secret>,
    /// A file holding the HS256 secret (what `dev-token` generates), instead of `hs256_secret`.
    pub hs256_secret_file: Option<String>,
    /// PEM files of public keys (RSA, EC P-256/P-384 or Ed25519), comma-separated.
    pub public_key_files: Option<String>,
    /// An OIDC provider's JWKS URL: fetched at start, again for a token whose `kid` it lacks
    /// (at most every `jwks_min_refresh_seconds`) and once it is an hour old.
    pub jwks_url: Option<String>,
    /// The least time between two fetches of the JWKS.
    #[serde(rename = "jwks_min_refresh_seconds", with = "seconds")]
    pub jwks_min_refresh: Duration,
    /// The claim listing a token's roles: a string (space-separated) or an array of strings; a
    /// dotted path reaches into objects (`realm_access.roles`).
    pub role_claim: String,
    /// The role that makes a token an operator's.
    pub operator_role: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(rename = "leeway_seconds", with = "seconds")]
    pub leeway: Duration,
    /// Requests without a token from loopback clients act as an operator. Unset: only while no key
    /// and no static token are configured.
    pub loopback_without_token: Option<bool>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            hs256_secret: None,
            hs256_secret_file: None,
            public_key_files: None,
            jwks_url: None,
            jwks_min_refresh: Duration::from_secs(30),
            role_claim: "roles".into(),
            operator_role: "operator".into(),
            leeway: Duration::from_secs(30),
            loopback_without_token: None,
        }
    }
}

/// The shortest HS256 secret accepted, in bytes (RFC 7518: at least the hash's size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

fn given(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

impl AuthSettings {
    /// Whether any key to verify tokens with is configured.
    pub fn has_keys(&self) -> bool {
        self.hs256_secret
            .as_ref()
            .is_some_and(|s| !s.expose().is_empty())
            || given(&self.hs256_secret_file).is_some()
            || given(&self.public_key_files).is_some()
            || given(&self.jwks_url).is_some()
    }

    pub fn issuer(&self) -> Option<&str> {
        given(&self.issuer)
    }

    pub fn audience(&self) -> Option<&str> {
        given(&self.audience)
    }

    pub fn hs256_secret_file(&self) -> Option<&str> {
        given(&self.hs256_secret_file)
    }

    /// The public key files, in order.
    pub fn public_key_files(&self) -> Vec<&str> {
        given(&self.public_key_files)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|path| !path.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn jwks_url(&self) -> Option<&str> {
        given(&self.jwks_url)
    }

    /// Whether loopback clients without a token act as an operator, given whether a static token
    /// is configured.
    pub fn loopback_without_token(&self, static_token: bool) -> bool {
        self.loopback_without_token
            .unwrap_or(!self.has_keys() && !static_token)
    }

    pub fn check(&self, prefix: &str) -> Result<(), ConfigurationError> {
        check_range(
            prefix,
            "auth.leeway_seconds",
            self.leeway.as_secs(),
            0..=600,
        )?;
        check_range(
            prefix,
            "auth.jwks_min_refresh_seconds",
            self.jwks_min_refresh.as_secs(),
            1..=86_400,
        )?;
        if self.role_claim.trim().is_empty() {
            return Err(ConfigurationError::new(
                prefix,
                "auth.role_claim",
                "must not be empty",
            ));
        }
        if self.operator_role.trim().is_empty() {
            return Err(ConfigurationError::new(
                prefix,
                "auth.operator_role",
                "must not be empty",
            ));
        }
        if let Some(secret) = &self.hs256_secret
            && !secret.expose().is_empty()
            && secret.expose().len() < MIN_HS256_SECRET_BYTES
        {
            return Err(ConfigurationError::new(
                prefix,
                "auth.hs256_secret",
                format!(
                    "must be at least {MIN_HS256_SECRET_BYTES} bytes (for example `openssl rand -hex 32`)"
                ),
            ));
        }
        if let Some(url) = self.jwks_url()
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigurationError::new(
                prefix,
                "auth.jwks_url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.has_keys() {
            if self.issuer().is_none() {
                return Err(ConfigurationError::new(
                    prefix,
                    "auth.issuer",
                    "must be set when keys are configured: tokens are checked for their `iss`",
                ));
            }
            if self.audience().is_none() {
                return Err(ConfigurationError::new(
                    prefix,
                    "auth.audience",
                    "must be set when keys are configured: tokens are checked for their `aud`",
                ));
            }
        }
        Ok(())
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
    database.check(prefix)?;
    amqp.check(prefix)?;
    outbox.check(prefix)?;
    check_range(
        prefix,
        "shutdown.grace_seconds",
        shutdown.grace.as_secs(),
        1..=3600,
    )?;
    runtime.check(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_found_in_nested_sections() {
        let known = serde_json::json!({"amqp": {"url": "u", "exchange": "e"}, "token": null});
        let given = serde_json::json!({"amqp": {"url": "u", "exchnage": "e"}});
        assert_eq!(
            unknown_key(&given, &known).as_deref(),
            Some("amqp.exchnage")
        );
        let given = serde_json::json!({"amqp": {"exchange": "x"}, "token": "t"});
        assert_eq!(unknown_key(&given, &known), None);
    }

    #[test]
    fn a_short_operator_token_is_refused_naming_the_variable() {
        let mut admin = AdminSettings {
            token: Some(Secret::new("x".repeat(MIN_ADMIN_TOKEN_CHARS - 1))),
            ..AdminSettings::default()
        };
        let error = admin.check("PROCESSOR_SERVICE").unwrap_err().to_string();
        assert!(error.contains("PROCESSOR_SERVICE__ADMIN__TOKEN"), "{error}");
        assert!(error.contains("at least 32 characters"), "{error}");
        assert!(
            !error.contains("xxxx"),
            "the token itself is not printed: {error}"
        );
        admin.token = Some(Secret::new("x".repeat(MIN_ADMIN_TOKEN_CHARS)));
        admin.check("PROCESSOR_SERVICE").unwrap();
        // Unset or empty: the operator endpoints are disabled, nothing to refuse.
        admin.token = Some(Secret::new(""));
        admin.check("PROCESSOR_SERVICE").unwrap();
        admin.token = None;
        admin.check("PROCESSOR_SERVICE").unwrap();
    }

    #[test]
    fn http_workers_are_bounded_and_zero_means_one_per_core() {
        let mut http = HttpSettings::on("127.0.0.1", 0);
        assert_eq!(http.workers, 0);
        http.check("ORDER_SERVICE").unwrap();
        http.workers = 257;
        let error = http.check("ORDER_SERVICE").unwrap_err().to_string();
        assert!(error.contains("ORDER_SERVICE__HTTP__WORKERS"), "{error}");
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
}
