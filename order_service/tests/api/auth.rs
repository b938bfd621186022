//! Who may do what: bearer JWTs (HS256 secret, a static RSA public key, a JWKS), customers kept
//! to their own orders, operators, the static token, and the loopback mode without keys.

use serde_json::{Value, json};
use test_support::identity::{AUDIENCE, ISSUER, JwksServer, Signer, TestIssuer};

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_with};

const STATIC_TOKEN: &str = "order-service-static-token-0123456789";

async fn spawn_with_issuer(issuer: &TestIssuer) -> TestApp {
    let auth = issuer.settings();
    spawn_app_with(|settings| {
        settings.auth = auth;
        settings.admin.token = Some(service_kit::configuration::Secret::new(STATIC_TOKEN));
    })
    .await
}

fn order_for(customer: Option<&str>) -> Value {
    let mut body = json!({"items": [{"product_id": "p-1", "quantity": 1, "price": "2.50"}]});
    if let Some(customer) = customer {
        body["customer_id"] = json!(customer);
    }
    body
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

async fn post(app: &TestApp, token: Option<&str>, body: &Value) -> reqwest::Response {
    send(app, reqwest::Method::POST, "/orders", token, Some(body)).await
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, token, None).await
}

/// A 401 problem whose challenge carries `error` (none for a missing token).
async fn assert_unauthorized(response: reqwest::Response, error: Option<&str>, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
    match error {
        Some(error) => assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{case}: {challenge}"
        ),
        None => assert_eq!(challenge, "Bearer", "{case}"),
    }
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 401, "{case}");
}

#[tokio::test]
async fn tokens_are_checked_for_signature_time_issuer_audience_and_algorithm() {
    let issuer = TestIssuer::new();
    let app = spawn_with_issuer(&issuer).await;
    let valid = TestIssuer::claims("alice");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = valid.clone();
        change(&mut claims);
        claims
    };
    let now = valid["iat"].as_i64().unwrap();
    let refused = [
        (
            "expired beyond the leeway",
            issuer.sign(Signer::Secret, &with(&|c| c["exp"] = json!(now - 120))),
        ),
        (
            "not valid yet",
            issuer.sign(Signer::Secret, &with(&|c| c["nbf"] = json!(now + 120))),
        ),
        (
            "wrong issuer",
            issuer.sign(
                Signer::Secret,
                &with(&|c| c["iss"] = json!("https://elsewhere.test")),
            ),
        ),
        (
            "wrong audience",
            issuer.sign(
                Signer::Secret,
                &with(&|c| c["aud"] = json!("another-service")),
            ),
        ),
        (
            "no expiry",
            issuer.sign(
                Signer::Secret,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "wrong key",
            issuer.sign(
                Signer::OtherSecret("another-secret-of-32-bytes-or-more!!"),
                &valid,
            ),
        ),
        ("alg none", TestIssuer::unsigned(&valid)),
        (
            "HS256 signed with the RSA public key",
            issuer.sign(Signer::RsaPublicKeyAsSecret, &valid),
        ),
        (
            "sub is not a customer id",
            issuer.sign(Signer::Secret, &with(&|c| c["sub"] = json!("x".repeat(65)))),
        ),
        ("not a JWT", "garbage".to_owned()),
    ];
    for (case, token) in &refused {
        let response = post(&app, Some(token), &order_for(None)).await;
        assert_unauthorized(response, Some("invalid_token"), case).await;
    }
    assert_unauthorized(post(&app, None, &order_for(None)).await, None, "no token").await;
    // Within the leeway (30 s), an expired token still counts: clocks drift.
    let barely_expired = issuer.sign(Signer::Secret, &with(&|c| c["exp"] = json!(now - 5)));
    for (case, token) in [
        ("HS256", issuer.customer("alice")),
        (
            "RS256 with the static public key",
            issuer.sign(Signer::Rsa(None), &valid),
        ),
        ("expired within the leeway", barely_expired),
    ] {
        let response = post(&app, Some(&token), &order_for(None)).await;
        assert_eq!(
            response.status(),
            201,
            "{case}: {:?}",
            response.text().await
        );
    }
    let stored = app
        .count("SELECT count(*) FROM orders WHERE customer_id = 'alice'")
        .await;
    assert_eq!(stored, 3, "only the accepted tokens placed orders");
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 3);
}

