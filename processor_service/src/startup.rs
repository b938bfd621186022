//! Builds the processor from its settings: database (created and migrated), broker, outbox relay,
//! `order.created` consumer and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use migration::ProcessorMigrator;
use sea_orm::DatabaseConnection;
use shared::broker::Broker;
use shared::consumer::{self, ConsumerSettings, CrashFault, RetryPolicy};
use shared::dead_letters::http::DeadLetterAdmin;
use shared::outbox::Relay;
use shared::service::{Foundation, Service};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::api_doc::ApiDoc;
use crate::configuration::Settings;
use crate::messaging::{OrderCreatedHandler, ProcessingSettings};
use crate::routes;
use crate::store::ProcessingStore;

pub struct Application {
    port: u16,
    settings: Settings,
    db: DatabaseConnection,
    broker: Arc<Broker>,
    relay: Relay,
    store: ProcessingStore,
    server: actix_web::dev::Server,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database), prepares the broker
    /// connection (made in the background) and binds the HTTP listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let Foundation {
            db,
            reads,
            broker,
            relay,
            listener,
            port,
        } = Foundation::open(
            "processor_service",
            &settings.http,
            &settings.database,
            &settings.amqp,
            &settings.outbox,
            |db| async move { migration::migrate::<ProcessorMigrator>(&db).await },
        )
        .await?;
        let store = ProcessingStore::new(
            db.clone(),
            reads,
            relay.handoff(),
            settings.amqp.group_linger(),
        );
        let server = {
            let store = web::Data::new(store.clone());
            let db = web::Data::new(db.clone());
            let admin = web::Data::new(DeadLetterAdmin::new(
                &settings.admin,
                crate::configuration::ENV_PREFIX,
                broker.clone(),
                settings.amqp.order_created_dead_letter_queue.clone(),
                settings.amqp.order_created_queue.clone(),
            ));
            let broker = web::Data::new(broker.clone());
            shared::http::serve(
                listener,
                &settings.http,
                settings.shutdown.grace_seconds,
                ApiDoc::openapi(),
                move |cfg: &mut web::ServiceConfig| {
                    cfg.app_data(store.clone())
                        .app_data(db.clone())
                        .app_data(broker.clone())
                        .app_data(admin.clone())
                        .configure(routes::configure);
                },
            )?
        };
        tracing::info!(port, "processor_service listening");
        Ok(Self {
            port,
            settings,
            db,
            broker,
            relay,
            store,
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves HTTP, consumes `order.created` and relays the outbox until `shutdown` trips.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handler = Arc::new(OrderCreatedHandler::new(
            self.store,
            ProcessingSettings {
                max_order_total: self.settings.rules.max_order_total,
                work_delay: Duration::from_millis(self.settings.work.delay_ms),
                immediate_attempts: self.settings.retry.immediate_attempts,
                transient_failure_rate: self.settings.faults.transient_failure_rate,
                panic_for_customer: self.settings.faults.panic_for_customer.clone(),
            },
        ));
        let consumer = consumer::run(
            self.broker.clone(),
            ConsumerSettings {
                queue: self.settings.amqp.order_created_queue.clone(),
                prefetch: self.settings.amqp.prefetch,
                dead_letter_exchange: self.settings.amqp.dead_letter_exchange.clone(),
                retry: RetryPolicy {
                    max_attempts: self.settings.retry.max_attempts,
                    tiers: self.settings.retry_tiers(),
                },
                confirm_timeout: Duration::from_millis(self.settings.outbox.confirm_timeout_ms),
                crash: CrashFault::once_at(self.settings.faults.crash_once_at),
            },
            handler,
            shutdown.clone(),
        );
        Service::new(
            self.server,
            self.broker,
            self.db,
            Duration::from_secs(self.settings.shutdown.grace_seconds),
        )
        .with_worker("order.created consumer", Box::pin(consumer))
        .with_relay(self.relay, &self.settings.outbox, &shutdown)
        .run_until_stopped(shutdown)
        .await
    }
}
