//! Who is calling: every protected route takes an [`Identity`], which the [`Authenticator`] in
//! the app data makes from the request's head.
//!
//! - `Authorization: Bearer <JWT>` verified against the configured keys ([`keys`]): a customer
//!   (`sub` is the customer id) or, with the operator role in the role claim, an operator (`sub`
//!   names them in the audit log).
//! - `Authorization: Bearer <ADMIN__TOKEN>`, the static operator token: an operator audited as
//!   [`audit::STATIC_TOKEN`](crate::audit::STATIC_TOKEN).
//! - No token, from a loopback client, while no key and no static token are configured (or
//!   `AUTH__LOOPBACK_WITHOUT_TOKEN=true`): an operator audited as [`LOOPBACK`], as RabbitMQ's guest
//!   user is. A request that came through a proxy (`Forwarded`, `X-Forwarded-For`) is not taken
//!   for a loopback one.
//!
//! Anything else is a 401 problem with `WWW-Authenticate: Bearer` (RFC 6750); a customer at an
//! operator's endpoint is a 403 with `error="insufficient_scope"`.

pub mod dev;
pub mod keys;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use subtle::ConstantTimeEq;

use crate::configuration::{AuthSettings, Secret};
use crate::http::{Challenge, Problem, problem_type};
use keys::{Claims, TokenError, Verifier};

/// The audit subject of a loopback client without a token.
pub const LOOPBACK: &str = "loopback";

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Acts on its own orders only; its subject is its customer id.
    Customer,
    /// Reads everything and uses the operator endpoints.
    Operator,
}

/// A caller whose credentials were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`, [`audit::STATIC_TOKEN`](crate::audit::STATIC_TOKEN) or [`LOOPBACK`].
    pub subject: String,
    pub role: Role,
}

impl Identity {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// The identity, if it is an operator's; a 403 otherwise.
    pub fn operator(self) -> Result<Self, Problem> {
        if self.is_operator() {
            Ok(self)
        } else {
            Err(Problem {
                challenge: Some(Challenge::InsufficientScope),
                ..Problem::new(
                    StatusCode::FORBIDDEN,
                    problem_type::FORBIDDEN,
                    "Forbidden",
                    "this endpoint is for operators; the token is a customer's",
                )
            })
        }
    }
}

/// Makes an [`Identity`] of a request's head. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    static_token: Option<Secret>,
    verifier: Option<Verifier>,
    /// Tokens verified lately: the identity each carries and its `exp`.
    verified: moka::sync::Cache<String, (Identity, i64)>,
    /// The leeway on `exp`, in seconds.
    leeway: i64,
    loopback_without_token: bool,
    role_claim: Vec<String>,
    operator_role: String,
    /// `ORDER_SERVICE`, for messages naming a variable.
    prefix: String,
}

/// Tokens remembered as verified at most. A client sends one token with each request until it
/// expires, and checking a signature costs 25–45 µs with RS256, ES256 or EdDSA (BENCHMARKS.md,
/// "With authentication"); a remembered one costs a lookup.
const VERIFIED_TOKENS: u64 = 10_000;
/// How long a token is remembered at most: a key removed from the provider's JWKS stops
/// admitting the tokens it signed within this. A remembered token is refused once it expires.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a request has no identity.
#[derive(Debug)]
enum Refusal {
    /// No credentials (RFC 6750: no error code in the challenge).
    Missing,
    /// Credentials that do not verify.
    Invalid(String),
    /// The keys to check them with are out of reach.
    Unavailable(String),
}

