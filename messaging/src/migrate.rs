//! Redeclares queues whose declaration the broker refuses (another kind, other arguments: RabbitMQ
//! cannot change an existing queue's), moving their messages, so that a classic deployment moves
//! to quorum queues without losing one.
//!
//! For each such queue `q`, with the services stopped:
//!
//! ```text
//! 1. declare q.migrating (the wanted kind, no other argument), bind it as q is bound,
//!    unbind q, move q's messages to it, delete q (only when empty and unused)
//! 2. declare q as wanted, bind it, unbind q.migrating, move the messages back, delete q.migrating
//! ```
//!
//! Nothing is changed while a queue to replace has a consumer (a service still running) or is
//! being listed or replayed (its [`Turn`], held by the migration to its end). A
//! message is acknowledged on the queue it leaves only once the broker confirmed its copy on
//! the other: a crash leaves it in one queue or in both (at least once; the consumers are
//! idempotent), never in none, and running the migration again resumes it. Queues that expire
//! their messages into another (the retry queues) are emptied first and filled last, so that
//! nothing expires into a work queue while it is being replaced; while a queue is replaced, what
//! is published to it waits in `q.migrating`.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde::Serialize;

use crate::broker::{Broker, PublishError, republish};
use crate::topology::QueueDeclaration;
use crate::turn::{Turn, TurnError};

/// The longest wait for the broker's confirm of one moved message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the migration did to one queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Migrated {
    pub queue: String,
    /// Messages moved back into it from its holding queue.
    pub messages: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "queue {queue} has consumers or messages still arriving: stop the services that use it and run the migration again (it finishes what it started)"
    )]
    InUse { queue: String },
    #[error(
        "queue {queue} is being listed or replayed (its dead letters are held unacknowledged): run the migration again once that ended"
    )]
    Browsed { queue: String },
    #[error("a moved message was not confirmed by the broker (left where it was): {0}")]
    NotConfirmed(String),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// The name of the queue that holds `queue`'s messages while it is replaced.
pub fn holding_queue(queue: &str) -> String {
    format!("{queue}.migrating")
}

/// Makes each of `queues` declared as it says, moving the messages of those the broker holds with
/// another declaration (and finishing a migration that stopped half-way). Returns the queues it
/// replaced; none when every queue is already as declared.
pub async fn migrate(
    broker: &Broker,
    queues: &[QueueDeclaration],
) -> Result<Vec<Migrated>, MigrateError> {
    let connection = broker.connection().await?;
    let mut to_replace = Vec::new();
    let mut to_refill = Vec::new();
    for queue in queues {
        if !declares(&connection, queue).await? {
            to_replace.push(queue);
        } else if exists(&connection, &holding_queue(&queue.name)).await? {
            to_refill.push(queue);
        }
    }
    if to_replace.is_empty() && to_refill.is_empty() {
        return Ok(Vec::new());
    }
    // A queue a service still consumes is left as it is, and so is every other.
    let channel = connection.create_channel().await?;
    for queue in &to_replace {
        if consumers(&channel, &queue.name).await? > 0 {
            return Err(MigrateError::InUse {
                queue: queue.name.clone(),
            });
        }
    }
    channel.close(200, "OK".into()).await?;
    // A listing or replay holds its queue's messages unacknowledged, which a deletion would drop:
    // each queue's turn is taken first (refused, changing nothing, if one is in progress) and
    // held to the end, so that none starts meanwhile.
    let mut turns = Vec::new();
    for queue in to_replace.iter().chain(&to_refill) {
        match Turn::take(&connection, &queue.name, Duration::ZERO).await {
            Ok(turn) => turns.push(turn),
            Err(TurnError::Taken(queue)) => return Err(MigrateError::Browsed { queue }),
            Err(TurnError::Broker(error)) => return Err(error.into()),
        }
    }
    let channel = confirming_channel(&connection).await?;
    // Retry queues first: once they are empty, nothing expires into a work queue being replaced.
    to_replace.sort_by_key(|queue| !queue.expires_messages());
    for queue in &to_replace {
        empty_into_holding_queue(&channel, queue).await?;
    }
    // A channel that used a queue must not publish to a new queue of the same name: RabbitMQ
    // (3.10) keeps the old queue's state on the channel and fails it with an internal error.
    channel.close(200, "OK".into()).await?;
    let channel = confirming_channel(&connection).await?;
    // Work queues first: a retry queue refilled expires into its work queue, which must exist.
    let mut refill: Vec<&QueueDeclaration> = to_replace.into_iter().chain(to_refill).collect();
    refill.sort_by_key(|queue| queue.expires_messages());
    let mut migrated = Vec::new();
    for queue in refill {
        let count = refill_from_holding_queue(&channel, queue).await?;
        tracing::info!(queue = %queue.name, messages = count, "queue redeclared, messages moved back");
        migrated.push(Migrated {
            queue: queue.name.clone(),
            messages: count,
        });
    }
    channel.close(200, "OK".into()).await?;
    for turn in turns {
        turn.end().await?;
    }
    Ok(migrated)
}

