//! Building and running a service. [`Builder::open`] lays what every service stands on (its
//! database, created if missing and migrated; its read pool; its broker connection, made in the
//! background so that the API serves while RabbitMQ is away; its outbox relay; its bound HTTP
//! listener), the service adds its consumers, workers and routes, and [`Service`] runs them side
//! by side until the shutdown token trips or one of them stops, then stops them gracefully,
//! bounded by the grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;
use contracts::events::Event;
use messaging::broker::Broker;
use messaging::consumer::{self, ConsumerSettings, CrashFault, Handler, RetryPolicy};
use messaging::meter::{ConsumerMetrics, Meter, OutboxMetrics};
use messaging::outbox::{Handoff, Relay};
use sea_orm::DatabaseConnection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::configuration::{
    AdminSettings, AmqpSettings, AuthSettings, DatabaseSettings, HttpSettings, OutboxSettings,
    RedeliverySettings, ShutdownSettings,
};
use crate::dead_letters::http::DeadLetterAdmin;
use crate::prometheus::{Exporter, HttpMetrics, Scrape};

/// Background work; it must return when the shutdown token trips.
pub type Worker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a worker with the service's shutdown token.
type Start = Box<dyn FnOnce(CancellationToken) -> Worker + Send>;

/// Who the service is, and the sections of its settings that every service has.
pub struct Blueprint<'a> {
    /// `order_service`: names the broker connection and the logs.
    pub name: &'static str,
    /// `ORDER_SERVICE`: the prefix of its environment variables, for messages naming one.
    pub env_prefix: &'static str,
    pub http: &'a HttpSettings,
    pub database: &'a DatabaseSettings,
    pub amqp: &'a AmqpSettings,
    pub outbox: &'a OutboxSettings,
    pub shutdown: &'a ShutdownSettings,
    pub admin: &'a AdminSettings,
    /// Who may call the API.
    pub auth: &'a AuthSettings,
    /// Redelivery of what the service's consumers fail to handle.
    pub retry: RedeliverySettings,
}

/// A service being built: its foundations are laid, its consumers, workers and routes not yet.
pub struct Builder {
    name: &'static str,
    http: HttpSettings,
    amqp: AmqpSettings,
    outbox: OutboxSettings,
    grace: Duration,
    admin: AdminSettings,
    authenticator: Authenticator,
    retry: RedeliverySettings,
    db: DatabaseConnection,
    reads: DatabaseConnection,
    broker: Arc<Broker>,
    relay: Relay,
    listener: std::net::TcpListener,
    port: u16,
    workers: Vec<(String, Start)>,
    /// The dead-letter queue the operator endpoints serve, and the work queue they replay to.
    dead_letters: Option<(String, String)>,
    exporter: Exporter,
    database: DatabaseSettings,
}

