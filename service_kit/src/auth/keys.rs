//! The keys tokens are verified with, and the verification: the signature with a key whose family
//! the token's `alg` belongs to (an HS256 token is never checked against an RSA public key, and
//! `alg: none` does not parse), then `exp` and `nbf` with the leeway, `iss`, `aud` and `sub`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::configuration::AuthSettings;

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A JWKS older than this is fetched again on the next token.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The longest wait for the JWKS endpoint.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not one this service accepts (RFC 6750 `invalid_token`).
    #[error("{0}")]
    Invalid(String),
    /// The keys could not be fetched, so the token could not be checked.
    #[error("{0}")]
    KeysUnavailable(String),
}

/// One verification key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The algorithms this key verifies: its family's, or the one its JWK names.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl Key {
    fn of_family(kid: Option<String>, key: DecodingKey) -> Self {
        Self {
            kid,
            algorithms: key.family().algorithms().to_vec(),
            key,
        }
    }

    /// Whether this key may verify a token with this header.
    fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.algorithms.contains(&alg)
            && match (kid, self.kid.as_deref()) {
                (Some(wanted), Some(own)) => wanted == own,
                _ => true,
            }
    }
}

struct Jwks {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    /// The keys of the last fetch that succeeded, and when it did (none yet: `None`). Read
    /// without waiting for a fetch in flight.
    keys: RwLock<(Arc<Vec<Key>>, Option<Instant>)>,
    /// When the last fetch was tried; held while fetching, so that one fetch runs at a time.
    tried: Mutex<Option<Instant>>,
}

impl Jwks {
    fn current(&self) -> (Arc<Vec<Key>>, Option<Instant>) {
        match self.keys.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn keys(&self) -> Arc<Vec<Key>> {
        self.current().0
    }

    fn ever_fetched(&self) -> bool {
        self.current().1.is_some()
    }

    fn is_stale(&self) -> bool {
        self.current()
            .1
            .is_none_or(|fetched| fetched.elapsed() >= JWKS_MAX_AGE)
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| format!("fetching the JWKS from {}: {error}", self.url))?;
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("the JWKS at {} is over 1 MiB", self.url));
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("reading the JWKS from {}: {error}", self.url))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the JWKS at {} is over 1 MiB", self.url));
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|error| format!("the JWKS at {} does not parse: {error}", self.url))?;
        Ok(keys_of(&set))
    }

    /// Fetches the set again, unless one was tried within the minimum interval (a stream of
    /// tokens with made-up `kid`s must not become a stream of requests to the provider).
    async fn refresh(&self) -> Result<(), String> {
        let mut tried = self.tried.lock().await;
        if tried.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Ok(());
        }
        *tried = Some(Instant::now());
        let keys = Arc::new(self.fetch().await?);
        tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
        let fetched = (keys, Some(Instant::now()));
        match self.keys.write() {
            Ok(mut slot) => *slot = fetched,
            Err(poisoned) => *poisoned.into_inner() = fetched,
        }
        Ok(())
    }
}

/// The signature keys of a JWKS (keys for encryption and of unsupported types are left out).
fn keys_of(set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter(|jwk| {
            jwk.is_supported()
                && !matches!(jwk.common.public_key_use, Some(ref use_) if *use_ != PublicKeyUse::Signature)
        })
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let kid = jwk.common.key_id.clone();
            match jwk.common.key_algorithm {
                Some(named) => {
                    let alg = Algorithm::try_from(named).ok()?;
                    // A JWK naming an algorithm of another family than its key is not used.
                    (alg.family() == key.family()).then(|| Key {
                        kid,
                        algorithms: vec![alg],
                        key,
                    })
                }
                None => Some(Key::of_family(kid, key)),
            }
        })
        .collect()
}

/// The configured keys and the rules every token must meet.
pub struct Verifier {
    fixed: Vec<Key>,
    jwks: Option<Jwks>,
    issuer: String,
    audience: String,
    leeway: Duration,
}

/// What a verified token says (its claims, as JSON).
pub type Claims = serde_json::Map<String, serde_json::Value>;

