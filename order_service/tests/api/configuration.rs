//! Start-up with a bad setting fails with a message naming the variable.

use std::process::Command;

fn start_with(variable: &str, value: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .env(variable, value)
        // Never reach a real start: if the setting were accepted, this one fails it instead.
        .env(
            "ORDER_SERVICE__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .expect("run order_service");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_non_numeric_port_fails_start_up_naming_the_variable() {
    let (ok, stderr) = start_with("ORDER_SERVICE__HTTP__PORT", "eighty");
    assert!(!ok);
    assert!(stderr.contains("ORDER_SERVICE__HTTP__PORT"), "{stderr}");
}

#[test]
fn an_out_of_range_prefetch_fails_start_up_naming_the_variable() {
    let (ok, stderr) = start_with("ORDER_SERVICE__AMQP__PREFETCH", "0");
    assert!(!ok);
    assert!(stderr.contains("ORDER_SERVICE__AMQP__PREFETCH"), "{stderr}");
}

#[test]
fn broker_addresses_that_are_not_amqp_urls_fail_start_up_naming_the_variable() {
    for value in [
        ",",
        "amqp://guest:guest@127.0.0.1:5672/%2f, http://elsewhere",
    ] {
        let (ok, stderr) = start_with("ORDER_SERVICE__AMQP__URLS", value);
        assert!(!ok);
        assert!(
            stderr.contains("ORDER_SERVICE__AMQP__URLS"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn an_unknown_queue_type_fails_start_up_naming_the_variable() {
    let (ok, stderr) = start_with("ORDER_SERVICE__AMQP__QUEUE_TYPE", "stream");
    assert!(!ok);
    assert!(
        stderr.contains("ORDER_SERVICE__AMQP__QUEUE_TYPE"),
        "{stderr}"
    );
}

#[test]
fn a_bad_delivery_limit_fails_start_up_naming_the_variable() {
    for value in ["x", "-1", "4294967296"] {
        let (ok, stderr) = start_with("ORDER_SERVICE__AMQP__DELIVERY_LIMIT", value);
        assert!(!ok);
        assert!(
            stderr.contains("ORDER_SERVICE__AMQP__DELIVERY_LIMIT"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn a_misspelt_setting_fails_start_up_naming_the_variable() {
    for variable in [
        "ORDER_SERVICE__AMQP__EXCHNAGE",
        "ORDER_SERVICE__OUTBOX__POLL_INTERVAL",
    ] {
        let (ok, stderr) = start_with(variable, "1");
        assert!(!ok);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

#[test]
fn a_runtime_without_worker_threads_fails_start_up_naming_the_variable() {
    for value in ["0", "many"] {
        let (ok, stderr) = start_with("ORDER_SERVICE__RUNTIME__WORKER_THREADS", value);
        assert!(!ok);
        assert!(
            stderr.contains("ORDER_SERVICE__RUNTIME__WORKER_THREADS"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn a_database_url_of_another_kind_fails_start_up_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .env("ORDER_SERVICE__DATABASE__URL", "mysql://x/y")
        .output()
        .expect("run order_service");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ORDER_SERVICE__DATABASE__URL"));
}

#[test]
fn a_database_that_refuses_the_configured_user_fails_start_up_naming_the_variable() {
    // The server answers, and refuses the session: role "nobody_here" does not exist.
    let url = format!(
        "{}/orders_nobody",
        test_support::database_server().replace("postgres@", "nobody_here@")
    );
    let output = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .env("ORDER_SERVICE__DATABASE__URL", &url)
        .output()
        .expect("run order_service");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ORDER_SERVICE__DATABASE__URL"), "{stderr}");
    assert!(stderr.contains("nobody_here"), "{stderr}");
}

#[test]
fn sigterm_stops_the_service_cleanly_with_exit_code_0() {
    test_support::assert_sigterm_exits_cleanly(
        env!("CARGO_BIN_EXE_order_service"),
        "ORDER_SERVICE",
        "orders",
        |_| Vec::new(),
    );
}
