//! `<service> dead-letters list|replay`: the dead-letter operations for an operator without HTTP
//! access, with the service's own configuration. JSON on stdout.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use uuid::Uuid;

use super::{ReplayRequest, ReplayResult};
use crate::configuration::Secret;
use messaging::topology::{RetryTiers, Topology};

/// A service's command line: without a subcommand it runs the service; `dead-letters ...` operates
/// the service's dead-letter queue.
#[derive(Debug, Parser)]
#[command(version)]
pub struct ServiceCli {
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Inspect and replay the service's dead-letter queue.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Operate the queues the service consumes.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Print a development token signed with the key in AUTH__HS256_SECRET_FILE (generated if
    /// missing), for a customer or an operator.
    DevToken(crate::auth::dev::DevTokenArgs),
}

impl ServiceCli {
    /// The process's arguments, for the program `name` that `about` describes; bad ones exit with
    /// clap's message.
    pub fn parse_as(name: &'static str, about: &'static str) -> Self {
        Self::try_parse_as(std::env::args_os(), name, about).unwrap_or_else(|error| error.exit())
    }

    pub fn try_parse_as<I, T>(
        args: I,
        name: &'static str,
        about: &'static str,
    ) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command()
            .name(name)
            .about(about)
            .try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

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

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Redeclare the service's work, dead-letter and retry queues as AMQP__QUEUE_TYPE says
    /// (classic to quorum), moving their messages; with the services stopped. Prints what it
    /// moved as JSON ([] when every queue is already as declared).
    Migrate,
}

/// The queues a service consumes, and the brokers they live on.
pub struct ServiceQueues {
    /// The brokers, tried in turn ([`messaging::settings::AmqpSettings::addresses`]).
    pub urls: Vec<Secret>,
    pub topology: Topology,
    pub work_queue: String,
    pub dead_letter_queue: String,
    /// The work queue's retry queues.
    pub retry: RetryTiers,
    /// Names the broker connection.
    pub connection_name: &'static str,
    pub heartbeat_seconds: u16,
    /// The CA and client certificate of an `amqps://` URL.
    pub tls: lapin::tcp::OwnedTLSConfig,
}

impl ServiceQueues {
    fn broker(&self) -> std::sync::Arc<messaging::broker::Broker> {
        messaging::broker::Broker::with_tls(
            self.urls.clone(),
            self.topology.clone(),
            self.connection_name,
            self.heartbeat_seconds,
            self.tls.clone(),
        )
    }
}

/// Runs `command` against the configured broker; returns what to print.
pub async fn run_queues(queues: ServiceQueues, command: QueuesCommand) -> anyhow::Result<String> {
    let broker = messaging::broker::Broker::declaring_nothing(
        queues.urls.clone(),
        queues.connection_name,
        queues.heartbeat_seconds,
        queues.tls.clone(),
    );
    let output = match command {
        QueuesCommand::Migrate => {
            let declarations = [
                queues.topology.queues_of(&queues.work_queue),
                queues.retry.declarations(),
            ]
            .concat();
            let migrated = messaging::migrate::migrate(&broker, &declarations).await;
            broker.close().await;
            serde_json::to_string_pretty(&migrated?)?
        }
    };
    Ok(output)
}

/// Runs `command` against the configured broker; returns what to print.
pub async fn run(queues: ServiceQueues, command: DeadLettersCommand) -> anyhow::Result<String> {
    let broker = queues.broker();
    let queues = &queues;
    let output = match command {
        DeadLettersCommand::List { limit } => {
            let letters = super::list(&broker, &queues.dead_letter_queue, limit).await?;
            crate::audit::operator_action(
                crate::audit::COMMAND_LINE,
                crate::audit::LIST_DEAD_LETTERS,
                &queues.dead_letter_queue,
                letters.len(),
            );
            serde_json::to_string_pretty(&letters)?
        }
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
                &queues.dead_letter_queue,
                &queues.work_queue,
                &request,
            )
            .await?;
            crate::audit::operator_action(
                crate::audit::COMMAND_LINE,
                crate::audit::REPLAY_DEAD_LETTERS,
                &queues.dead_letter_queue,
                replayed,
            );
            serde_json::to_string(&ReplayResult { replayed })?
        }
    };
    broker.close().await;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServiceCli, clap::Error> {
        ServiceCli::try_parse_as(args, "some_service", "does things")
    }

    #[test]
    fn the_command_line_parses() {
        assert!(parse(&["some_service"]).unwrap().command.is_none());
        let id = Uuid::new_v4().to_string();
        let cli = parse(&[
            "some_service",
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
            Some(ServiceCommand::DeadLetters(DeadLettersCommand::Replay {
                order_ids,
                include_poison,
            })) => {
                assert_eq!(order_ids.len(), 2);
                assert!(include_poison);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["some_service", "dead-letters", "replay", "--order-id", "x"]).is_err());
        let help = parse(&["some_service", "--help"]).unwrap_err().to_string();
        assert!(
            help.contains("some_service") && help.contains("does things"),
            "{help}"
        );
    }
}
