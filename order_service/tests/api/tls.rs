//! TLS to PostgreSQL, as the database URL's `sslmode` says, against a PostgreSQL instance of the
//! test's own that refuses connections without TLS.

use sea_orm::{ConnectionTrait, Database, Statement};
use test_support::tls::{TestCa, TlsPostgres};

use crate::helpers::spawn_app_with;

/// Builds (and drops) the service with the database `url`: whether it could start.
async fn build_with_url(url: String) -> anyhow::Result<()> {
    let id = test_support::unique_id();
    let mut settings = order_service::configuration::Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.database.url = service_kit::configuration::Secret::new(url);
    settings.amqp = test_support::amqp_settings(&id);
    let _cleanup = test_support::Cleanup {
        databases: Vec::new(),
        topology: Some(settings.amqp.topology.clone()),
        queues: settings.retry_tiers().queues(),
    };
    order_service::startup::build(settings).await.map(drop)
}

#[tokio::test]
async fn the_service_reaches_postgresql_over_verified_tls_and_a_wrong_ca_stops_start_up() {
    let ca = TestCa::new("pg");
    let server = TlsPostgres::start(&ca);
    let root = ca.ca_file().display().to_string();

    // verify-full: the certificate is the CA's and names the host.
    let url = server.url("orders", &format!("sslmode=verify-full&sslrootcert={root}"));
    let secret_url = url.clone();
    let app = spawn_app_with(move |settings| {
        settings.database.url = service_kit::configuration::Secret::new(secret_url);
    })
    .await;
    let order = app.create_order(&crate::helpers::valid_order()).await;
    assert_eq!(order["status"], "pending");
    // Every session of the service is encrypted (the server takes no other).
    let admin = Database::connect(server.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    ))
    .await
    .unwrap();
    let row = admin
        .query_one_raw(Statement::from_string(
            admin.get_database_backend(),
            "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) AS sessions \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'orders'",
        ))
        .await
        .unwrap()
        .unwrap();
    let (tls, sessions): (i64, i64) = (
        row.try_get("", "tls").unwrap(),
        row.try_get("", "sessions").unwrap(),
    );
    assert!(sessions > 0);
    assert_eq!(tls, sessions);

    // require: encrypted without checking the server.
    assert!(
        build_with_url(server.url("orders_require", "sslmode=require"))
            .await
            .is_ok()
    );

    // A CA that did not sign the server's certificate stops start-up, naming the setting.
    let other = TestCa::new("other");
    let wrong = server.url(
        "orders_wrong",
        &format!(
            "sslmode=verify-ca&sslrootcert={}",
            other.ca_file().display()
        ),
    );
    let error = build_with_url(wrong)
        .await
        .expect_err("a wrong CA is refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("ORDER_SERVICE__DATABASE__URL"),
        "{message}"
    );
    // Without sslmode the service does not try TLS, and this server takes nothing else.
    let plain = build_with_url(server.url("orders_plain", "application_name=plain"))
        .await
        .expect_err("no TLS, refused");
    assert!(format!("{plain:#}").contains("ORDER_SERVICE__DATABASE__URL"));
}

#[tokio::test]
async fn the_service_reaches_rabbitmq_over_amqps_with_a_client_certificate() {
    let ca = TestCa::new("amqp");
    let id = test_support::unique_id();
    let node = test_support::rabbit_node::RabbitNode::start_tls(&id, &ca).await;
    let port = node.tls_port().expect("a TLS listener");
    let (client_cert, client_key) = ca.issue_server("client");
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let (ca_file, cert, key) = (
        ca.ca_file().display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let app = spawn_app_with(|settings| {
        settings.amqp.url = service_kit::configuration::Secret::new(url.clone());
        settings.amqp.ca_file = Some(ca_file);
        settings.amqp.client_cert_file = Some(cert);
        settings.amqp.client_key_file = Some(key);
    })
    .await;
    // Ready: connected over TLS, its topology declared; an order's event is published there.
    let order = app.create_order(&crate::helpers::valid_order()).await;
    test_support::wait_until(
        "the order's event to be published over TLS",
        crate::helpers::DEADLINE,
        || async {
            let unsent = app
                .count(&format!(
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND event_id = '{}'",
                    order["id"].as_str().unwrap()
                ))
                .await;
            (unsent == 0 && app.get("/ready").await.status() == 200).then_some(())
        },
    )
    .await;

    // A CA that did not sign the broker's certificate stops start-up, naming the settings.
    let other = TestCa::new("other-amqp");
    let mut settings = order_service::configuration::Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.database = test_support::database_settings(&format!("orders_{id}_wrong"));
    settings.amqp = test_support::amqp_settings(&format!("{id}_wrong"));
    settings.amqp.url = service_kit::configuration::Secret::new(url);
    settings.amqp.ca_file = Some(other.ca_file().display().to_string());
    let _cleanup = test_support::Cleanup {
        databases: vec![settings.database.url.expose().to_owned()],
        topology: None,
        queues: Vec::new(),
    };
    let error = order_service::startup::build(settings)
        .await
        .map(drop)
        .expect_err("a wrong CA is refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("ORDER_SERVICE__AMQP__CA_FILE"),
        "{message}"
    );
}
