//! Bearer tokens for the orders loadgen posts, so that a run also measures the service verifying
//! a JWT per request: one token per customer (`sub` = the order's `customer_id`), signed at the
//! start with the key the services verify with.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::orders::CUSTOMERS;

/// How the tokens are signed: an HS256 secret (the file the services' `dev-token` writes, or
/// any), or an RS256 / ES256 / EdDSA private key in PEM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signing {
    Hs256,
    Rs256,
    Es256,
    Eddsa,
}

/// Each customer's token.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, String>);

impl Tokens {
    /// Tokens for `customer-1` to `customer-{CUSTOMERS}`, valid for a day.
    pub fn sign(
        signing: Signing,
        key_file: &Path,
        issuer: &str,
        audience: &str,
    ) -> anyhow::Result<Self> {
        let key = std::fs::read(key_file)
            .with_context(|| format!("read the token key {}", key_file.display()))?;
        let (algorithm, key) = match signing {
            Signing::Hs256 => (
                Algorithm::HS256,
                EncodingKey::from_secret(key.trim_ascii())?,
            ),
            Signing::Rs256 => (Algorithm::RS256, EncodingKey::from_rsa_pem(&key)?),
            Signing::Es256 => (Algorithm::ES256, EncodingKey::from_ec_pem(&key)?),
            Signing::Eddsa => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&key)?),
        };
        let now = chrono::Utc::now().timestamp();
        let header = Header::new(algorithm);
        let tokens = (1..=CUSTOMERS)
            .map(|n| {
                let customer = format!("customer-{n}");
                let claims = serde_json::json!({
                    "iss": issuer, "aud": audience, "sub": customer,
                    "iat": now, "nbf": now, "exp": now + 86_400,
                });
                Ok((customer, jsonwebtoken::encode(&header, &claims, &key)?))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(tokens))
    }

    /// The token of the customer an order `body` names, if there are tokens.
    pub fn of(&self, body: &serde_json::Value) -> Option<&str> {
        body["customer_id"]
            .as_str()
            .and_then(|customer| self.0.get(customer))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_customer_gets_a_token_naming_them() {
        let dir = std::env::temp_dir().join(format!("loadgen-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("hs256.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        let tokens = Tokens::sign(Signing::Hs256, &key, "iss", "aud").unwrap();
        let token = tokens
            .of(&serde_json::json!({"customer_id": "customer-7"}))
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_issuer(&["iss"]);
        validation.set_audience(&["aud"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "customer-7");
        assert!(
            tokens
                .of(&serde_json::json!({"customer_id": "nobody"}))
                .is_none()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
