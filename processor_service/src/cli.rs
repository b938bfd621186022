//! The command line: `processor_service` runs the service; `processor_service dead-letters ...`
//! lets an operator without HTTP access list and replay the dead letters of `order.created`.

use clap::{Parser, Subcommand};
use shared::dead_letters::cli::{DeadLetterQueues, DeadLettersCommand};

use crate::configuration::Settings;

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

/// Runs a dead-letter command against the configured broker; returns what to print.
pub async fn run_dead_letters(
    settings: &Settings,
    command: DeadLettersCommand,
) -> anyhow::Result<String> {
    let queues = DeadLetterQueues {
        url: &settings.amqp.url,
        topology: settings.amqp.topology(),
        dead_letter_queue: &settings.amqp.order_created_dead_letter_queue,
        work_queue: &settings.amqp.order_created_queue,
        heartbeat_seconds: settings.amqp.heartbeat_seconds,
        connection_name: "processor_service-cli",
    };
    shared::dead_letters::cli::run(queues, command).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

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