impl Authenticator {
    /// `settings`' keys (the JWKS fetched once) and the static operator token.
    pub async fn new(
        settings: &AuthSettings,
        static_token: Option<&Secret>,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let verifier = Verifier::from_settings(settings, prefix).await?;
        let loopback_without_token = settings.loopback_without_token(static_token.is_some());
        if loopback_without_token {
            tracing::warn!(
                "requests without a token are accepted from loopback clients, as an operator: \
                 configure {prefix}__AUTH__* keys (README, \"Authentication\") before exposing the service"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                static_token: static_token.cloned(),
                verifier,
                verified: moka::sync::Cache::builder()
                    .max_capacity(VERIFIED_TOKENS)
                    .time_to_live(VERIFIED_FOR)
                    .build(),
                leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
                loopback_without_token,
                role_claim: settings.role_claim.split('.').map(str::to_owned).collect(),
                operator_role: settings.operator_role.clone(),
                prefix: prefix.to_owned(),
            }),
        })
    }

    /// Whether requests without a token from loopback clients act as an operator.
    pub fn loopback_without_token(&self) -> bool {
        self.inner.loopback_without_token
    }

    /// Who made `request`, from its `Authorization` header and its peer address.
    pub async fn identify(&self, request: &HttpRequest) -> Result<Identity, Problem> {
        let presented = bearer(request).map_err(|refusal| refusal.problem())?;
        let client = request.peer_addr().map(|address| address.ip());
        let forwarded = request.headers().contains_key("forwarded")
            || request.headers().contains_key("x-forwarded-for");
        self.identify_token(presented.as_deref(), client, forwarded)
            .await
            .map_err(|refusal| refusal.problem())
    }

    async fn identify_token(
        &self,
        presented: Option<&str>,
        client: Option<IpAddr>,
        forwarded: bool,
    ) -> Result<Identity, Refusal> {
        let inner = &self.inner;
        let Some(token) = presented else {
            return if inner.loopback_without_token
                && !forwarded
                && client.is_some_and(|ip| ip.is_loopback() || is_mapped_loopback(ip))
            {
                Ok(Identity {
                    subject: LOOPBACK.into(),
                    role: Role::Operator,
                })
            } else {
                Err(Refusal::Missing)
            };
        };
        if let Some(expected) = &inner.static_token
            && bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes()))
        {
            return Ok(Identity {
                subject: crate::audit::STATIC_TOKEN.into(),
                role: Role::Operator,
            });
        }
        let Some(verifier) = &inner.verifier else {
            return Err(Refusal::Invalid(format!(
                "the token is not the operator token, and no keys to verify tokens are \
                 configured ({}__AUTH__*)",
                inner.prefix
            )));
        };
        let now = chrono::Utc::now().timestamp();
        if let Some((identity, expires)) = inner.verified.get(token) {
            if now <= expires.saturating_add(inner.leeway) {
                return Ok(identity);
            }
            // Expired since: verified again, it is refused with the reason.
            inner.verified.invalidate(token);
        }
        let claims = verifier.verify(token).await.map_err(|error| match error {
            TokenError::Invalid(message) => Refusal::Invalid(message),
            TokenError::KeysUnavailable(message) => Refusal::Unavailable(message),
        })?;
        let identity = self.identity_of(&claims)?;
        if let Some(expires) = claims.get("exp").and_then(serde_json::Value::as_i64) {
            inner
                .verified
                .insert(token.to_owned(), (identity.clone(), expires));
        }
        Ok(identity)
    }

    fn identity_of(&self, claims: &Claims) -> Result<Identity, Refusal> {
        let subject = match claims.get("sub") {
            Some(serde_json::Value::String(subject)) if !subject.is_empty() => subject.clone(),
            _ => return Err(Refusal::Invalid("the token's `sub` is not a string".into())),
        };
        let role = if self.has_operator_role(claims) {
            Role::Operator
        } else {
            Role::Customer
        };
        Ok(Identity { subject, role })
    }

    fn has_operator_role(&self, claims: &Claims) -> bool {
        let mut path = self.inner.role_claim.iter();
        let Some(first) = path.next() else {
            return false;
        };
        let mut value = claims.get(first);
        for step in path {
            value = value.and_then(|inner| inner.get(step));
        }
        let wanted = self.inner.operator_role.as_str();
        match value {
            Some(serde_json::Value::String(roles)) => roles.split(' ').any(|role| role == wanted),
            Some(serde_json::Value::Array(roles)) => {
                roles.iter().any(|role| role.as_str() == Some(wanted))
            }
            _ => false,
        }
    }
}

fn is_mapped_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(_) => false,
    }
}

