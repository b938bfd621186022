use std::time::Duration;

use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use order_service::configuration::Settings;
use order_service::startup;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use test_support::{BrokerProbe, Cleanup};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestApp {
    /// Stops the service when the test ends; declared first so it is dropped first.
    shutdown: DropGuard,
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub probe: BrokerProbe,
    /// A connection of the test's own, for looking at what the service stored.
    pub db: DatabaseConnection,
    handle: JoinHandle<anyhow::Result<()>>,
    cleanup: Cleanup,
}

/// A stopped service whose database and broker names are kept, to start it again.
pub struct StoppedApp {
    pub settings: Settings,
    cleanup: Cleanup,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service on a free port, with its own database and broker names, after `customize`.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    service_kit::telemetry::init_test_subscriber("order_service_test");
    let id = test_support::unique_id();
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.database = test_support::database_settings(&format!("orders_{id}"));
    settings.amqp = test_support::amqp_settings(&id);
    settings.outbox.poll_interval = std::time::Duration::from_millis(200);
    settings.shutdown.grace = std::time::Duration::from_secs(5);
    customize(&mut settings);
    let cleanup = Cleanup {
        databases: vec![settings.database.url.expose().to_owned()],
        topology: Some(settings.amqp.topology.clone()),
        queues: settings.retry_tiers().queues(),
    };
    start(settings, cleanup).await
}

async fn start(settings: Settings, cleanup: Cleanup) -> TestApp {
    settings.validate().expect("valid test settings");
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
        shutdown: shutdown.drop_guard(),
        address,
        client: reqwest::Client::new(),
        settings,
        probe,
        db,
        handle,
        cleanup,
    }
}

/// The processor's verdict on `order_id` (with a reason unless `completed`).
pub fn verdict(order_id: uuid::Uuid, status: ProcessingStatus) -> Envelope<OrderProcessed> {
    Envelope::new(
        order_id,
        OrderProcessed {
            order_id,
            status,
            reason: (status != ProcessingStatus::Completed).then(|| "because".to_owned()),
            processed_at: chrono::Utc::now(),
        },
    )
}

pub fn valid_order() -> Value {
    json!({
        "customer_id": "customer-123",
        "items": [{"product_id": "product-1", "quantity": 2, "price": 10.50}]
    })
}

impl TestApp {
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    /// Posts a valid order and returns its JSON.
    pub async fn create_order(&self, body: &Value) -> Value {
        let response = self.post_order(body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Waits until the order has `status`, and returns it.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        test_support::wait_until(&format!("order {id} to be {status}"), DEADLINE, || async {
            let order = self.get_json(&format!("/orders/{id}")).await;
            (order["status"] == status).then_some(order)
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

    /// Stops the service gracefully, keeping its database and broker names.
    pub async fn stop(self) -> StoppedApp {
        self.shutdown.disarm().cancel();
        self.handle
            .await
            .expect("service task")
            .expect("service stopped cleanly");
        let _ = self.db.close().await;
        StoppedApp {
            settings: self.settings,
            cleanup: self.cleanup,
        }
    }
}

impl StoppedApp {
    pub async fn restart(self, customize: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings;
        customize(&mut settings);
        start(settings, self.cleanup).await
    }
}
