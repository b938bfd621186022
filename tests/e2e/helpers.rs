use std::time::Duration;

use serde_json::{Value, json};
use shared::testing::{self, Cleanup};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Both services, sharing one test's broker names, each with its own database.
pub struct Pipeline {
    _shutdown: DropGuard,
    pub orders: String,
    pub processor: String,
    pub client: reqwest::Client,
    _handles: Vec<JoinHandle<anyhow::Result<()>>>,
    _cleanup: Cleanup,
}

pub async fn spawn_pipeline(max_order_total: &str) -> Pipeline {
    shared::telemetry::init_test_subscriber("e2e");
    let id = testing::unique_id();
    let amqp = testing::amqp_settings(&id);

    let mut order_settings = order_service::configuration::Settings::default();
    order_settings.http.host = "127.0.0.1".into();
    order_settings.http.port = 0;
    order_settings.database = testing::database_settings(&format!("orders_{id}"));
    order_settings.amqp = amqp.clone();
    order_settings.shutdown.grace_seconds = 5;

    let mut processor_settings = processor_service::configuration::Settings::default();
    processor_settings.http.host = "127.0.0.1".into();
    processor_settings.http.port = 0;
    processor_settings.database = testing::database_settings(&format!("processor_{id}"));
    processor_settings.amqp = amqp.clone();
    processor_settings.shutdown.grace_seconds = 5;
    processor_settings.rules.max_order_total = max_order_total.parse().unwrap();

    let cleanup = Cleanup {
        databases: vec![
            order_settings.database.url.expose().to_owned(),
            processor_settings.database.url.expose().to_owned(),
        ],
        topology: Some(amqp.topology()),
        queues: processor_settings.retry_tiers().queues(),
    };
    let order_app = order_service::startup::Application::build(order_settings)
        .await
        .expect("build order_service");
    let processor_app = processor_service::startup::Application::build(processor_settings)
        .await
        .expect("build processor_service");
    let orders = format!("http://127.0.0.1:{}", order_app.port());
    let processor = format!("http://127.0.0.1:{}", processor_app.port());
    let shutdown = CancellationToken::new();
    let handles = vec![
        tokio::spawn(order_app.run_until_stopped(shutdown.clone())),
        tokio::spawn(processor_app.run_until_stopped(shutdown.clone())),
    ];
    Pipeline {
        _shutdown: shutdown.drop_guard(),
        orders,
        processor,
        client: reqwest::Client::new(),
        _handles: handles,
        _cleanup: cleanup,
    }
}

pub fn order(customer: &str, quantity: u32, price: &str) -> Value {
    json!({"customer_id": customer, "items": [{"product_id": "product-1", "quantity": quantity, "price": price}]})
}

impl Pipeline {
    pub async fn place(&self, body: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}/orders", self.orders))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub async fn get(&self, url: String) -> Value {
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Waits until the order leaves `pending`, and returns it.
    pub async fn wait_until_final(&self, id: &str) -> Value {
        testing::wait_until(&format!("order {id} to be final"), DEADLINE, || async {
            let order = self.get(format!("{}/orders/{id}", self.orders)).await;
            (order["status"] != "pending").then_some(order)
        })
        .await
    }
}
