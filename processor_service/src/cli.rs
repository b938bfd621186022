//! The command line: `processor_service` runs the service; `processor_service dead-letters ...`
//! lets an operator without HTTP access list and replay dead letters.

use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::configuration::Settings;
use crate::dead_letters::{self, ReplayRequest, ReplayResult};

#[derive(Debug, Parser)]
#[command(
    name = "processor_service",
    version,
    about = "Decides orders from order.created events; with no subcommand, runs the service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and replay the dead-letter queue of order.created.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Print the dead letters as JSON, without consuming them.
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

/// Runs a dead-letter command against the configured broker; returns what to print.
pub async fn run_dead_letters(
    settings: &Settings,
    command: DeadLettersCommand,
) -> anyhow::Result<String> {
    let broker = shared::broker::Broker::new(
        settings.amqp.url.clone(),
        settings.amqp.topology(),
        "processor_service-cli",
    );
    let queue = &settings.amqp.order_created_dead_letter_queue;
    let output = match command {
        DeadLettersCommand::List { limit } => {
            serde_json::to_string_pretty(&dead_letters::list(&broker, queue, limit).await?)?
        }
        DeadLettersCommand::Replay {
            order_ids,
            include_poison,
        } => {
            let request = ReplayRequest {
                order_ids: (!order_ids.is_empty()).then_some(order_ids),
                include_poison,
            };
            let replayed =
                dead_letters::replay(&broker, queue, &settings.amqp.order_created_queue, &request)
                    .await?;
            serde_json::to_string(&ReplayResult { replayed })?
        }
    };
    broker.close().await;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        let cli = Cli::try_parse_from(["processor_service"]).unwrap();
        assert!(cli.command.is_none());
        let id = Uuid::new_v4().to_string();
        let cli = Cli::try_parse_from([
            "processor_service",
            "dead-letters",
            "replay",
            "--order-id",
            &id,
            "--order-id",
            &id,
            "--include-poison",
        ])
        .unwrap();
        match cli.command {
            Some(Command::DeadLetters(DeadLettersCommand::Replay {
                order_ids,
                include_poison,
            })) => {
                assert_eq!(order_ids.len(), 2);
                assert!(include_poison);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from([
                "processor_service",
                "dead-letters",
                "replay",
                "--order-id",
                "x"
            ])
            .is_err()
        );
    }
}
