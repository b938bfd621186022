use std::time::Duration;

use chrono::Utc;
use contracts::events::{Envelope, OrderCreated, OrderLine};
use processor_service::configuration::Settings;
use processor_service::startup;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::Value;
use test_support::{BrokerProbe, Cleanup};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(20);
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

pub struct TestApp {
    /// Stops the service when the test ends; declared first so it is dropped first.
    _shutdown: DropGuard,
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub probe: BrokerProbe,
    pub db: DatabaseConnection,
    _handle: JoinHandle<anyhow::Result<()>>,
    _cleanup: Cleanup,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    service_kit::telemetry::init_test_subscriber("processor_service_test");
    let id = test_support::unique_id();
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.database = test_support::database_settings(&format!("processor_{id}"));
    settings.amqp = test_support::amqp_settings(&id);
    settings.shutdown.grace = std::time::Duration::from_secs(5);
    settings.admin.token = Some(service_kit::configuration::Secret::new(ADMIN_TOKEN));
    customize(&mut settings);
    settings.validate().expect("valid test settings");
    let cleanup = Cleanup {
        databases: vec![settings.database.url.expose().to_owned()],
        topology: Some(settings.amqp.topology.clone()),
        queues: settings.retry_tiers().queues(),
    };
    let probe = BrokerProbe::connect(settings.amqp.topology.clone()).await;
    let application = startup::build(settings.clone())
        .await
        .expect("build the application");
    let address = format!("http://127.0.0.1:{}", application.port());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let db = Database::connect(settings.database.url.expose())
        .await
        .expect("connect to the test database");
    TestApp {
        _shutdown: shutdown.drop_guard(),
        address,
        client: reqwest::Client::new(),
        settings,
        probe,
        db,
        _handle: handle,
        _cleanup: cleanup,
    }
}

/// An `order.created` event for one line of `quantity` x `price`.
pub fn order_created(quantity: u32, price: &str) -> Envelope<OrderCreated> {
    let order_id = Uuid::new_v4();
    let price: Decimal = price.parse().unwrap();
    Envelope::new(
        order_id,
        OrderCreated {
            order_id,
            customer_id: "customer-123".into(),
            items: vec![OrderLine {
                product_id: "product-1".into(),
                quantity,
                price,
            }],
            total_amount: price * Decimal::from(quantity),
            created_at: Utc::now(),
        },
    )
}

impl TestApp {
    /// `GET path` as the operator (the static token).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET")
    }

    /// Waits until the order's processing record satisfies `done`, and returns it.
    pub async fn wait_for_record(&self, order_id: Uuid, done: impl Fn(&Value) -> bool) -> Value {
        test_support::wait_until(&format!("the record of {order_id}"), DEADLINE, || async {
            let response = self.get(&format!("/processed/{order_id}")).await;
            if response.status() != 200 {
                return None;
            }
            let record: Value = response.json().await.unwrap();
            done(&record).then_some(record)
        })
        .await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }
}
