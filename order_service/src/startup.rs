//! Builds the order service from its settings: database (created and migrated), broker, outbox
//! relay, `order.processed` consumer and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use migration::OrdersMigrator;
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
use crate::messaging::OrderProcessedHandler;
use crate::reconcile::Reconciler;
use crate::routes;
use crate::store::OrderStore;

pub struct Application {
    port: u16,
    settings: Settings,
    db: DatabaseConnection,
    broker: Arc<Broker>,
    relay: Relay,
    store: OrderStore,
    server: actix_web::dev::Server,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database), prepares the broker
    /// connection (made in the background, so the API serves even while RabbitMQ is away) and binds
    /// the HTTP listener (port 0 picks a free port; see [`Application::port`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let Foundation {
            db,
            reads,
            broker,
            relay,
            listener,
            port,
        } = Foundation::open(
            "order_service",
            &settings.http,
            &settings.database,
            &settings.amqp,
            &settings.outbox,
            |db| async move { migration::migrate::<OrdersMigrator>(&db).await },
        )
        .await?;
        let store = OrderStore::new(
            db.clone(),
            reads,
            relay.handoff(),
            settings.intake.max_waiting,
            settings.amqp.group_linger(),
        );
        let server = {
            let store = web::Data::new(store.clone());
            let db = web::Data::new(db.clone());
            let admin = web::Data::new(DeadLetterAdmin::new(
                &settings.admin,
                crate::configuration::ENV_PREFIX,
                broker.clone(),
                settings.amqp.order_processed_dead_letter_queue.clone(),
                settings.amqp.order_processed_queue.clone(),
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
        tracing::info!(port, "order_service listening");
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

    /// Serves HTTP, relays the outbox and consumes `order.processed` until `shutdown` trips.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handler = Arc::new(OrderProcessedHandler::new(self.store));
        let consumer = consumer::run(
            self.broker.clone(),
            ConsumerSettings {
                queue: self.settings.amqp.order_processed_queue.clone(),
                prefetch: self.settings.amqp.prefetch,
                dead_letter_exchange: self.settings.amqp.dead_letter_exchange.clone(),
                retry: RetryPolicy {
                    max_attempts: self.settings.retry.max_attempts,
                    tiers: self.settings.retry_tiers(),
                },
                confirm_timeout: Duration::from_millis(self.settings.outbox.confirm_timeout_ms),
                crash: CrashFault::default(),
            },
            handler,
            shutdown.clone(),
        );
        let reconciler = Reconciler::new(
            self.db.clone(),
            self.relay.handoff(),
            self.settings.reconcile.clone(),
        );
        Service::new(
            self.server,
            self.broker,
            self.db,
            Duration::from_secs(self.settings.shutdown.grace_seconds),
        )
        .with_worker("order.processed consumer", Box::pin(consumer))
        .with_worker("reconciliation", Box::pin(reconciler.run(shutdown.clone())))
        .with_relay(self.relay, &self.settings.outbox, &shutdown)
        .run_until_stopped(shutdown)
        .await
    }
}
