//! Start-up with a bad setting fails with a message naming the variable.

use std::process::Command;

fn start_with(variable: &str, value: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_processor_service"))
        .env(variable, value)
        // If the setting were accepted, start-up would fail here instead, without naming it.
        .env(
            "PROCESSOR_SERVICE__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .expect("run processor_service");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_values_fail_start_up_naming_the_variable() {
    for (variable, value) in [
        ("PROCESSOR_SERVICE__RULES__MAX_ORDER_TOTAL", "lots"),
        ("PROCESSOR_SERVICE__RULES__MAX_ORDER_TOTAL", "-1"),
        ("PROCESSOR_SERVICE__WORK__DELAY_MS", "soon"),
        ("PROCESSOR_SERVICE__AMQP__PREFETCH", "70000"),
        ("PROCESSOR_SERVICE__HTTP__PORT", "-5"),
        ("PROCESSOR_SERVICE__FAULTS__TRANSIENT_FAILURE_RATE", "1.5"),
        ("PROCESSOR_SERVICE__FAULTS__TRANSIENT_FAILURE_RATE", "-0.1"),
        ("PROCESSOR_SERVICE__RETRY__MAX_ATTEMPTS", "0"),
        ("PROCESSOR_SERVICE__RETRY__IMMEDIATE_ATTEMPTS", "0"),
        ("PROCESSOR_SERVICE__RETRY__MAX_DELAY_MS", "10"),
        ("PROCESSOR_SERVICE__AMQP__GROUP_LINGER_MS", "5000"),
        ("PROCESSOR_SERVICE__DATABASE__PING_AFTER_IDLE_MS", "4000000"),
        ("PROCESSOR_SERVICE__DATABASE__PING_AFTER_IDLE_MS", "soon"),
        ("PROCESSOR_SERVICE__RUNTIME__WORKER_THREADS", "0"),
        ("PROCESSOR_SERVICE__RUNTIME__WORKER_THREADS", "many"),
    ] {
        let stderr = start_with(variable, value);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

#[test]
fn sigterm_stops_the_service_cleanly_with_exit_code_0() {
    test_support::assert_sigterm_exits_cleanly(
        env!("CARGO_BIN_EXE_processor_service"),
        "PROCESSOR_SERVICE",
        "processor",
        // It declares the retry queues of its default settings on these names.
        |amqp| {
            processor_service::configuration::Settings {
                amqp: amqp.clone(),
                ..Default::default()
            }
            .retry_tiers()
            .queues()
        },
    );
}