/// The bearer token of the request, if it has one (the scheme is case-insensitive).
fn bearer(request: &HttpRequest) -> Result<Option<String>, Refusal> {
    let mut values = request.headers().get_all(AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::Invalid("give one Authorization header".into()));
    }
    let value = value
        .to_str()
        .map_err(|_| Refusal::Invalid("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(Refusal::Invalid("the bearer token is empty".into()))
            } else {
                Ok(Some(token.to_owned()))
            }
        }
        _ => Err(Refusal::Invalid(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

/// A 401 for a token this service does not accept, saying why (RFC 6750 `invalid_token`).
pub fn invalid_token(message: impl Into<String>) -> Problem {
    let message = message.into();
    Problem {
        challenge: Some(Challenge::InvalidToken),
        ..Problem::new(
            StatusCode::UNAUTHORIZED,
            problem_type::UNAUTHORIZED,
            "Unauthorized",
            message,
        )
    }
}

impl Refusal {
    fn problem(self) -> Problem {
        match self {
            Refusal::Missing => Problem {
                challenge: Some(Challenge::Bearer),
                ..Problem::new(
                    StatusCode::UNAUTHORIZED,
                    problem_type::UNAUTHORIZED,
                    "Unauthorized",
                    "an `Authorization: Bearer <token>` header is required",
                )
            },
            Refusal::Invalid(message) => invalid_token(message),
            Refusal::Unavailable(message) => Problem::unavailable(message),
        }
    }
}

impl FromRequest for Identity {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let Some(authenticator) = request.app_data::<web::Data<Authenticator>>() else {
                tracing::error!("no Authenticator in the app data");
                return Err(Problem::internal());
            };
            authenticator.clone().identify(&request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn authenticator(settings: AuthSettings, token: Option<&str>) -> Authenticator {
        Authenticator::new(&settings, token.map(Secret::new).as_ref(), "TEST")
            .await
            .unwrap()
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[tokio::test]
    async fn without_keys_only_loopback_clients_without_a_forwarding_proxy_get_in() {
        let open = authenticator(AuthSettings::default(), None).await;
        let operator = open.identify_token(None, LOCAL, false).await.unwrap();
        assert_eq!(operator.subject, LOOPBACK);
        assert!(operator.is_operator());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(open.identify_token(None, Some(mapped), false).await.is_ok());
        assert!(matches!(
            open.identify_token(None, REMOTE, false).await,
            Err(Refusal::Missing)
        ));
        assert!(matches!(
            open.identify_token(None, LOCAL, true).await,
            Err(Refusal::Missing)
        ));
    }

    #[tokio::test]
    async fn a_static_token_closes_the_loopback_door_and_is_the_operator() {
        let token = "t".repeat(32);
        let auth = authenticator(AuthSettings::default(), Some(&token)).await;
        assert!(matches!(
            auth.identify_token(None, LOCAL, false).await,
            Err(Refusal::Missing)
        ));
        let operator = auth
            .identify_token(Some(&token), REMOTE, false)
            .await
            .unwrap();
        assert_eq!(operator.subject, crate::audit::STATIC_TOKEN);
        assert!(matches!(
            auth.identify_token(Some("wrong"), LOCAL, false).await,
            Err(Refusal::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_remembered_token_is_the_same_token_and_is_refused_once_expired() {
        let secret = "s".repeat(32);
        let settings = AuthSettings {
            issuer: Some("iss".into()),
            audience: Some("aud".into()),
            hs256_secret: Some(Secret::new(secret.clone())),
            leeway: std::time::Duration::ZERO,
            ..AuthSettings::default()
        };
        let auth = authenticator(settings.clone(), None).await;
        let lifetime = std::time::Duration::from_secs(2);
        let token = dev::mint(&settings, secret.as_bytes(), "customer-1", false, lifetime).unwrap();
        let first = auth
            .identify_token(Some(&token), REMOTE, false)
            .await
            .unwrap();
        assert_eq!(first.subject, "customer-1");
        // Remembered: the same token again; one changed in its signature is checked and refused.
        let at = token.len() - 5;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert!(matches!(
            auth.identify_token(Some(&forged), REMOTE, false).await,
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(
            auth.identify_token(Some(&token), REMOTE, false)
                .await
                .unwrap(),
            first
        );
        // Past its `exp`, the remembered token is refused like any expired one.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match auth.identify_token(Some(&token), REMOTE, false).await {
                Ok(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "never expired");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(Refusal::Invalid(message)) => {
                    assert!(message.contains("expired"), "{message}");
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_role_claim_may_be_a_list_a_string_or_a_nested_path() {
        let mut settings = AuthSettings::default();
        let auth = authenticator(settings.clone(), None).await;
        let claims = |value: serde_json::Value| value.as_object().unwrap().clone();
        let role = |auth: &Authenticator, value| auth.identity_of(&claims(value)).unwrap().role;
        assert_eq!(
            role(
                &auth,
                serde_json::json!({"sub": "a", "roles": ["x", "operator"]})
            ),
            Role::Operator
        );
        assert_eq!(
            role(
                &auth,
                serde_json::json!({"sub": "a", "roles": "x operator"})
            ),
            Role::Operator
        );
        assert_eq!(
            role(&auth, serde_json::json!({"sub": "a", "roles": "operators"})),
            Role::Customer
        );
        settings.role_claim = "realm_access.roles".into();
        let nested = authenticator(settings, None).await;
        assert_eq!(
            role(
                &nested,
                serde_json::json!({"sub": "a", "realm_access": {"roles": ["operator"]}})
            ),
            Role::Operator
        );
        assert!(matches!(
            nested.identity_of(&claims(serde_json::json!({"sub": 7}))),
            Err(Refusal::Invalid(_))
        ));
    }
}
