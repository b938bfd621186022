use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn an_unknown_order_has_no_record_404_and_a_bad_id_is_400() {
    let app = spawn_app().await;
    let response = app
        .get(&format!("/processed/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = app.get("/processed/nope").await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "order_id");
}

#[tokio::test]
async fn health_and_readiness_report_the_dependencies() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await.status(), 200);
    let body = test_support::wait_until("readiness", crate::helpers::DEADLINE, || async {
        let response = app.get("/ready").await;
        (response.status() == 200).then_some(response.json::<Value>().await.unwrap())
    })
    .await;
    assert_eq!(body["checks"]["broker"], "ok");
    assert_eq!(body["checks"]["database"], "ok");
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_complete() {
    let app = spawn_app().await;
    let response = app.get("/api-docs/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(document.clone()).expect("parses as OpenAPI");
    assert_eq!(parsed.info.title, "processor_service");
    test_support::identity::assert_protected_operations_declare_bearer(&document);
    for (path, statuses) in [
        ("/processed/{order_id}", &["200", "400", "404", "503"][..]),
        ("/health", &["200"][..]),
        ("/ready", &["200", "503"][..]),
    ] {
        for status in statuses {
            assert!(
                document["paths"][path]["get"]["responses"][status].is_object(),
                "GET {path} documents {status}"
            );
        }
    }
    for schema in ["ProcessedResponse", "Problem", "HealthReport"] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    assert_eq!(app.get("/docs/").await.status(), 200);
}

/// schemathesis against the document: every operation, every check, a fixed seed, 100 examples
/// per operation.
#[tokio::test]
async fn schemathesis_finds_nothing_in_any_operation() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.admin = test_support::schemathesis::admin_settings();
    })
    .await;
    test_support::schemathesis::fuzz_service(&app.address, 300).await;
}
