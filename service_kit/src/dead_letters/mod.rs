//! A dead-letter queue as an operator sees it: list without consuming, replay to the work queue.
//! Both services use it for their own queue, over HTTP ([`http`]) and from their command line
//! ([`cli`]).
//!
//! A listing or replay takes the queue's messages unacknowledged until it ends, so one at a time
//! browses a queue (a [`Turn`]): another, on this instance or any other sharing the broker, waits
//! for it instead of finding the queue empty, and a migration of the queue refuses to start.
//!
//! A message may be dead-lettered more than once (a crash between publishing the dead letter and
//! acknowledging the delivery, or a copy redelivered after the failure was recorded): copies share
//! their `message_id`, and listing and replay count them once.

pub mod cli;
pub mod http;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use messaging::broker::Broker;
use messaging::failure::{Classify, FailureClass};
use messaging::headers::{self, Headers};
use messaging::topology::ready_count;
use messaging::turn::{Turn, TurnError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How long a listing or replay waits for its turn.
pub const TURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a listing or replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// Another listing or replay of the queue (or its migration) held it for longer than
    /// [`TURN_TIMEOUT`].
    #[error("another listing, replay or migration of {0} ran longer than {TURN_TIMEOUT:?}")]
    Busy(String),
}

impl From<TurnError> for DeadLetterError {
    fn from(error: TurnError) -> Self {
        match error {
            TurnError::Broker(error) => Self::Broker(error),
            TurnError::Taken(queue) => Self::Busy(queue),
        }
    }
}

impl Classify for DeadLetterError {
    fn class(&self) -> FailureClass {
        match self {
            Self::Broker(error) => error.class(),
            Self::Busy(_) => FailureClass::Unavailable,
        }
    }
}

/// Runs `browse` in the queue's turn, and ends the turn whatever it answered.
async fn in_turn<T, F>(
    connection: &lapin::Connection,
    queue: &str,
    browse: F,
) -> Result<T, DeadLetterError>
where
    F: std::future::Future<Output = Result<T, lapin::Error>>,
{
    let turn = Turn::take(connection, queue, TURN_TIMEOUT).await?;
    let browsed = browse.await;
    let ended = turn.end().await;
    let browsed = browsed?;
    ended?;
    Ok(browsed)
}

/// A dead-lettered message, from its headers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// Null for a poison message (one whose content could not be trusted to name an order).
    pub order_id: Option<Uuid>,
    /// The AMQP `message_id` (the event id), when it had one.
    pub event_id: Option<String>,
    #[schema(example = "gave up after 5 attempts: transient failure: injected transient failure")]
    pub reason: String,
    /// Deliveries it had.
    pub attempts: u32,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    /// Not replayed unless asked (`include_poison`).
    pub poison: bool,
    /// Copies of this message in the queue (same `message_id`).
    pub copies: u32,
}

/// Which dead letters to replay.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only these orders; all when absent.
    #[serde(default)]
    pub order_ids: Option<Vec<Uuid>>,
    /// Replay poison messages too.
    #[serde(default)]
    pub include_poison: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayResult {
    pub replayed: usize,
}

impl DeadLetter {
    fn from_delivery(delivery: &lapin::message::Delivery) -> Self {
        let headers = Headers::from_table(delivery.properties.headers().as_ref());
        // A message the broker dead-lettered itself (a quorum queue's delivery limit) has none of
        // this pipeline's headers: its order comes from its envelope, its reason from `x-death`.
        let broker_reason = headers
            .death_reason()
            .map(|reason| format!("dead-lettered by the broker: {reason}"));
        Self {
            order_id: headers
                .str(headers::ORDER_ID)
                .and_then(|id| id.parse().ok())
                // Poison is by definition a message whose content cannot be trusted to name one.
                .or_else(|| (!headers.bool(headers::POISON)).then(|| order_of(&delivery.data))?),
            event_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            reason: headers
                .str(headers::FAILURE_REASON)
                .or(broker_reason)
                .unwrap_or_else(|| "unknown".to_owned()),
            attempts: headers
                .int(headers::ATTEMPTS)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            first_failed_at: headers.time(headers::FIRST_FAILED_AT),
            last_failed_at: headers.time(headers::LAST_FAILED_AT),
            poison: headers.bool(headers::POISON),
            copies: 1,
        }
    }
}

/// The order an envelope names (its `correlation_id`), if the body is one.
fn order_of(body: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct Named {
        correlation_id: Uuid,
    }
    serde_json::from_slice::<Named>(body)
        .ok()
        .map(|named| named.correlation_id)
}

/// Lists up to `limit` dead letters, oldest first, copies of one message once. They are taken
/// unacknowledged and returned to the queue when the channel closes: nothing is consumed.
pub async fn list(
    broker: &Broker,
    queue: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let connection = broker.connection().await?;
    in_turn(&connection, queue, browse(&connection, queue, limit)).await
}

