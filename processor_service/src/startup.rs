//! Builds the processor from its settings: the foundations every service has (database created
//! and migrated, broker, outbox relay, HTTP listener), then its own parts: the `order.created`
//! consumer and the processing API.

use actix_web::web;
use messaging::consumer::CrashFault;
use messaging::meter::in_process_retries;
use migration::ProcessorMigrator;
use service_kit::service::{Blueprint, Builder, Service};
use utoipa::OpenApi;

use crate::api_doc::ApiDoc;
use crate::configuration::{ENV_PREFIX, Settings};
use crate::messaging::{ProcessingSettings, WorkHandler};
use crate::routes;
use crate::store::ProcessingStore;

/// Connects to PostgreSQL (creating and migrating the database), prepares the broker connection
/// (made in the background) and binds the HTTP listener (port 0 picks a free one).
pub async fn build(settings: Settings) -> anyhow::Result<Service> {
    let service = Builder::open(blueprint(&settings), |db| async move {
        migration::migrate::<ProcessorMigrator>(&db).await
    })
    .await?;
    let topology = &settings.amqp.topology;
    let store = ProcessingStore::new(
        service.db().clone(),
        service.reads().clone(),
        service.handoff(),
        settings.amqp.group_linger,
    );
    let handler = WorkHandler::new(
        store.clone(),
        ProcessingSettings {
            max_order_total: settings.rules.max_order_total,
            work_delay: settings.work.delay,
            immediate_attempts: settings.retry.immediate_attempts,
            transient_failure_rate: settings.faults.transient_failure_rate,
            panic_for_customer: settings.faults.panic_for_customer.clone(),
            in_process_retries: in_process_retries(&service.meter(), &topology.order_created_queue),
        },
    );
    let state = web::Data::new(store);
    service
        .consume(
            &topology.order_created_queue,
            &topology.order_created_dead_letter_queue,
            handler,
            CrashFault::once_at(settings.faults.crash_once_at),
        )
        .serve(ApiDoc::openapi(), move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(state.clone()).configure(routes::configure);
        })
}

fn blueprint(settings: &Settings) -> Blueprint<'_> {
    Blueprint {
        name: "processor_service",
        env_prefix: ENV_PREFIX,
        http: &settings.http,
        database: &settings.database,
        amqp: &settings.amqp,
        outbox: &settings.outbox,
        shutdown: &settings.shutdown,
        admin: &settings.admin,
        auth: &settings.auth,
        retry: settings.retry.redelivery(),
    }
}
