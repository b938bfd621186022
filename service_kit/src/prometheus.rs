//! Prometheus metrics: each service records into a recorder of its own ([`Exporter`]), and
//! `GET /metrics` renders it in the Prometheus text format (0.0.4), after sampling what is read
//! rather than counted: the database pools, the broker connection and the outbox backlog. The
//! dead-letter queues' depths are sampled in the background ([`Exporter::watch_dead_letters`]), a
//! passive declare every [`DEAD_LETTER_INTERVAL`], so that a scrape never waits for the broker.
//!
//! The endpoint carries no order data and needs no credentials, like `/health` and `/ready`: it is
//! on the service port, for Prometheus and orchestrators.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use messaging::broker::Broker;
use messaging::meter::{Counter, Gauge, Label, Meter};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

/// Bucket bounds of every `_seconds` histogram: 0.5 ms to 5 minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// Bucket bounds of `outbox_relay_batch_size`.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
/// How often the dead-letter queues' depths are sampled.
pub const DEAD_LETTER_INTERVAL: Duration = Duration::from_secs(15);
/// How often histograms are folded (they would otherwise grow until the next scrape).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A service's recorder and what renders it.
pub struct Exporter {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Exporter {
    pub fn new() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full("outbox_relay_batch_size".into()),
                SIZE_BUCKETS,
            )?
            .build_recorder();
        let handle = recorder.handle();
        Ok(Self {
            recorder: Arc::new(recorder),
            handle,
        })
    }

    /// Where the service's components register their metrics.
    pub fn meter(&self) -> Meter {
        Meter::new(self.recorder.clone())
    }

    /// Folds the histograms every few seconds until `shutdown` trips.
    pub async fn keep_up(handle: PrometheusHandle, shutdown: CancellationToken) {
        while messaging::shutdown::sleep_unless_cancelled(UPKEEP_INTERVAL, &shutdown).await {
            handle.run_upkeep();
        }
    }

    pub fn handle(&self) -> PrometheusHandle {
        self.handle.clone()
    }

    /// Samples the depth of `queue` (a dead-letter queue) every [`DEAD_LETTER_INTERVAL`] until
    /// `shutdown` trips. While the broker is away the gauge keeps its last value.
    pub async fn watch_dead_letters(
        meter: Meter,
        broker: Arc<Broker>,
        queue: String,
        shutdown: CancellationToken,
    ) {
        let waiting = meter.gauge(
            "dead_letter_queue_messages",
            "Messages waiting in a dead-letter queue, sampled every 15 s.",
            &[("queue", queue.clone())],
        );
        loop {
            match dead_letter_depth(&broker, &queue).await {
                Ok(count) => waiting.set(f64::from(count)),
                Err(error) => {
                    tracing::debug!(%error, %queue, "could not sample the dead-letter queue")
                }
            }
            if !messaging::shutdown::sleep_unless_cancelled(DEAD_LETTER_INTERVAL, &shutdown).await {
                break;
            }
        }
    }
}

async fn dead_letter_depth(broker: &Broker, queue: &str) -> Result<u32, lapin::Error> {
    let connection = broker.connection().await?;
    let channel = connection.create_channel().await?;
    let count = messaging::topology::ready_count(&channel, queue).await;
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
    count
}

/// A pool whose connections are sampled at each scrape.
struct Pool {
    db: DatabaseConnection,
    in_use: Gauge,
    idle: Gauge,
}

/// What `GET /metrics` samples before it renders.
pub struct Scrape {
    handle: PrometheusHandle,
    broker: Arc<Broker>,
    db: DatabaseConnection,
    reads: DatabaseConnection,
    ready: Gauge,
    pools: Vec<Pool>,
    broker_connected: Gauge,
    broker_blocked: Gauge,
    broker_reconnections: Counter,
    outbox_unsent: Gauge,
    outbox_oldest: Gauge,
}