impl Builder {
    /// Connects to PostgreSQL (creating the database if missing), runs `migrate`, prepares the
    /// read pool, the broker connection and the outbox relay, and binds the HTTP listener (port
    /// 0 picks a free one).
    pub async fn open<F, Fut>(blueprint: Blueprint<'_>, migrate: F) -> anyhow::Result<Self>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<(), sea_orm::DbErr>>,
    {
        let Blueprint {
            name,
            env_prefix,
            http,
            database,
            amqp,
            outbox,
            shutdown,
            admin,
            auth,
            retry,
        } = blueprint;
        // A refusal here is a setting to fix (a wrong host, user, password or certificate), or
        // a server that is not up yet: either way the message names the setting.
        let db = messaging::database::connect(database)
            .await
            .with_context(|| {
                format!("connecting to PostgreSQL with {env_prefix}__DATABASE__URL")
            })?;
        migrate(db.clone())
            .await
            .with_context(|| format!("migrating the database of {name}"))?;
        let reads = messaging::database::connect_reads(database)
            .await
            .with_context(|| format!("preparing the read pool of {name}"))?;
        let broker = Broker::with_tls(
            amqp.addresses(),
            amqp.topology.clone(),
            name,
            amqp.heartbeat_seconds(),
            amqp.tls(env_prefix)?,
        );
        if amqp.uses_tls() {
            check_broker_certificate(&broker, env_prefix).await?;
        }
        let exporter = Exporter::new()?;
        let relay = Relay::new(db.clone(), broker.clone(), outbox.clone())
            .with_metrics(OutboxMetrics::new(&exporter.meter()));
        let listener = std::net::TcpListener::bind((http.host.as_str(), http.port))
            .with_context(|| format!("binding {}:{}", http.host, http.port))?;
        let port = listener.local_addr()?.port();
        let authenticator = Authenticator::new(auth, admin.token(), env_prefix).await?;
        Ok(Self {
            name,
            http: http.clone(),
            amqp: amqp.clone(),
            outbox: outbox.clone(),
            grace: shutdown.grace,
            admin: admin.clone(),
            authenticator,
            retry,
            db,
            reads,
            broker,
            relay,
            listener,
            port,
            workers: Vec::new(),
            dead_letters: None,
            exporter,
            database: database.clone(),
        })
    }

    /// Where the service's own parts register their metrics.
    pub fn meter(&self) -> Meter {
        self.exporter.meter()
    }

    /// The read-write pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The read-only pool of the API's reads.
    pub fn reads(&self) -> &DatabaseConnection {
        &self.reads
    }

    /// Where the service's writers hand their committed outbox rows to the relay.
    pub fn handoff(&self) -> Handoff {
        self.relay.handoff()
    }

    /// Consumes `queue` with `handler`: failed deliveries are redelivered through the retry
    /// tiers, then dead-lettered to `dead_letter_queue`, which the operator endpoints serve.
    pub fn consume<H: Handler>(
        mut self,
        queue: &str,
        dead_letter_queue: &str,
        handler: H,
        crash: CrashFault,
    ) -> Self {
        let settings = ConsumerSettings {
            queue: queue.to_owned(),
            prefetch: self.amqp.prefetch,
            dead_letter_exchange: self.amqp.topology.dead_letter_exchange.clone(),
            dead_letter_routing_key: self
                .amqp
                .topology
                .queues()
                .into_iter()
                .find(|declared| declared.name == dead_letter_queue)
                .and_then(|declared| declared.bindings.first().map(|(_, key)| key.clone()))
                .unwrap_or_else(|| H::Event::ROUTING_KEY.to_owned()),
            retry: RetryPolicy {
                max_attempts: self.retry.max_attempts,
                tiers: self.retry.tiers(queue, self.amqp.topology.queue_type),
            },
            confirm_timeout: self.outbox.confirm_timeout,
            crash,
            metrics: ConsumerMetrics::new(&self.exporter.meter(), queue),
        };
        self.dead_letters
            .get_or_insert_with(|| (dead_letter_queue.to_owned(), queue.to_owned()));
        let broker = self.broker.clone();
        let handler = Arc::new(handler);
        self.worker(
            format!("{} consumer", H::Event::ROUTING_KEY),
            move |shutdown| consumer::run(broker, settings, handler, shutdown),
        )
    }

    /// Runs `start(shutdown)` beside the server; it must return when the token trips.
    pub fn worker<F, Fut>(mut self, name: impl Into<String>, start: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers.push((
            name.into(),
            Box::new(move |shutdown| Box::pin(start(shutdown))),
        ));
        self
    }

    /// Serves `routes` (with `/health`, `/ready`, the dead-letter endpoints and Swagger UI) and
    /// runs the outbox relay, unless the settings leave it to another instance.
    pub fn serve<F>(self, openapi: utoipa::openapi::OpenApi, routes: F) -> anyhow::Result<Service>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        let meter = self.exporter.meter();
        let (dead_letter_queue, work_queue) = self.dead_letters.unwrap_or_default();
        let mut workers = self.workers;
        if !dead_letter_queue.is_empty() {
            let (meter, broker, queue) = (
                meter.clone(),
                self.broker.clone(),
                dead_letter_queue.clone(),
            );
            workers.push((
                "dead-letter sampler".to_owned(),
                Box::new(move |shutdown| {
                    Box::pin(Exporter::watch_dead_letters(meter, broker, queue, shutdown))
                }),
            ));
        }
        let handle = self.exporter.handle();
        workers.push((
            "metrics upkeep".to_owned(),
            Box::new(move |shutdown| Box::pin(Exporter::keep_up(handle, shutdown))),
        ));
        let admin = web::Data::new(
            DeadLetterAdmin::new(
                &self.admin,
                self.authenticator.clone(),
                self.broker.clone(),
                dead_letter_queue,
                work_queue,
            )
            .counting_replays(&meter),
        );
        let scrape = web::Data::new(Scrape::new(
            &self.exporter,
            self.broker.clone(),
            self.db.clone(),
            self.reads.clone(),
            vec![
                ("writes", self.db.clone(), self.database.max_connections),
                (
                    "reads",
                    self.reads.clone(),
                    self.database.read_max_connections,
                ),
            ],
        ));
        let db = web::Data::new(self.db.clone());
        let broker = web::Data::new(self.broker.clone());
        let authenticator = web::Data::new(self.authenticator.clone());
        let server = crate::http::serve(
            self.listener,
            &self.http,
            self.grace,
            openapi,
            HttpMetrics::new(meter),
            move |cfg: &mut web::ServiceConfig| {
                cfg.app_data(db.clone())
                    .app_data(broker.clone())
                    .app_data(admin.clone())
                    .app_data(authenticator.clone())
                    .app_data(scrape.clone())
                    .configure(crate::http::operations)
                    .configure(routes.clone());
            },
        )?;
        if self.outbox.relay_enabled {
            let relay = self.relay;
            workers.push((
                "outbox relay".to_owned(),
                Box::new(move |shutdown| Box::pin(relay.run(shutdown))),
            ));
        } else {
            tracing::warn!("outbox relay disabled: events wait in the outbox for another instance");
        }
        tracing::info!(port = self.port, "{} listening", self.name);
        Ok(Service {
            port: self.port,
            server,
            workers,
            broker: self.broker,
            db: self.db,
            grace: self.grace,
        })
    }
}

