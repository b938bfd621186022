//! Builds the order service from its settings: the foundations every service has (database
//! created and migrated, broker, outbox relay, HTTP listener), then its own parts: the
//! `order.processed` consumer, the reconciliation of stuck orders, live status and the orders
//! API.

use actix_web::web;
use messaging::consumer::CrashFault;
use migration::OrdersMigrator;
use service_kit::service::{Blueprint, Builder, Service};
use utoipa::OpenApi;

use crate::api_doc::ApiDoc;
use crate::configuration::{ENV_PREFIX, Settings};
use crate::idempotency::KeySweep;
use crate::live::Live;
use crate::messaging::OrderProcessedHandler;
use crate::metrics::OrderMetrics;
use crate::reconcile::Reconciler;
use crate::routes;
use crate::routes::page::Processor;
use crate::store::OrderStore;

/// Connects to PostgreSQL (creating and migrating the database), prepares the broker connection
/// (made in the background, so the API serves even while RabbitMQ is away) and binds the HTTP
/// listener (port 0 picks a free port; see [`Service::port`]).
pub async fn build(settings: Settings) -> anyhow::Result<Service> {
    let service = Builder::open(blueprint(&settings), |db| async move {
        migration::migrate::<OrdersMigrator>(&db).await
    })
    .await?;
    let topology = &settings.amqp.topology;
    let store = OrderStore::new(
        service.db().clone(),
        service.reads().clone(),
        service.handoff(),
        settings.intake.max_waiting,
        settings.amqp.group_linger,
        OrderMetrics::new(&service.meter()),
    );
    let reconciler = Reconciler::new(
        service.db().clone(),
        service.handoff(),
        settings.reconcile.clone(),
    )
    .with_metrics(&service.meter());
    let live = Live::new(
        service.reads().get_postgres_connection_pool().clone(),
        settings.database.url.expose(),
        &settings.live,
        &service.meter(),
    )
    .await?;
    let keys = KeySweep::new(
        service.db().clone(),
        settings.intake.idempotency_key_ttl,
        settings.intake.key_sweep_interval,
        &service.meter(),
    );
    let writes = service.db().get_postgres_connection_pool().clone();
    let state = web::Data::new(store.clone());
    let live_state = web::Data::new(live.clone());
    let processor = web::Data::new(Processor {
        url: settings.processor.url.clone(),
        client: processor_client::Client::builder()
            .timeout(settings.processor.timeout)
            .build()?,
    });
    let service = service
        .consume(
            &topology.order_processed_queue,
            &topology.order_processed_dead_letter_queue,
            OrderProcessedHandler::new(store),
            CrashFault::default(),
        )
        .worker("reconciliation", move |shutdown| reconciler.run(shutdown))
        .worker("live status", move |shutdown| live.run(shutdown))
        .worker("figures compaction", move |shutdown| {
            crate::figures::compact_until(writes, shutdown)
        });
    // Zero: keys never expire, and nothing sweeps.
    let service = if settings.intake.idempotency_key_ttl.is_zero() {
        service
    } else {
        service.worker("idempotency keys", move |shutdown| keys.run(shutdown))
    };
    service.serve(ApiDoc::openapi(), move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(state.clone())
            .app_data(live_state.clone())
            .app_data(processor.clone())
            .configure(routes::configure);
    })
}

fn blueprint(settings: &Settings) -> Blueprint<'_> {
    Blueprint {
        name: "order_service",
        env_prefix: ENV_PREFIX,
        http: &settings.http,
        database: &settings.database,
        amqp: &settings.amqp,
        outbox: &settings.outbox,
        shutdown: &settings.shutdown,
        admin: &settings.admin,
        auth: &settings.auth,
        retry: settings.retry.clone(),
    }
}
