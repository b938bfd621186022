//! `<service> dead-letters list|replay`: the dead-letter operations for an operator without HTTP
//! access, with the service's own configuration. JSON on stdout.

use clap::Subcommand;
use uuid::Uuid;

use super::{ReplayRequest, ReplayResult};
use crate::configuration::Secret;
use crate::topology::Topology;

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Print the dead letters as JSON (copies of one message once), without consuming them.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Move dead letters back to the work queue with a fresh attempt count; prints {"replayed": N}.
    Replay {
        /// Only this order (repeatable); all when absent.
        #[arg(long = "order-id")]
        order_ids: Vec<Uuid>,
        /// Replay poison messages too.
        #[arg(long)]
        include_poison: bool,
    },
}

/// Where a service's dead letters live.
pub struct DeadLetterQueues<'a> {
    pub url: &'a Secret,
    pub topology: Topology,
    pub dead_letter_queue: &'a str,
    pub work_queue: &'a str,
    /// Names the broker connection.
    pub connection_name: &'a str,
    pub heartbeat_seconds: u16,
}

/// Runs `command` against the configured broker; returns what to print.
pub async fn run(
    queues: DeadLetterQueues<'_>,
    command: DeadLettersCommand,
) -> anyhow::Result<String> {
    let broker = crate::broker::Broker::new(
        queues.url.clone(),
        queues.topology,
        queues.connection_name,
        queues.heartbeat_seconds,
    );
    let output = match command {
        DeadLettersCommand::List { limit } => serde_json::to_string_pretty(
            &super::list(&broker, queues.dead_letter_queue, limit).await?,
        )?,
        DeadLettersCommand::Replay {
            order_ids,
            include_poison,
        } => {
            let request = ReplayRequest {
                order_ids: (!order_ids.is_empty()).then_some(order_ids),
                include_poison,
            };
            let replayed = super::replay(
                &broker,
                queues.dead_letter_queue,
                queues.work_queue,
                &request,
            )
            .await?;
            serde_json::to_string(&ReplayResult { replayed })?
        }
    };
    broker.close().await;
    Ok(output)
}
