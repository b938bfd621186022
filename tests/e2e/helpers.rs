use std::sync::Arc;
use std::time::Duration;

use order_service::configuration::Settings as OrderSettings;
use processor_service::configuration::Settings as ProcessorSettings;
use serde_json::{Value, json};
use test_support::identity::TestIssuer;
use test_support::{BrokerProbe, Cleanup};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(60);
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef0";

/// One running service, stopped when dropped.
pub struct Service {
    pub address: String,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    fn spawn<F>(port: u16, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            shutdown,
            handle: Some(handle),
        }
    }

    /// Stops gracefully and waits for it.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("service task").expect("clean stop");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Both services, sharing one test's broker names, each with its own database, trusting one
/// test issuer's tokens: `client` is an operator's (it reads everything and names the customer of
/// each order it places); a test acting as a customer signs its own with `issuer`.
pub struct Pipeline {
    pub orders: Service,
    pub processor: Service,
    pub order_settings: OrderSettings,
    pub processor_settings: ProcessorSettings,
    pub probe: BrokerProbe,
    pub client: reqwest::Client,
    pub issuer: Arc<TestIssuer>,
    _cleanup: Cleanup,
}

/// A client that sends `token` with every request and gives up on a request after 30 s (a test
/// whose server hangs fails instead of waiting forever).
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn spawn_pipeline(max_order_total: &str) -> Pipeline {
    let max: rust_decimal::Decimal = max_order_total.parse().unwrap();
    spawn_pipeline_with(|_, processor| processor.rules.max_order_total = max).await
}

pub async fn spawn_pipeline_with(
    customize: impl FnOnce(&mut OrderSettings, &mut ProcessorSettings),
) -> Pipeline {
    service_kit::telemetry::init_test_subscriber("e2e");
    let id = test_support::unique_id();
    let issuer = Arc::new(TestIssuer::new());
    let amqp = test_support::amqp_settings(&id);

    let mut order_settings = OrderSettings::default();
    order_settings.http.host = "127.0.0.1".into();
    order_settings.http.port = 0;
    order_settings.database = test_support::database_settings(&format!("orders_{id}"));
    order_settings.amqp = amqp.clone();
    order_settings.shutdown.grace = std::time::Duration::from_secs(5);
    order_settings.auth = issuer.settings();

    let mut processor_settings = ProcessorSettings::default();
    processor_settings.http.host = "127.0.0.1".into();
    processor_settings.http.port = 0;
    processor_settings.database = test_support::database_settings(&format!("processor_{id}"));
    processor_settings.amqp = amqp.clone();
    processor_settings.shutdown.grace = std::time::Duration::from_secs(5);
    processor_settings.admin.token = Some(service_kit::configuration::Secret::new(ADMIN_TOKEN));
    processor_settings.auth = issuer.settings();
    customize(&mut order_settings, &mut processor_settings);

    let cleanup = Cleanup {
        databases: vec![
            order_settings.database.url.expose().to_owned(),
            processor_settings.database.url.expose().to_owned(),
        ],
        topology: Some(order_settings.amqp.topology.clone()),
        queues: [
            processor_settings.retry_tiers().queues(),
            order_settings.retry_tiers().queues(),
        ]
        .concat(),
    };
    // As customised: the probe declares the topology first, so it must declare what the services
    // will (the kind of the queues, for one).
    let probe = BrokerProbe::connect(order_settings.amqp.topology.clone()).await;
    let orders = start_orders(order_settings.clone()).await;

    let processor = start_processor(processor_settings.clone()).await;
    Pipeline {
        orders,
        processor,
        order_settings,
        processor_settings,
        probe,
        client: client_with_token(&issuer.operator("e2e-operator")),
        issuer,
        _cleanup: cleanup,
    }
}

async fn start_orders(settings: OrderSettings) -> Service {
    let app = order_service::startup::build(settings)
        .await
        .expect("build order_service");
    let port = app.port();
    Service::spawn(port, |token| app.run_until_stopped(token))
}

async fn start_processor(settings: ProcessorSettings) -> Service {
    let app = processor_service::startup::build(settings)
        .await
        .expect("build processor_service");
    let port = app.port();
    Service::spawn(port, |token| app.run_until_stopped(token))
}