#[tokio::test]
async fn a_customer_sees_and_places_only_its_own_orders() {
    let issuer = TestIssuer::new();
    let app = spawn_with_issuer(&issuer).await;
    let (alice, bob) = (issuer.customer("alice"), issuer.customer("bob"));

    // The customer comes from the token when the body leaves it out...
    let response = post(&app, Some(&alice), &order_for(None)).await;
    assert_eq!(response.status(), 201);
    let alices: Value = response.json().await.unwrap();
    assert_eq!(alices["customer_id"], "alice");
    // ...and must be the token's when the body names one.
    assert_eq!(
        post(&app, Some(&alice), &order_for(Some("alice")))
            .await
            .status(),
        201
    );
    let response = post(&app, Some(&alice), &order_for(Some("bob"))).await;
    assert_eq!(response.status(), 403);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "customer_id");
    let bobs: Value = post(&app, Some(&bob), &order_for(None))
        .await
        .json()
        .await
        .unwrap();

    // Another customer's order does not exist for this one: 404, not 403.
    let id = bobs["id"].as_str().unwrap();
    for path in [format!("/orders/{id}"), format!("/orders/{id}/history")] {
        let response = get(&app, &path, Some(&alice)).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(get(&app, &path, Some(&bob)).await.status(), 200, "{path}");
    }
    // Nor can it be cancelled by this one.
    let cancel = format!("/orders/{id}/cancel");
    let response = send(&app, reqwest::Method::POST, &cancel, Some(&alice), None).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        get(&app, &format!("/orders/{id}"), Some(&bob))
            .await
            .json::<Value>()
            .await
            .unwrap()["status"],
        "pending"
    );

    // Listing is scoped, with or without a filter.
    let customers = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|order| order["customer_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all: Value = get(&app, "/orders", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(customers(&all), ["alice", "alice"]);
    let filtered: Value = get(&app, "/orders?customer_id=bob", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(customers(&filtered), Vec::<String>::new());
    let own: Value = get(&app, "/orders?customer_id=alice", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(customers(&own).len(), 2);

    // An idempotent replay answers only the customer's own order: the same key is another
    // customer's new order.
    let keyed = |token: &str| {
        app.client
            .post(format!("{}/orders", app.address))
            .bearer_auth(token.to_owned())
            .header("Idempotency-Key", "shared-key-1")
            .json(&order_for(None))
            .send()
    };
    let first: Value = keyed(&alice).await.unwrap().json().await.unwrap();
    let replay = keyed(&alice).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], first["id"]);
    let other = keyed(&bob).await.unwrap();
    assert!(other.headers().get("idempotent-replayed").is_none());
    let others: Value = other.json().await.unwrap();
    assert_ne!(others["id"], first["id"]);
    assert_eq!(others["customer_id"], "bob");

    // A customer is not an operator, here or through to the processor.
    assert_eq!(
        get(&app, "/processor/dead-letters", Some(&alice))
            .await
            .status(),
        403
    );
    let response = get(&app, "/dead-letters", Some(&alice)).await;
    assert_eq!(response.status(), 403);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}

