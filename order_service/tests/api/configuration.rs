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
fn a_database_url_of_another_kind_fails_start_up_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .env("ORDER_SERVICE__DATABASE__URL", "mysql://x/y")
        .output()
        .expect("run order_service");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ORDER_SERVICE__DATABASE__URL"));
}

#[test]
fn sigterm_stops_the_service_cleanly_with_exit_code_0() {
    use std::time::{Duration, Instant};

    let id = shared::testing::unique_id();
    let amqp = shared::testing::amqp_settings(&id);
    let database = shared::testing::database_settings(&format!("orders_{id}"));
    let _cleanup = shared::testing::Cleanup {
        databases: vec![database.url.expose().to_owned()],
        topology: Some(amqp.topology()),
        queues: Vec::new(),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_order_service"))
        .env("ORDER_SERVICE__HTTP__HOST", "127.0.0.1")
        .env("ORDER_SERVICE__HTTP__PORT", port.to_string())
        .env("ORDER_SERVICE__DATABASE__URL", database.url.expose())
        .env("ORDER_SERVICE__AMQP__URL", amqp.url.expose())
        .env("ORDER_SERVICE__AMQP__EXCHANGE", &amqp.exchange)
        .env(
            "ORDER_SERVICE__AMQP__DEAD_LETTER_EXCHANGE",
            &amqp.dead_letter_exchange,
        )
        .env(
            "ORDER_SERVICE__AMQP__ORDER_CREATED_QUEUE",
            &amqp.order_created_queue,
        )
        .env(
            "ORDER_SERVICE__AMQP__ORDER_PROCESSED_QUEUE",
            &amqp.order_processed_queue,
        )
        .env(
            "ORDER_SERVICE__AMQP__ORDER_CREATED_DEAD_LETTER_QUEUE",
            &amqp.order_created_dead_letter_queue,
        )
        .env(
            "ORDER_SERVICE__AMQP__ORDER_PROCESSED_DEAD_LETTER_QUEUE",
            &amqp.order_processed_dead_letter_queue,
        )
        .env("ORDER_SERVICE__SHUTDOWN__GRACE_SECONDS", "10")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start order_service");
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up {
            break;
        }
        assert!(Instant::now() < ready, "order_service did not start");
        assert!(
            child.try_wait().unwrap().is_none(),
            "order_service exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("order_service did not stop within its grace period");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}