/// Both services agree on every order of `ids`: each is final, its status is the processor's
/// decision, and its history moves once per status and ends with it. Every end-to-end and chaos
/// test ends with this.
pub async fn assert_agreement(
    client: &reqwest::Client,
    orders: &str,
    processor: &str,
    ids: &[String],
) {
    let get = |url: String| async move {
        let response = client.get(&url).send().await.expect(&url);
        assert_eq!(response.status(), 200, "GET {url}");
        response.json::<Value>().await.unwrap()
    };
    for id in ids {
        let order =
            test_support::wait_until(&format!("order {id} to be final"), DEADLINE, || async {
                let order = get(format!("{orders}/orders/{id}")).await;
                (order["status"] != "pending").then_some(order)
            })
            .await;
        // The processor learns of a cancellation after the order service: wait for it.
        test_support::wait_until(
            &format!("the processor to agree with {order}"),
            DEADLINE,
            || async {
                let response = client
                    .get(format!("{processor}/processed/{id}"))
                    .send()
                    .await
                    .expect("GET the processing record");
                if response.status() != 200 {
                    return None;
                }
                let record: Value = response.json().await.unwrap();
                (record["decision"] == order["status"]).then_some(())
            },
        )
        .await;
        let history: Vec<String> = get(format!("{orders}/orders/{id}/history"))
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(history.first().map(String::as_str), Some("pending"), "{id}");
        assert_eq!(
            history.last().map(String::as_str),
            order["status"].as_str(),
            "{id}"
        );
        let mut moves = history.clone();
        moves.dedup();
        assert_eq!(moves, history, "{id}: a status entered twice");
    }
}

pub fn order(customer: &str, quantity: u32, price: &str) -> Value {
    json!({"customer_id": customer, "items": [{"product_id": "product-1", "quantity": quantity, "price": price}]})
}

impl Pipeline {
    /// Stops the processor and starts another on the same database and queues.
    pub async fn restart_processor(&mut self, customize: impl FnOnce(&mut ProcessorSettings)) {
        customize(&mut self.processor_settings);
        let old = std::mem::replace(
            &mut self.processor,
            start_processor(self.processor_settings.clone()).await,
        );
        old.stop().await;
    }

    /// Another order service on the same database and queues (a second instance behind the
    /// same load balancer).
    pub async fn another_order_service(&self) -> Service {
        start_orders(self.order_settings.clone()).await
    }

    /// Stops the processor (gracefully); [`Pipeline::start_processor`] starts it again.
    pub async fn stop_processor(&mut self) {
        self.processor.halt().await;
    }

    pub async fn start_processor(&mut self) {
        self.processor = start_processor(self.processor_settings.clone()).await;
    }

    /// Stops the order service (gracefully); [`Pipeline::start_orders`] starts it again.
    pub async fn stop_orders(&mut self) {
        self.orders.halt().await;
    }

    pub async fn start_orders(&mut self) {
        self.orders = start_orders(self.order_settings.clone()).await;
    }

    /// [`assert_agreement`] on this pipeline.
    pub async fn assert_agreement(&self, ids: &[String]) {
        assert_agreement(
            &self.client,
            &self.orders.address,
            &self.processor.address,
            ids,
        )
        .await;
    }

    pub fn orders_url(&self, path: &str) -> String {
        format!("{}{path}", self.orders.address)
    }

    pub fn processor_url(&self, path: &str) -> String {
        format!("{}{path}", self.processor.address)
    }

    pub async fn place(&self, body: &Value) -> Value {
        let response = self
            .client
            .post(self.orders_url("/orders"))
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

    /// Waits until the order's status satisfies `done`, and returns the order.
    pub async fn wait_for_order(&self, id: &str, what: &str, done: impl Fn(&str) -> bool) -> Value {
        test_support::wait_until(&format!("order {id} to be {what}"), DEADLINE, || async {
            let order = self.get(self.orders_url(&format!("/orders/{id}"))).await;
            done(order["status"].as_str().unwrap_or("")).then_some(order)
        })
        .await
    }

    /// Waits until the order leaves `pending`, and returns it.
    pub async fn wait_until_final(&self, id: &str) -> Value {
        self.wait_for_order(id, "final", |status| status != "pending")
            .await
    }

    pub async fn history(&self, id: &str) -> Vec<String> {
        self.get(self.orders_url(&format!("/orders/{id}/history")))
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.processor_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.processor_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// `GET url` as JSON (any status).
pub async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Waits (up to `deadline`) until order `id` is no longer pending on the order service at
/// `orders`, and returns it.
pub async fn wait_final(
    client: &reqwest::Client,
    orders: &str,
    id: &str,
    deadline: Duration,
) -> Value {
    test_support::wait_until(&format!("order {id} to be final"), deadline, || async {
        let order: Value = client
            .get(format!("{orders}/orders/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (order["status"] != "pending").then_some(order)
    })
    .await
}

/// The sum of the samples of `metric` the service at `url` exports.
pub async fn metric(client: &reqwest::Client, url: &str, metric: &str) -> f64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
