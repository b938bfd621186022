//! Running a service: its HTTP server and its background workers (consumer, outbox relay) side by
//! side until the shutdown token trips or one of them stops, then a graceful stop bounded by the
//! grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use sea_orm::DatabaseConnection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use anyhow::Context;

use crate::broker::Broker;
use crate::configuration::{AmqpSettings, DatabaseSettings, HttpSettings, OutboxSettings};
use crate::outbox::Relay;

pub type Worker = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every service is built on: its database (created if missing, then migrated), its broker
/// connection (made in the background, so the API serves while RabbitMQ is away), its outbox
/// relay, and its bound HTTP listener (port 0 picks a free one).
pub struct Foundation {
    pub db: DatabaseConnection,
    /// The read-only pool of the API's reads.
    pub reads: DatabaseConnection,
    pub broker: Arc<Broker>,
    pub relay: Relay,
    pub listener: std::net::TcpListener,
    pub port: u16,
}

impl Foundation {
    /// `name` names the broker connection; `migrate` runs the service's migrations.
    pub async fn open<F, Fut>(
        name: &'static str,
        http: &HttpSettings,
        database: &DatabaseSettings,
        amqp: &AmqpSettings,
        outbox: &OutboxSettings,
        migrate: F,
    ) -> anyhow::Result<Self>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<(), sea_orm::DbErr>>,
    {
        // A refusal here is a setting to fix (a wrong host, user, password or certificate), or
        // a server that is not up yet: either way the message names the setting.
        let db = crate::database::connect(database).await.with_context(|| {
            format!(
                "connecting to PostgreSQL with {}__DATABASE__URL",
                name.to_uppercase()
            )
        })?;
        migrate(db.clone())
            .await
            .with_context(|| format!("migrating the database of {name}"))?;
        let reads = crate::database::connect_reads(database)
            .await
            .with_context(|| format!("preparing the read pool of {name}"))?;
        let broker = Broker::new(
            amqp.url.clone(),
            amqp.topology(),
            name,
            amqp.heartbeat_seconds,
        );
        let relay = Relay::new(db.clone(), broker.clone(), outbox.clone());
        let listener = std::net::TcpListener::bind((http.host.as_str(), http.port))
            .with_context(|| format!("binding {}:{}", http.host, http.port))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            db,
            reads,
            broker,
            relay,
            listener,
            port,
        })
    }
}

pub struct Service {
    pub server: Server,
    /// Named background work; each must return when the shutdown token trips.
    pub workers: Vec<(&'static str, Worker)>,
    pub broker: Arc<Broker>,
    pub db: DatabaseConnection,
    pub grace: Duration,
}

impl Service {
    pub fn new(
        server: Server,
        broker: Arc<Broker>,
        db: DatabaseConnection,
        grace: Duration,
    ) -> Self {
        Self {
            server,
            workers: Vec::new(),
            broker,
            db,
            grace,
        }
    }

    pub fn with_worker(mut self, name: &'static str, worker: Worker) -> Self {
        self.workers.push((name, worker));
        self
    }

    /// Runs the outbox relay too, unless the settings disable it in this instance.
    pub fn with_relay(
        self,
        relay: Relay,
        settings: &OutboxSettings,
        shutdown: &CancellationToken,
    ) -> Self {
        if settings.relay_enabled {
            self.with_worker("outbox relay", Box::pin(relay.run(shutdown.clone())))
        } else {
            tracing::warn!("outbox relay disabled: events wait in the outbox for another instance");
            self
        }
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut workers = JoinSet::new();
        for (name, worker) in self.workers {
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
                    let name = finished.unwrap_or("a worker");
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