impl Scrape {
    /// `db` is checked for readiness; `reads` runs the outbox query; `pools` are the named pools
    /// with their maximum sizes.
    pub fn new(
        exporter: &Exporter,
        broker: Arc<Broker>,
        db: DatabaseConnection,
        reads: DatabaseConnection,
        pools: Vec<(&'static str, DatabaseConnection, u32)>,
    ) -> Self {
        let meter = exporter.meter();
        let pools = pools
            .into_iter()
            .map(|(name, db, max)| {
                let state =
                    |state: &'static str| [("pool", name.to_owned()), ("state", state.to_owned())];
                let help = "Connections of a database pool: in use, idle, and the maximum.";
                meter
                    .gauge("database_pool_connections", help, &state("max"))
                    .set(f64::from(max));
                Pool {
                    db,
                    in_use: meter.gauge("database_pool_connections", help, &state("in_use")),
                    idle: meter.gauge("database_pool_connections", help, &state("idle")),
                }
            })
            .collect();
        meter
            .gauge(
                "build_info",
                "Always 1; the labels say which build runs.",
                &[
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("commit", env!("BUILD_COMMIT").to_owned()),
                ],
            )
            .set(1.0);
        Self {
            handle: exporter.handle(),
            broker,
            db,
            reads,
            ready: meter.gauge(
                "service_ready",
                "1 when the readiness checks (GET /ready) pass at the scrape, else 0.",
                &[],
            ),
            pools,
            broker_connected: meter.gauge(
                "broker_connected",
                "1 while the service holds a live connection to RabbitMQ, else 0.",
                &[],
            ),
            broker_blocked: meter.gauge(
                "broker_blocked",
                "1 while RabbitMQ blocks the service's publishers (a memory or disk alarm), else 0.",
                &[],
            ),
            broker_reconnections: meter.counter(
                "broker_reconnections_total",
                "Connections to RabbitMQ made after the first.",
                &[],
            ),
            outbox_unsent: meter.gauge(
                "outbox_unsent_rows",
                "Outbox rows not marked sent: waiting for the broker, or confirmed and about to be marked.",
                &[],
            ),
            outbox_oldest: meter.gauge(
                "outbox_oldest_unsent_age_seconds",
                "Age of the oldest outbox row not marked sent (0 when none waits).",
                &[],
            ),
        }
    }

    /// Samples, then renders everything in the Prometheus text format.
    pub async fn render(&self) -> String {
        for pool in &self.pools {
            let pool_state = pool.db.get_postgres_connection_pool();
            let open = pool_state.size();
            let idle = u32::try_from(pool_state.num_idle()).unwrap_or(open);
            pool.in_use.set(f64::from(open.saturating_sub(idle)));
            pool.idle.set(f64::from(idle));
        }
        self.broker_connected
            .set(if self.broker.is_connected() { 1.0 } else { 0.0 });
        self.broker_blocked.set(if self.broker.blocked().is_some() {
            1.0
        } else {
            0.0
        });
        self.broker_reconnections
            .absolute(self.broker.connections_made().saturating_sub(1));
        let report = crate::http::check_dependencies(&self.db, &self.broker).await;
        self.ready.set(if report.is_ready() { 1.0 } else { 0.0 });
        // A database that does not answer leaves the last values: the pool and broker gauges,
        // and `up`, still tell.
        match messaging::outbox::backlog(&self.reads).await {
            Ok(backlog) => {
                self.outbox_unsent.set(backlog.unsent as f64);
                self.outbox_oldest.set(backlog.oldest_age.as_secs_f64());
            }
            Err(error) => tracing::debug!(%error, "could not sample the outbox backlog"),
        }
        self.handle.render()
    }
}

/// `GET /metrics`: the service's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Metrics in the Prometheus text format (0.0.4)", body = String, content_type = "text/plain"))
)]
pub async fn metrics(scrape: web::Data<Scrape>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(scrape.render().await)
}

/// Counts requests by method, route template and status, and times them by route.
#[derive(Clone)]
pub struct HttpMetrics {
    meter: Meter,
}

const HTTP_REQUESTS: &str = "http_requests_total";
const HTTP_DURATION: &str = "http_request_duration_seconds";

impl HttpMetrics {
    pub fn new(meter: Meter) -> Self {
        meter.describe_counter(
            HTTP_REQUESTS,
            "HTTP requests answered, by method, route template and status.",
        );
        meter.describe_histogram(
            HTTP_DURATION,
            "Time to answer an HTTP request (until its response starts), by method and route template.",
        );
        Self { meter }
    }

    fn record(&self, method: &Method, route: Option<String>, status: u16, elapsed: Duration) {
        // Bounded label values: a known method or `other`; a route template or `unmatched`.
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        self.meter
            .labelled_histogram(
                HTTP_DURATION,
                vec![
                    Label::new("method", method),
                    Label::new("route", route.clone()),
                ],
            )
            .record(elapsed.as_secs_f64());
        self.meter
            .labelled_counter(
                HTTP_REQUESTS,
                vec![
                    Label::new("method", method),
                    Label::new("route", route),
                    Label::new("status", status.to_string()),
                ],
            )
            .increment(1);
    }
}

/// The middleware that feeds [`HttpMetrics`] (in the app data).
pub async fn record_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let metrics = request.app_data::<web::Data<HttpMetrics>>().cloned();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.call(request).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &response {
            Ok(response) => (
                response.request().match_pattern(),
                response.status().as_u16(),
            ),
            Err(error) => (None, error.as_response_error().status_code().as_u16()),
        };
        metrics.record(&method, route, status, started.elapsed());
    }
    response
}
