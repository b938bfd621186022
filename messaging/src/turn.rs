//! One holder at a time for a queue whose messages a holder takes unacknowledged (a dead-letter
//! listing or replay) or replaces (a migration): the exclusive consumer of `<queue>.browsing`, an
//! empty queue the broker deletes when its last consumer leaves. The broker gives it to one
//! channel at a time, whichever instance asks, and takes it back when that channel closes: at the
//! end of the turn, or when its holder is dropped or its connection dies.

use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

/// How often a holder waiting for its turn asks for it again.
const POLL: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// Another holder kept the queue's turn past the wait.
    #[error("{0} is in another listing, replay or migration")]
    Taken(String),
}

/// A queue's turn, held until [`Turn::end`] or until dropped.
pub struct Turn {
    channel: lapin::Channel,
    /// Held for the turn: a dropped consumer cancels itself.
    _consumer: lapin::Consumer,
}

impl Turn {
    /// `queue`'s turn, waiting up to `wait` for another holder to end theirs (zero: asks once).
    pub async fn take(
        connection: &lapin::Connection,
        queue: &str,
        wait: Duration,
    ) -> Result<Self, TurnError> {
        let turns = format!("{queue}.browsing");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // A refusal closes the channel: each attempt on a fresh one.
            let channel = connection.create_channel().await?;
            match hold(&channel, &turns).await {
                Ok(consumer) => {
                    return Ok(Self {
                        channel,
                        _consumer: consumer,
                    });
                }
                Err(error) if is_taken(&error) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(TurnError::Taken(queue.to_owned()));
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    pub async fn end(self) -> Result<(), lapin::Error> {
        self.channel.close(200, "OK".into()).await
    }
}

async fn hold(channel: &lapin::Channel, turns: &str) -> Result<lapin::Consumer, lapin::Error> {
    // Classic whatever the broker's default type: a quorum queue cannot delete itself.
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    channel
        .queue_declare(
            turns.into(),
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    channel
        .basic_consume(
            turns.into(),
            "turn".into(),
            BasicConsumeOptions {
                exclusive: true,
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Someone else's turn: its exclusive consumer refuses ours (`ACCESS_REFUSED ... in exclusive
/// use`), or its queue went away with it between our declaration and our consumer.
fn is_taken(error: &lapin::Error) -> bool {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(refusal) => match refusal.get_id() {
            403 => refusal.get_message().as_str().contains("exclusive use"),
            404 => true,
            _ => false,
        },
        _ => false,
    }
}
