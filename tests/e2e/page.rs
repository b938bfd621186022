//! The order page in a real browser (Debian's chromium through chromedriver): a customer fills
//! the order form with the keyboard alone, sees the order turn `completed` without a reload,
//! cancels another, sees the API's error; an operator sees the figures and the dead letters of
//! both queues; the page renders at 390 px. Screenshots go to `<target>/browser-artifacts/`.

use std::path::PathBuf;

use serde_json::json;
use test_support::webdriver::{Browser, keys};

use crate::helpers::spawn_pipeline_with;

fn artifacts() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    PathBuf::from(target).join("browser-artifacts")
}

/// The status the orders table shows for the order `id` (a script expression).
fn row_status(id: &str) -> String {
    format!("document.getElementById('order-{id}')?.dataset.status")
}

#[tokio::test]
async fn a_customer_and_an_operator_use_the_order_page_in_a_browser() {
    if !test_support::webdriver::available() {
        println!(
            "skipped: chromium and chromedriver are not installed (scripts/ensure-services.sh)"
        );
        return;
    }
    let processor_port = test_support::free_port();
    let mut pipeline = spawn_pipeline_with(|orders, processor| {
        processor.http.port = processor_port;
        orders.processor.url = format!("http://127.0.0.1:{processor_port}");
    })
    .await;
    let page = format!("{}/", pipeline.orders.address);
    let alice = pipeline.issuer.customer("alice");
    let operator = pipeline.issuer.operator("page-operator");
    let browser = Browser::start(1280, 1100).await;
    browser.goto(&page).await;
    browser
        .wait_for(
            "the page's script",
            "return document.querySelector('#lines .line') !== null;",
        )
        .await;

    // The customer's token, pasted.
    browser.fill("#token", &alice).await;
    browser.click("#auth button[type=submit]").await;
    browser
        .wait_for(
            "the live stream",
            "return document.getElementById('live').textContent.includes('connected');",
        )
        .await;

    // The form with the keyboard alone: from the token's button, Tab to each field in turn.
    browser
        .script(
            "window.notReloaded = true; document.querySelector('#auth button').focus();",
            json!([]),
        )
        .await;
    browser.press(keys::TAB).await;
    assert_eq!(browser.focused().await, "customer_id");
    browser.press("alice").await;
    browser.press(keys::TAB).await;
    assert_eq!(browser.focused().await, "line-1-product_id");
    browser
        .press(&format!("widget{}2{}10.50", keys::TAB, keys::TAB))
        .await;
    browser.press(keys::TAB).await; // Remove
    browser.press(keys::TAB).await; // Add a line
    browser.press(keys::TAB).await;
    assert_eq!(browser.focused().await, "place-submit");
    browser.press(keys::ENTER).await;
    let placed = browser
        .wait_for(
            "the order to be placed",
            "const t = document.getElementById('placed').textContent; return t.includes('placed') ? t : null;",
        )
        .await;
    let id = placed
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    // Completed, live, without a reload.
    browser
        .wait_for(
            "the order to turn completed",
            &format!("return ({}) === 'completed';", row_status(&id)),
        )
        .await;
    assert_eq!(
        browser
            .script("return window.notReloaded === true;", json!([]))
            .await,
        json!(true)
    );
    let order = pipeline
        .get(pipeline.orders_url(&format!("/orders/{id}")))
        .await;
    assert_eq!(order["status"], "completed");
    assert_eq!(order["total_amount"], "21.00");

    // Another order, cancelled while pending (the processor is stopped meanwhile).
    pipeline.stop_processor().await;
    browser.fill("#line-1-product_id", "gadget").await;
    browser.fill("#line-1-quantity", "1").await;
    browser.fill("#line-1-price", "3.00").await;
    browser
        .script(
            "document.getElementById('placed').textContent = '';",
            json!([]),
        )
        .await;
    browser.click("#place-submit").await;
    let placed = browser
        .wait_for(
            "the second order",
            "const t = document.getElementById('placed').textContent; return t.includes('placed') ? t : null;",
        )
        .await;
    let second = placed
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    browser.click(&format!("#order-{second} button")).await;
    browser
        .wait_for(
            "the order to show cancelled",
            &format!("return ({}) === 'cancelled';", row_status(&second)),
        )
        .await;
    pipeline.start_processor().await;
    pipeline
        .assert_agreement(&[id.clone(), second.clone()])
        .await;

    // The API's error, as it gave it, with the field marked.
    browser.fill("#line-1-price", "10.501").await;
    browser.click("#place-submit").await;
    let problem = browser
        .wait_for(
            "the problem to show",
            "const p = document.getElementById('problem'); return p.hidden ? null : p.textContent;",
        )
        .await;
    let problem = problem.as_str().unwrap();
    assert!(problem.contains("422"), "{problem}");
    assert!(problem.contains("items[0].price"), "{problem}");
    assert_eq!(
        browser
            .script(
                "return document.getElementById('line-1-price').getAttribute('aria-invalid');",
                json!([])
            )
            .await,
        json!("true")
    );
    browser.screenshot(&artifacts().join("customer.png")).await;

    // The operator view: figures, and the dead letters of both queues (a poison message in the
    // processor's, reached through the order service).
    let amqp = pipeline.processor_settings.amqp.clone();
    pipeline
        .probe
        .publish_raw(
            "order.created",
            b"not an event",
            lapin::BasicProperties::default().with_message_id("poison-1".into()),
        )
        .await;
    // And an order.created whose total disagrees with its lines: failed, dead-lettered under its
    // order, replayable.
    let bad_id = uuid::Uuid::now_v7();
    let bad = contracts::events::Envelope::with_id(
        bad_id,
        bad_id,
        chrono::Utc::now(),
        contracts::events::OrderCreated {
            order_id: bad_id,
            customer_id: "mallory".into(),
            items: vec![contracts::events::OrderLine {
                product_id: "p".into(),
                quantity: 1,
                price: "1.00".parse().unwrap(),
            }],
            total_amount: "2.00".parse().unwrap(),
            created_at: chrono::Utc::now(),
        },
    );
    pipeline.probe.publish(&bad).await;
    test_support::wait_until(
        "both messages to be dead-lettered",
        crate::helpers::DEADLINE,
        || async {
            (pipeline
                .probe
                .message_count(&amqp.topology.order_created_dead_letter_queue)
                .await
                == 2)
                .then_some(())
        },
    )
    .await;
    browser.fill("#token", &operator).await;
    browser.click("#auth button[type=submit]").await;
    browser.click("#tab-operator").await;
    let figures = browser
        .wait_for("the figures", "const f = document.getElementById('figures'); return f.children.length ? f.textContent : null;")
        .await;
    assert!(figures.as_str().unwrap().contains("Cancelled"), "{figures}");
    let letters = browser
        .wait_for(
            "both queues' dead letters",
            "const d = document.getElementById('dead-letters'); return d.querySelectorAll('.card p').length === 2 ? d.textContent : null;",
        )
        .await;
    let letters = letters.as_str().unwrap();
    assert!(letters.contains("order.created (processor)"), "{letters}");
    assert!(letters.contains("2 dead letter(s)"), "{letters}");
    assert!(
        letters.contains("differs from the sum of its items"),
        "{letters}"
    );
    browser.screenshot(&artifacts().join("operator.png")).await;
    // Replayed from the page, through the order service, to the processor's work queue.
    browser
        .click(&format!("button[aria-label='Replay order {bad_id}']"))
        .await;
    browser
        .wait_for(
            "the replay",
            "return document.getElementById('operator-status').textContent.includes('1 replayed from order.created');",
        )
        .await;

    // A phone's width: nothing wider than the screen (tables scroll inside their box).
    browser.click("#tab-customer").await;
    browser.resize(390, 844).await;
    let width = browser
        .wait_for(
            "the narrow layout",
            "return window.innerWidth <= 400 ? document.documentElement.scrollWidth : null;",
        )
        .await;
    let inner = browser.script("return window.innerWidth;", json!([])).await;
    assert!(
        width.as_u64().unwrap() <= inner.as_u64().unwrap(),
        "{width} > {inner}"
    );
    browser.screenshot(&artifacts().join("phone-390.png")).await;
    browser.quit().await;
}