async fn confirming_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Whether the broker takes `queue`'s declaration (creating it if missing); a refusal closes only
/// the scratch channel it was tried on.
async fn declares(connection: &Connection, queue: &QueueDeclaration) -> Result<bool, lapin::Error> {
    let channel = connection.create_channel().await?;
    match channel
        .queue_declare(
            queue.name.as_str().into(),
            durable(),
            queue.arguments.clone(),
        )
        .await
    {
        Ok(_) => {
            channel.close(200, "OK".into()).await?;
            Ok(true)
        }
        Err(error) if refused_with(&error, 406) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether `queue` exists (a passive declare on a scratch channel).
async fn exists(connection: &Connection, queue: &str) -> Result<bool, lapin::Error> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => {
            channel.close(200, "OK".into()).await?;
            Ok(true)
        }
        Err(error) if refused_with(&error, 404) => Ok(false),
        Err(error) => Err(error),
    }
}

fn refused_with(error: &lapin::Error, code: u16) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(refusal) if refusal.get_id() == code)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Step 1: `queue`'s messages and bindings to its holding queue, then `queue` deleted.
async fn empty_into_holding_queue(
    channel: &Channel,
    queue: &QueueDeclaration,
) -> Result<(), MigrateError> {
    let holding = QueueDeclaration {
        name: holding_queue(&queue.name),
        arguments: queue.kind_only(),
        bindings: queue.bindings.clone(),
    };
    holding.declare(channel).await?;
    unbind(channel, &queue.name, &queue.bindings).await?;
    // A message may still arrive (a retry expiring, a publisher's last one): empty the queue until
    // the broker deletes it as empty.
    for _ in 0..100 {
        move_messages(channel, &queue.name, &holding.name).await?;
        if consumers(channel, &queue.name).await? > 0 {
            return Err(MigrateError::InUse {
                queue: queue.name.clone(),
            });
        }
        if delete_if_empty(channel, &queue.name).await? {
            return Ok(());
        }
    }
    Err(MigrateError::InUse {
        queue: queue.name.clone(),
    })
}

/// The consumers of `queue`, which exists.
async fn consumers(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    Ok(channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?
        .consumer_count())
}

/// Deletes `queue` if it holds no message; whether it did. Quorum queues refuse `if-empty`
/// deletions, so the count is read first: `queue` is unbound by then, so that nothing but a
/// publisher naming it (none of the services does) could add a message in between.
async fn delete_if_empty(channel: &Channel, queue: &str) -> Result<bool, lapin::Error> {
    if crate::topology::ready_count(channel, queue).await? > 0 {
        return Ok(false);
    }
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(true)
}

/// Step 2: `queue` declared as wanted, its messages and bindings back from its holding queue,
/// the holding queue deleted.
async fn refill_from_holding_queue(
    channel: &Channel,
    queue: &QueueDeclaration,
) -> Result<u64, MigrateError> {
    let holding = holding_queue(&queue.name);
    queue.declare(channel).await?;
    unbind(channel, &holding, &queue.bindings).await?;
    let mut count = 0;
    for _ in 0..100 {
        count += move_messages(channel, &holding, &queue.name).await?;
        if delete_if_empty(channel, &holding).await? {
            return Ok(count);
        }
    }
    Err(MigrateError::InUse { queue: holding })
}

async fn unbind(
    channel: &Channel,
    queue: &str,
    bindings: &[(String, String)],
) -> Result<(), lapin::Error> {
    for (exchange, routing_key) in bindings {
        channel
            .queue_unbind(
                queue.into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Moves every ready message of `from` to `to`, each acknowledged once its copy is confirmed.
async fn move_messages(channel: &Channel, from: &str, to: &str) -> Result<u64, MigrateError> {
    let mut count = 0;
    while let Some(message) = channel
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        match republish(channel, "", to, &delivery, headers, CONFIRM_TIMEOUT).await {
            Ok(()) => {}
            Err(PublishError::Channel(error)) => return Err(error.into()),
            Err(error) => return Err(MigrateError::NotConfirmed(error.to_string())),
        }
        delivery.ack(BasicAckOptions::default()).await?;
        count += 1;
    }
    Ok(count)
}
