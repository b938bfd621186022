//! Tokens for tests: an issuer with an HS256 secret and an RSA key pair generated per test
//! (`rcgen`), the [`AuthSettings`] that trust it, its JWKS, and tokens with any claims.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use service_kit::configuration::{AuthSettings, Secret};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "order-pipeline";

/// Signs test tokens.
pub struct TestIssuer {
    pub secret: String,
    rsa: rcgen::KeyPair,
    /// Where the RSA public key is written, for `AUTH__PUBLIC_KEY_FILES`.
    pub public_key_file: std::path::PathBuf,
}

/// Which key signs a token.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// HS256 with the issuer's secret.
    Secret,
    /// HS256 with another secret.
    OtherSecret(&'a str),
    /// RS256 with the issuer's RSA key, with this `kid` if any.
    Rsa(Option<&'a str>),
    /// HS256 with the RSA *public* key's PEM as the secret: the algorithm-confusion attack.
    RsaPublicKeyAsSecret,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    pub fn new() -> Self {
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("an RSA key");
        let public_key_file =
            std::env::temp_dir().join(format!("test-issuer-{}.pem", crate::unique_id()));
        std::fs::write(&public_key_file, rsa.public_key_pem()).expect("write the public key");
        Self {
            secret: format!("test-hs256-secret-0123456789abcdef-{}", crate::unique_id()),
            rsa,
            public_key_file,
        }
    }

    /// Settings that trust this issuer's secret and RSA key.
    pub fn settings(&self) -> AuthSettings {
        AuthSettings {
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            hs256_secret: Some(Secret::new(self.secret.clone())),
            public_key_files: Some(self.public_key_file.display().to_string()),
            ..AuthSettings::default()
        }
    }

    /// The RSA key as a JWKS with key id `kid`.
    pub fn jwks(&self, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.rsa_encoding_key(), Algorithm::RS256)
            .expect("a JWK of the key");
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(JwkSet { keys: vec![jwk] }).expect("JWKS as JSON")
    }

    fn rsa_encoding_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.rsa.serialize_pem().as_bytes()).expect("the RSA key")
    }

    /// Claims valid for ten minutes for `subject`.
    pub fn claims(subject: &str) -> Value {
        let now = chrono_now();
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "nbf": now, "exp": now + 600})
    }

    /// `claims` signed by `signer`.
    pub fn sign(&self, signer: Signer<'_>, claims: &Value) -> String {
        let (header, key) = match signer {
            Signer::Secret => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(self.secret.as_bytes()).expect("key"),
            ),
            Signer::OtherSecret(secret) => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(secret.as_bytes()).expect("key"),
            ),
            Signer::Rsa(kid) => {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = kid.map(str::to_owned);
                (header, self.rsa_encoding_key())
            }
            Signer::RsaPublicKeyAsSecret => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(self.rsa.public_key_pem().as_bytes()).expect("key"),
            ),
        };
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }

    /// A customer's token (HS256).
    pub fn customer(&self, customer_id: &str) -> String {
        self.sign(Signer::Secret, &Self::claims(customer_id))
    }

    /// An operator's token (HS256, `roles: ["operator"]`).
    pub fn operator(&self, name: &str) -> String {
        let mut claims = Self::claims(name);
        claims["roles"] = json!(["operator"]);
        self.sign(Signer::Secret, &claims)
    }

    /// A token with `alg: none` and no signature.
    pub fn unsigned(claims: &Value) -> String {
        use base64::Engine;
        let encode = |value: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        format!(
            "{}.{}.",
            encode(&json!({"alg": "none", "typ": "JWT"})),
            encode(claims)
        )
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.public_key_file);
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

/// An identity provider's JWKS endpoint on loopback: answers `GET` with the set it holds now, and
/// counts the fetches.
pub struct JwksServer {
    pub url: String,
    set: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(set: Value) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let url = format!(
            "http://{}/jwks.json",
            listener.local_addr().expect("address")
        );
        let set = std::sync::Arc::new(std::sync::Mutex::new(set));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (set.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = served.lock().expect("the set").to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        Self {
            url,
            set,
            fetches,
            task,
        }
    }

    /// Serves `set` from now on (a key rotation).
    pub fn replace(&self, set: Value) {
        *self.set.lock().expect("the set") = set;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every operation of an OpenAPI `document` but monitoring's (`/health`, `/ready`, `/metrics`)
/// requires the `bearer` scheme, which the document declares, and documents its 401.
pub fn assert_protected_operations_declare_bearer(document: &Value) {
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    let paths = document["paths"].as_object().expect("paths");
    let mut protected = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            let open = service_kit::http::OPEN_PATHS.contains(&path.as_str());
            let security = &operation["security"];
            if open {
                assert!(security.is_null(), "{method} {path} is open: {security}");
                continue;
            }
            protected += 1;
            let schemes: Vec<&str> = security
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no security"))
                .iter()
                .flat_map(|requirement| requirement.as_object().into_iter().flat_map(|r| r.keys()))
                .map(String::as_str)
                .collect();
            assert_eq!(schemes, ["bearer"], "{method} {path}");
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents its 401"
            );
        }
    }
    assert!(protected > 0, "no protected operation in the document");
}