#[tokio::test]
async fn operators_read_everything_and_use_the_operator_endpoints() {
    let issuer = TestIssuer::new();
    let app = spawn_with_issuer(&issuer).await;
    for customer in ["alice", "bob"] {
        let response = post(&app, Some(&issuer.customer(customer)), &order_for(None)).await;
        assert_eq!(response.status(), 201);
    }
    for operator in [issuer.operator("olga"), STATIC_TOKEN.to_owned()] {
        let page: Value = get(&app, "/orders", Some(&operator))
            .await
            .json()
            .await
            .unwrap();
        let customers: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|order| order["customer_id"].as_str().unwrap())
            .collect();
        assert!(
            customers.contains(&"alice") && customers.contains(&"bob"),
            "{customers:?}"
        );
        let id = page["items"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            get(&app, &format!("/orders/{id}"), Some(&operator))
                .await
                .status(),
            200
        );
        assert_eq!(
            get(&app, "/dead-letters", Some(&operator)).await.status(),
            200
        );
        // An operator names the customer of an order it places.
        let response = post(&app, Some(&operator), &order_for(None)).await;
        assert_eq!(response.status(), 403);
        let response = post(&app, Some(&operator), &order_for(Some("carol"))).await;
        assert_eq!(response.status(), 201);
    }
    // With keys configured, loopback is no way in without a token.
    assert_unauthorized(
        get(&app, "/orders", None).await,
        None,
        "loopback without a token",
    )
    .await;
    // Monitoring needs no token.
    for path in ["/health", "/ready", "/metrics"] {
        let response = get(&app, path, None).await;
        assert_ne!(response.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn keys_come_from_a_jwks_fetched_again_for_an_unknown_kid() {
    let issuer = TestIssuer::new();
    let provider = JwksServer::start(issuer.jwks("key-1")).await;
    let url = provider.url.clone();
    let app = spawn_app_with(|settings| {
        settings.auth.issuer = Some(ISSUER.into());
        settings.auth.audience = Some(AUDIENCE.into());
        settings.auth.jwks_url = Some(url);
        settings.auth.jwks_min_refresh = std::time::Duration::from_secs(1);
    })
    .await;
    assert_eq!(provider.fetches(), 1, "fetched once at start");
    let claims = TestIssuer::claims("alice");
    let token = issuer.sign(Signer::Rsa(Some("key-1")), &claims);
    assert_eq!(
        post(&app, Some(&token), &order_for(None)).await.status(),
        201
    );
    assert_eq!(
        provider.fetches(),
        1,
        "a known kid is served from the cache"
    );

    // The provider rotates to a new key id: a token with it is accepted once the set is fetched
    // again (at most once a second).
    provider.replace(issuer.jwks("key-2"));
    let rotated = issuer.sign(Signer::Rsa(Some("key-2")), &claims);
    test_support::wait_until(
        "a token of the rotated key to be accepted",
        DEADLINE,
        || async {
            (post(&app, Some(&rotated), &order_for(None)).await.status() == 201).then_some(())
        },
    )
    .await;
    let unknown = issuer.sign(Signer::Rsa(Some("key-3")), &claims);
    assert_unauthorized(
        post(&app, Some(&unknown), &order_for(None)).await,
        Some("invalid_token"),
        "a kid the provider does not have",
    )
    .await;
    // An HS256 token is no token of a provider that publishes RSA keys.
    let hs = issuer.sign(Signer::RsaPublicKeyAsSecret, &claims);
    assert_unauthorized(
        post(&app, Some(&hs), &order_for(None)).await,
        Some("invalid_token"),
        "HS256 against a JWKS",
    )
    .await;
}

#[tokio::test]
async fn without_keys_a_loopback_client_is_an_operator_without_a_token() {
    let app = spawn_app().await;
    let response = post(&app, None, &order_for(Some("alice"))).await;
    assert_eq!(response.status(), 201);
    assert_eq!(get(&app, "/orders", None).await.status(), 200);
    assert_eq!(get(&app, "/dead-letters", None).await.status(), 200);
    // A request a local proxy forwarded is not a loopback client's.
    let response = app
        .client
        .get(format!("{}/orders", app.address))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_unauthorized(response, None, "forwarded by a proxy").await;
}

/// `order_service dev-token ...` with the development settings `scripts/dev-auth.sh` exports.
fn dev_token(key_file: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_order_service"))
        .arg("dev-token")
        .args(args)
        .env("ORDER_SERVICE__AUTH__ISSUER", "order-pipeline-dev")
        .env("ORDER_SERVICE__AUTH__AUDIENCE", "order-pipeline")
        .env("ORDER_SERVICE__AUTH__HS256_SECRET_FILE", key_file)
        .output()
        .expect("run order_service dev-token")
}

#[tokio::test]
async fn dev_token_generates_a_key_and_mints_tokens_the_service_accepts() {
    let key_file =
        std::env::temp_dir().join(format!("dev-jwt-{}/dev-jwt.key", test_support::unique_id()));
    let minted = |args: &[&str]| {
        let output = dev_token(&key_file, args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let customer = minted(&["--customer", "alice"]);
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.len(), 64, "32 random bytes, hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let operator = minted(&["--operator", "olga", "--minutes", "5"]);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the key is kept"
    );
    assert!(
        !dev_token(&key_file, &[]).status.success(),
        "who it is for is required"
    );

    let path = key_file.display().to_string();
    let app = spawn_app_with(|settings| {
        settings.auth.issuer = Some("order-pipeline-dev".into());
        settings.auth.audience = Some("order-pipeline".into());
        settings.auth.hs256_secret_file = Some(path);
        settings.auth.loopback_without_token = Some(true);
    })
    .await;
    let placed: Value = post(&app, Some(&customer), &order_for(None))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(placed["customer_id"], "alice");
    assert_eq!(
        get(&app, "/dead-letters", Some(&customer)).await.status(),
        403
    );
    assert_eq!(
        get(&app, "/dead-letters", Some(&operator)).await.status(),
        200
    );
    // The development setup keeps loopback clients in without a token.
    assert_eq!(get(&app, "/dead-letters", None).await.status(), 200);
    let _ = std::fs::remove_dir_all(key_file.parent().unwrap());
}

#[tokio::test]
async fn without_keys_a_client_on_another_host_is_refused() {
    let remote = test_support::netns::RemoteHost::create().expect("a network namespace");
    let app = spawn_app_with(|settings| settings.http.host = "0.0.0.0".into()).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let url = format!("http://{}:{port}/orders", remote.gateway);
    // Reachable from the other host (monitoring stays open)...
    let health = format!("http://{}:{port}/health", remote.gateway);
    assert_eq!(remote.http_status(&health, &[]), 200);
    // ...but without keys, only loopback clients get in without a token.
    assert_eq!(remote.http_status(&url, &[]), 401);
    assert_eq!(
        remote.http_status(&url, &["Authorization: Bearer made-up"]),
        401
    );
    assert_eq!(get(&app, "/orders", None).await.status(), 200);
}
