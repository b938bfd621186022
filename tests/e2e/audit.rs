//! Operator actions leave an audit line in the service's log: who, what, on which queue and how
//! many (or which order); a refused attempt leaves one too, with the client's address and never
//! the token.

use serde_json::Value;

use crate::helpers::DEADLINE;
use crate::processes;

const TOKEN: &str = "audit-operator-token-0123456789abcdef";

/// The JSON log lines of `file` written under the `audit` target.
fn audit_lines(file: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect()
}

#[tokio::test]
async fn operator_actions_and_refused_attempts_are_audited_in_the_log() {
    let logs = std::env::temp_dir().join(format!("audit-{}", test_support::unique_id()));
    std::fs::create_dir_all(&logs).unwrap();
    let issuer = test_support::identity::TestIssuer::new();
    let processes = processes::start(
        &[
            ("PROCESSOR_SERVICE__ADMIN__TOKEN", TOKEN.into()),
            (
                "ORDER_SERVICE__AUTH__ISSUER",
                test_support::identity::ISSUER.into(),
            ),
            (
                "ORDER_SERVICE__AUTH__AUDIENCE",
                test_support::identity::AUDIENCE.into(),
            ),
            ("ORDER_SERVICE__AUTH__HS256_SECRET", issuer.secret.clone()),
            (
                "PROCESSOR_SERVICE__AUTH__ISSUER",
                test_support::identity::ISSUER.into(),
            ),
            (
                "PROCESSOR_SERVICE__AUTH__AUDIENCE",
                test_support::identity::AUDIENCE.into(),
            ),
            (
                "PROCESSOR_SERVICE__AUTH__HS256_SECRET",
                issuer.secret.clone(),
            ),
        ],
        Some(&logs),
    )
    .await;
    let client = reqwest::Client::new();
    let url = &processes.processor_url;
    let call = |method: reqwest::Method, path: &str, token: &str| {
        client
            .request(method, format!("{url}{path}"))
            .bearer_auth(token)
            .send()
    };
    let guess = "a-guess-that-is-not-the-operator-token";
    let (operator, customer) = (issuer.operator("olga"), issuer.customer("alice"));
    for (method, path, token, status) in [
        (reqwest::Method::GET, "/dead-letters", TOKEN, 200),
        (reqwest::Method::POST, "/dead-letters/replay", TOKEN, 200),
        (reqwest::Method::POST, "/dead-letters/replay", guess, 401),
        (
            reqwest::Method::GET,
            "/dead-letters",
            operator.as_str(),
            200,
        ),
        (
            reqwest::Method::GET,
            "/dead-letters",
            customer.as_str(),
            403,
        ),
    ] {
        let response = call(method, path, token).await.unwrap();
        assert_eq!(response.status(), status, "{path}");
    }

    // An operator cancelling a customer's order is audited; the customer's own cancellation is
    // the order's history, not an operator action.
    let orders = &processes.orders_url;
    let mut cancelled = Vec::new();
    // The customer's first: written before the operator's line, it would be found with it.
    for canceller in [&customer, &operator] {
        let placed: Value = client
            .post(format!("{orders}/orders"))
            .bearer_auth(&customer)
            .json(&crate::helpers::order("alice", 1, "2.00"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = placed["id"].as_str().unwrap().to_owned();
        let response = client
            .post(format!("{orders}/orders/{id}/cancel"))
            .bearer_auth(canceller)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{id}");
        cancelled.push(id);
    }

    let file = logs.join("processor_service.log");
    let lines = test_support::wait_until("five audit lines", DEADLINE, || async {
        let lines = audit_lines(&file);
        (lines.len() >= 5).then_some(lines)
    })
    .await;
    let queue = processes.topology.order_created_dead_letter_queue.as_str();
    for (line, action) in lines[..2]
        .iter()
        .zip(["list dead letters", "replay dead letters"])
    {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["subject"], "static-token", "{line}");
        assert_eq!(line["action"], action, "{line}");
        assert_eq!(line["queue"], queue, "{line}");
        assert_eq!(line["count"], 0, "nothing dead-lettered yet: {line}");
        assert_eq!(line["outcome"], "done", "{line}");
    }
    let refusal = &lines[2];
    assert_eq!(refusal["level"], "WARN", "{refusal}");
    assert_eq!(refusal["action"], "replay dead letters", "{refusal}");
    assert_eq!(refusal["outcome"], "refused", "{refusal}");
    assert_eq!(refusal["client"], "127.0.0.1", "{refusal}");
    // An operator's JWT is audited under its `sub`; a customer's is refused.
    assert_eq!(lines[3]["subject"], "olga", "{}", lines[3]);
    assert_eq!(lines[3]["action"], "list dead letters", "{}", lines[3]);
    assert_eq!(lines[4]["outcome"], "refused", "{}", lines[4]);
    assert_eq!(lines[4]["reason"], "Forbidden", "{}", lines[4]);
    let orders_log = logs.join("order_service.log");
    let order_lines =
        test_support::wait_until("the cancellation's audit line", DEADLINE, || async {
            let lines = audit_lines(&orders_log);
            (!lines.is_empty()).then_some(lines)
        })
        .await;
    let line = &order_lines[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["subject"], "olga", "{line}");
    assert_eq!(line["action"], "cancel order", "{line}");
    assert_eq!(line["order_id"], cancelled[1].as_str(), "{line}");
    assert_eq!(line["outcome"], "done", "{line}");
    assert!(
        !std::fs::read_to_string(&orders_log)
            .unwrap()
            .lines()
            .any(|l| l.contains("\"target\":\"audit\"") && l.contains(&cancelled[0])),
        "the customer's own cancellation is no operator action"
    );
    let log = std::fs::read_to_string(&file).unwrap();
    assert!(!log.contains(TOKEN), "the token is never logged");
    assert!(!log.contains(guess), "nor a wrong one");
    assert!(
        !log.contains(&operator) && !log.contains(&issuer.secret),
        "nor a JWT or its key"
    );
}