/// Connects once to an `amqps://` broker: a certificate it does not accept (a wrong CA, a name
/// the certificate was not issued for) is a setting to fix and stops start-up; a broker that is
/// away is not (the connection is made in the background).
async fn check_broker_certificate(broker: &Broker, prefix: &str) -> anyhow::Result<()> {
    match broker.connection().await {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().to_lowercase().contains("certificate") => {
            Err(anyhow::anyhow!(
                "connecting to RabbitMQ over TLS with {prefix}__AMQP__URL: the broker's \
                 certificate is not accepted ({error}); check {prefix}__AMQP__CA_FILE (and \
                 {prefix}__AMQP__CLIENT_CERT_FILE, {prefix}__AMQP__CLIENT_KEY_FILE)"
            ))
        }
        Err(error) => {
            tracing::warn!(%error, "RabbitMQ is not reachable yet; connecting in the background");
            Ok(())
        }
    }
}

/// A built service, ready to run.
pub struct Service {
    port: u16,
    server: Server,
    workers: Vec<(String, Start)>,
    broker: Arc<Broker>,
    db: DatabaseConnection,
    grace: Duration,
}

impl Service {
    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves HTTP and runs the consumers, the relay and the other workers until `shutdown`
    /// trips or one of them stops; then stops the rest within the grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut workers = JoinSet::new();
        for (name, start) in self.workers {
            let worker = start(shutdown.clone());
            workers.spawn(async move {
                worker.await;
                name
            });
        }
        let mut outcome = Ok(());
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            result = &mut server => {
                outcome = match result {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped by itself")),
                    Ok(Err(error)) => Err(anyhow::anyhow!("the HTTP server failed: {error}")),
                    Err(error) => Err(anyhow::anyhow!("the HTTP server panicked: {error}")),
                };
            }
            Some(finished) = workers.join_next() => {
                // A worker returns by itself only when the token tripped meanwhile.
                if !shutdown.is_cancelled() {
                    let name = finished.unwrap_or_else(|_| "a worker".to_owned());
                    outcome = Err(anyhow::anyhow!("{name} stopped by itself"));
                }
            }
        }
        if let Err(error) = &outcome {
            tracing::error!(%error, "stopping the service");
        }
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.grace;
        // No new requests; those in flight finish (actix bounds this by its shutdown timeout).
        if tokio::time::timeout_at(deadline, handle.stop(true))
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still in flight at the end of the grace period");
        }
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(finished) = workers.join_next().await {
                if let Ok(name) = finished {
                    tracing::info!(worker = name, "worker stopped");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("workers still busy at the end of the grace period; aborting them");
            workers.shutdown().await;
        }
        self.broker.close().await;
        if let Err(error) = self.db.close().await {
            tracing::warn!(%error, "closing the database pool failed");
        }
        tracing::info!("stopped");
        outcome
    }
}
