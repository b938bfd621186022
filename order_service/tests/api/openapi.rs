//! The OpenAPI document is valid (it parses as OpenAPI, every reference resolves) and complete
//! (every endpoint, its error responses, and examples).

use serde_json::Value;

use crate::helpers::spawn_app;

fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                found.push(reference.clone());
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_complete() {
    let app = spawn_app().await;
    let document = app.get_json("/api-docs/openapi.json").await;
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(document.clone()).expect("parses as OpenAPI");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(parsed.info.title, "order_service");
    test_support::identity::assert_protected_operations_declare_bearer(&document);

    let expected: &[(&str, &str, &[&str])] = &[
        (
            "/orders",
            "post",
            &["201", "400", "408", "409", "413", "422", "503"],
        ),
        ("/orders", "get", &["200", "400", "422", "503"]),
        ("/orders/{id}", "get", &["200", "400", "404", "503"]),
        ("/orders/{id}/history", "get", &["200", "400", "404", "503"]),
        (
            "/orders/{id}/cancel",
            "post",
            &["200", "400", "404", "409", "503"],
        ),
        ("/orders/{id}/events", "get", &["200", "400", "404", "503"]),
        ("/orders/events", "get", &["200", "400", "503"]),
        ("/stats", "get", &["200", "400", "422", "503"]),
        ("/health", "get", &["200"]),
        ("/ready", "get", &["200", "503"]),
    ];
    for (path, method, statuses) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        for status in *statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} documents {status}"
            );
        }
    }
    let problem = &document["paths"]["/orders"]["post"]["responses"]["422"]["content"]["application/problem+json"];
    assert!(problem.is_object(), "errors are documented as problem+json");
    assert!(
        document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["example"]
            .is_object()
            || document["components"]["schemas"]["CreateOrderRequest"]["example"].is_object(),
        "the request has an example"
    );
    // Safe retries are part of the contract: the header, and how a replay is told apart.
    let post = &document["paths"]["/orders"]["post"];
    let key = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("POST /orders documents Idempotency-Key");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], false);
    assert!(post["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    for schema in [
        "CreateOrderRequest",
        "OrderResponse",
        "OrderPage",
        "HistoryEntry",
        "Problem",
        "HealthReport",
        "OrderStatus",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    let mut refs = Vec::new();
    references(&document, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {reference}"));
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{reference} resolves"
        );
    }
}

/// schemathesis against the document: every operation but the event streams, every check (no 5xx, only documented
/// statuses, responses and problem details as documented, schema-valid requests accepted and
/// invalid ones refused, 405 with `Allow` for undeclared methods), a fixed seed, 100 examples per
/// operation.
#[tokio::test]
async fn schemathesis_finds_nothing_in_any_operation() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.admin = test_support::schemathesis::admin_settings();
    })
    .await;
    test_support::schemathesis::fuzz_service(&app.address, 800).await;
}

#[tokio::test]
async fn the_documented_patterns_are_the_parsers() {
    let app = spawn_app().await;
    let document = app.get_json("/api-docs/openapi.json").await;
    let key = document["paths"]["/orders"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(
        key["schema"]["pattern"],
        order_service::domain::IdempotencyKey::PATTERN
    );
    let customer =
        &document["components"]["schemas"]["CreateOrderRequest"]["properties"]["customer_id"];
    assert_eq!(
        customer["pattern"],
        order_service::domain::identifier_pattern()
    );
    assert_eq!(customer["maxLength"], 64);
}