impl Verifier {
    /// The keys of `settings`, read from their files; `None` when none is configured. The JWKS is
    /// fetched here once; if that fails, start-up goes on and tokens are refused until a fetch
    /// succeeds.
    pub async fn from_settings(
        settings: &AuthSettings,
        prefix: &str,
    ) -> anyhow::Result<Option<Self>> {
        use anyhow::Context;
        if !settings.has_keys() {
            return Ok(None);
        }
        let mut fixed = Vec::new();
        if let Some(secret) = settings
            .hs256_secret
            .as_ref()
            .filter(|secret| !secret.expose().is_empty())
        {
            fixed.push(hmac_key(secret.expose().as_bytes())?);
        }
        if let Some(path) = settings.hs256_secret_file() {
            let secret = std::fs::read(path)
                .with_context(|| format!("reading {prefix}__AUTH__HS256_SECRET_FILE ({path})"))?;
            let secret = secret.trim_ascii();
            if secret.len() < crate::configuration::MIN_HS256_SECRET_BYTES {
                anyhow::bail!(
                    "{prefix}__AUTH__HS256_SECRET_FILE ({path}) holds fewer than {} bytes",
                    crate::configuration::MIN_HS256_SECRET_BYTES
                );
            }
            fixed.push(hmac_key(secret)?);
        }
        for path in settings.public_key_files() {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading {prefix}__AUTH__PUBLIC_KEY_FILES ({path})"))?;
            let key = public_key(&pem).with_context(|| {
                format!(
                    "{prefix}__AUTH__PUBLIC_KEY_FILES: {path} is not a PEM public key (RSA, EC or Ed25519)"
                )
            })?;
            fixed.push(Key::of_family(None, key));
        }
        let jwks = match settings.jwks_url() {
            None => None,
            Some(url) => {
                let client = reqwest::Client::builder()
                    .timeout(JWKS_TIMEOUT)
                    .build()
                    .context("building the JWKS client")?;
                let jwks = Jwks {
                    url: url.to_owned(),
                    client,
                    min_refresh: settings.jwks_min_refresh,
                    keys: RwLock::new((Arc::new(Vec::new()), None)),
                    tried: Mutex::new(None),
                };
                if let Err(error) = jwks.refresh().await {
                    tracing::warn!(%error, "the JWKS could not be fetched; tokens are refused until it can");
                }
                Some(jwks)
            }
        };
        Ok(Some(Self {
            fixed,
            jwks,
            issuer: settings.issuer().unwrap_or_default().to_owned(),
            audience: settings.audience().unwrap_or_default().to_owned(),
            leeway: settings.leeway,
        }))
    }

    /// Verifies `token` and answers its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| TokenError::Invalid(format!("the token does not parse: {error}")))?;
        let kid = header.kid.as_deref();
        let mut candidates: Vec<Key> = self
            .fixed
            .iter()
            .filter(|key| key.fits(header.alg, kid))
            .cloned()
            .collect();
        if let Some(jwks) = &self.jwks {
            // An hour old (or never fetched): fetched again first.
            if jwks.is_stale()
                && let Err(error) = jwks.refresh().await
            {
                tracing::warn!(%error, "the JWKS could not be fetched again");
            }
            let mut from_jwks = fitting(&jwks.keys(), header.alg, kid);
            if from_jwks.is_empty() && kid.is_some() {
                // A key the provider has rotated in since the last fetch.
                if let Err(error) = jwks.refresh().await {
                    tracing::warn!(%error, "the JWKS could not be fetched again");
                }
                from_jwks = fitting(&jwks.keys(), header.alg, kid);
            }
            candidates.extend(from_jwks);
            if candidates.is_empty() && !jwks.ever_fetched() {
                return Err(TokenError::KeysUnavailable(
                    "the identity provider's keys (JWKS) could not be fetched; retry later".into(),
                ));
            }
        }
        if candidates.is_empty() {
            return Err(TokenError::Invalid(format!(
                "no configured key verifies {:?} tokens{}",
                header.alg,
                kid.map(|kid| format!(" with kid {kid:?}"))
                    .unwrap_or_default()
            )));
        }
        let mut last = None;
        for key in &candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(header.alg)) {
                Ok(data) => return Ok(data.claims),
                Err(error) => match error.kind() {
                    // Another key may still verify it.
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => last = Some(error),
                    _ => return Err(TokenError::Invalid(describe(&error))),
                },
            }
        }
        Err(TokenError::Invalid(
            last.map(|error| describe(&error))
                .unwrap_or_else(|| "the signature does not verify".into()),
        ))
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }
}

fn fitting(keys: &[Key], alg: Algorithm, kid: Option<&str>) -> Vec<Key> {
    keys.iter()
        .filter(|key| key.fits(alg, kid))
        .cloned()
        .collect()
}

fn hmac_key(secret: &[u8]) -> anyhow::Result<Key> {
    let key = DecodingKey::from_secret(secret)?;
    // HS256 only: the secret's length is checked against SHA-256's.
    Ok(Key {
        kid: None,
        algorithms: vec![Algorithm::HS256],
        key,
    })
}

fn public_key(pem: &[u8]) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
}

/// What a refusal says to the client: which check failed, never the key.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the configured one".into(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not this service".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit the key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        _ => format!("the token does not parse: {error}"),
    }
}
