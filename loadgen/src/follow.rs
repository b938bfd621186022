//! Following orders to their final status without polling: a private, auto-deleted queue bound to
//! `order.processed` on the pipeline's exchange receives a copy of every verdict.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use contracts::events::{Envelope, OrderProcessed, ProcessingStatus};
use contracts::routing_keys;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;
use uuid::Uuid;

/// When each order's verdict was seen, and what it was (the first one, if repeated).
pub type Finals = HashMap<Uuid, (Instant, ProcessingStatus)>;

pub struct Follower {
    finals: Arc<Mutex<Finals>>,
    seen: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    _connection: Connection,
}

impl Follower {
    pub async fn start(amqp_url: &str, exchange: &str) -> anyhow::Result<Self> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                routing_keys::ORDER_PROCESSED.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "loadgen".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let finals = Arc::new(Mutex::new(Finals::new()));
        let seen = Arc::new(AtomicU64::new(0));
        let task = {
            let finals = finals.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let _channel = channel;
                while let Some(Ok(delivery)) = consumer.next().await {
                    let now = Instant::now();
                    if let Ok(event) = Envelope::<OrderProcessed>::decode(&delivery.data) {
                        let mut finals = finals.lock().await;
                        if let std::collections::hash_map::Entry::Vacant(entry) =
                            finals.entry(event.payload.order_id)
                        {
                            entry.insert((now, event.payload.status));
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        Ok(Self {
            finals,
            seen,
            task,
            _connection: connection,
        })
    }

    /// A shared counter of the verdicts seen, for a progress display.
    pub fn seen_counter(&self) -> Arc<AtomicU64> {
        self.seen.clone()
    }

    pub async fn has(&self, id: &Uuid) -> bool {
        self.finals.lock().await.contains_key(id)
    }

    pub async fn stop(self) -> Finals {
        self.task.abort();
        let finals = self.finals.lock().await;
        finals.clone()
    }
}