async fn browse(
    connection: &lapin::Connection,
    queue: &str,
    limit: usize,
) -> Result<Vec<DeadLetter>, lapin::Error> {
    let channel = connection.create_channel().await?;
    let count = ready_count(&channel, queue).await?;
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    let mut taken = 0;
    for _ in 0..count {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        taken += 1;
        let letter = DeadLetter::from_delivery(&message.delivery);
        match letter.event_id.as_ref().and_then(|id| by_id.get(id)) {
            Some(&index) => {
                if let Some(first) = letters.get_mut(index) {
                    let first: &mut DeadLetter = first;
                    first.copies = first.copies.saturating_add(1);
                }
            }
            None if letters.len() < limit => {
                if let Some(id) = &letter.event_id {
                    by_id.insert(id.clone(), letters.len());
                }
                letters.push(letter);
            }
            None => {}
        }
    }
    channel.close(200, "OK".into()).await?;
    wait_until_returned(connection, queue, taken).await?;
    Ok(letters)
}

/// The longest wait for the messages a listing took to be ready in their queue again.
const RETURN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (at most [`RETURN_TIMEOUT`]) until `queue` holds at least `taken` ready messages again.
/// A closed channel's unacknowledged messages go back to their queue after the close completes
/// (on a quorum queue, once the return is committed through Raft): without this wait, a replay
/// right after a listing could find the queue momentarily empty.
async fn wait_until_returned(
    connection: &lapin::Connection,
    queue: &str,
    taken: u32,
) -> Result<(), lapin::Error> {
    if taken == 0 {
        return Ok(());
    }
    let channel = connection.create_channel().await?;
    let deadline = tokio::time::Instant::now() + RETURN_TIMEOUT;
    while ready_count(&channel, queue).await? < taken && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    channel.close(200, "OK".into()).await?;
    Ok(())
}

/// The longest wait for the broker's confirm of one replayed message.
const REPLAY_CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Moves the selected dead letters back to `work_queue` with a fresh attempt count; the others stay.
/// Each one is acknowledged on the dead-letter queue only after the broker confirmed its copy; a
/// further copy of a message replayed here is removed without being replayed again. Returns how
/// many messages were replayed (copies once).
pub async fn replay(
    broker: &Broker,
    queue: &str,
    work_queue: &str,
    request: &ReplayRequest,
) -> Result<usize, DeadLetterError> {
    let connection = broker.connection().await?;
    in_turn(
        &connection,
        queue,
        move_back(&connection, queue, work_queue, request),
    )
    .await
}

async fn move_back(
    connection: &lapin::Connection,
    queue: &str,
    work_queue: &str,
    request: &ReplayRequest,
) -> Result<usize, lapin::Error> {
    let wanted: Option<HashSet<Uuid>> = request
        .order_ids
        .as_ref()
        .map(|ids| ids.iter().copied().collect());
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let count = ready_count(&channel, queue).await?;
    let mut replayed = 0;
    let mut replayed_ids = HashSet::new();
    let mut left = 0;
    for _ in 0..count {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let letter = DeadLetter::from_delivery(&delivery);
        let selected = match (&wanted, letter.order_id) {
            _ if letter.poison && !request.include_poison => false,
            (None, _) => true,
            (Some(wanted), Some(order_id)) => wanted.contains(&order_id),
            (Some(_), None) => false,
        };
        if !selected {
            // Left unacknowledged: back to the queue when the channel closes.
            left += 1;
            continue;
        }
        if let Some(id) = &letter.event_id
            && replayed_ids.contains(id)
        {
            delivery.ack(BasicAckOptions::default()).await?;
            tracing::info!(order_id = ?letter.order_id, event_id = %id, "copy of a replayed dead letter removed");
            continue;
        }
        let mut fresh = Headers::from_table(delivery.properties.headers().as_ref());
        for name in [
            headers::ATTEMPT,
            headers::ATTEMPTS,
            headers::FAILURE_REASON,
            headers::FIRST_FAILED_AT,
            headers::LAST_FAILED_AT,
            headers::POISON,
        ] {
            fresh.remove(name);
        }
        fresh.set_str(headers::REPLAYED_AT, headers::now_rfc3339());
        let published = messaging::broker::republish(
            &channel,
            "",
            work_queue,
            &delivery,
            fresh.into_table(),
            REPLAY_CONFIRM_TIMEOUT,
        )
        .await;
        match published {
            Ok(()) => {}
            Err(messaging::broker::PublishError::Channel(error)) => return Err(error),
            Err(error) => {
                tracing::warn!(order_id = ?letter.order_id, %error, "replay not confirmed; left in the dead-letter queue");
                continue;
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
        tracing::info!(order_id = ?letter.order_id, event_id = ?letter.event_id, "dead letter replayed");
        replayed += 1;
        if let Some(id) = letter.event_id {
            replayed_ids.insert(id);
        }
    }
    channel.close(200, "OK".into()).await?;
    wait_until_returned(connection, queue, left).await?;
    Ok(replayed)
}
