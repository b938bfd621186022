//! The order page's files, served from the binary with a policy that allows nothing from
//! elsewhere, and the way through to the processor's dead letters when the processor is away.

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn the_page_and_its_files_come_from_this_origin_only() {
    let app = spawn_app().await;
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<form id=\"place\""),
        (
            "/page/app.js",
            "text/javascript; charset=utf-8",
            "/orders/events",
        ),
        ("/page/style.css", "text/css; charset=utf-8", "@media"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        // Nothing from the internet.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_processors_dead_letters_are_a_problem_while_it_does_not_answer() {
    // A port nothing listens on: the connection is refused.
    let port = test_support::free_port();
    let app = spawn_app_with(|settings| {
        settings.processor.url = format!("http://127.0.0.1:{port}");
    })
    .await;
    let response = app.get("/processor/dead-letters").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("processor"),
        "{problem}"
    );
    let response = app
        .client
        .post(format!("{}/processor/dead-letters/replay", app.address))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}
