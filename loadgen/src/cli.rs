//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and benchmark of the order pipeline"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Post orders and follow each to its final status; report throughput and latency.
    Run(RunArgs),
    /// Measure what RabbitMQ and PostgreSQL alone can do on this machine.
    Limits(LimitsArgs),
    /// `limits`, then maximum closed-loop throughput, then open loop at 25% and 50% of it.
    Bench(BenchArgs),
    /// Bulk-load completed orders (with their history) into the order service's database.
    Seed(SeedArgs),
}

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The order service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// RabbitMQ, to follow `order.processed`.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// The pipeline's topic exchange.
    #[arg(long, default_value = "orders")]
    pub exchange: String,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// PIDs of the services, for their peak RSS (VmHWM).
    #[arg(long)]
    pub order_service_pid: Option<u32>,
    /// Repeatable: the CPU of several processors is summed, the peak RSS is the first's.
    #[arg(long)]
    pub processor_service_pid: Vec<u32>,
    /// PID of the PostgreSQL server's main process (the postmaster), to report its CPU per
    /// order with its backends'.
    #[arg(long)]
    pub postgres_pid: Option<u32>,
    /// PID of the RabbitMQ node (`beam.smp`), to report its CPU per order; repeatable, for the
    /// nodes of a cluster (their CPU summed).
    #[arg(long)]
    pub rabbitmq_pid: Vec<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    /// Orders to post.
    #[arg(long, default_value_t = 1000)]
    pub orders: u64,
    /// Closed loop: this many clients, each posting its next order when the last was accepted.
    #[arg(long, default_value_t = 32, conflicts_with = "rate")]
    pub concurrency: usize,
    /// Open loop: orders per second at fixed arrival times (latency counts from the schedule).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: send from this many threads, each with its own runtime and connections, taking
    /// every n-th order of the schedule. One keeps the fewest context switches; more keep up with
    /// rates one thread cannot (an overload, where most requests are refused).
    #[arg(long, default_value_t = 1, requires = "rate", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Share of orders over the rejection limit (0.0..=1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub reject_ratio: f64,
    /// The processor's rejection limit, to build totals below or above it.
    #[arg(long, default_value = "10000.00")]
    pub max_order_total: rust_decimal::Decimal,
    /// How long to wait for the last orders to become final, in seconds.
    #[arg(long, default_value_t = 60)]
    pub deadline_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw latency percentiles and throughput over time to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Send each order with an `Idempotency-Key` of its own (a fresh UUID), as a client that
    /// retries safely does.
    #[arg(long)]
    pub idempotency_keys: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// A database to create a scratch table in (dropped afterwards).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Messages through RabbitMQ.
    #[arg(long, default_value_t = 50_000)]
    pub messages: u64,
    /// Committed inserts into PostgreSQL.
    #[arg(long, default_value_t = 20_000)]
    pub inserts: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Databases to `VACUUM ANALYZE` before each run (repeatable): stands in for autovacuum
    /// where the server runs without it, so that runs do not inherit the previous runs' dead rows.
    #[arg(long = "vacuum")]
    pub vacuum: Vec<String>,
    /// Do not `CHECKPOINT` the `--database-url` server and `sync` before each run. By default
    /// each run starts on a settled disk instead of paying for the write-back of the runs before
    /// it (a closed-loop run leaves hundreds of MB that the kernel writes some 30 s later).
    #[arg(long)]
    pub no_settle: bool,
    /// Do not measure the limits again at the end. By default they are, and the report says how
    /// far they moved during the bench (a shared machine's can fall by a third within the hour).
    #[arg(long)]
    pub no_recheck: bool,
    /// Orders per run.
    #[arg(long, default_value_t = 20_000)]
    pub orders: u64,
    /// Clients of the closed-loop run.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Orders of an unreported closed-loop run first (0: none). On fresh, empty tables the
    /// first statements cache plans made for empty tables, which stay until the next ANALYZE; the
    /// warm-up and the `--vacuum` after it stand in for the
    /// autovacuum of a long-running server.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: u64,
    #[arg(long, default_value_t = 120)]
    pub deadline_seconds: u64,
    /// Send each order with an `Idempotency-Key` of its own.
    #[arg(long)]
    pub idempotency_keys: bool,
    #[arg(long)]
    pub json: bool,
    /// Plot of the 25% run.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// The order service's database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/orders")]
    pub database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    pub orders: u64,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not within 0.0..=1.0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_loop_run_parses_with_defaults() {
        let cli = Cli::try_parse_from(["loadgen", "run", "--orders", "500", "--concurrency", "8"])
            .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.orders, 500);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.rate, None);
        assert_eq!(args.target.url, "http://127.0.0.1:8000");
    }

    #[test]
    fn rate_and_concurrency_exclude_each_other_and_ratios_are_bounded() {
        assert!(
            Cli::try_parse_from(["loadgen", "run", "--rate", "100", "--concurrency", "8"]).is_err()
        );
        assert!(Cli::try_parse_from(["loadgen", "run", "--reject-ratio", "1.5"]).is_err());
        let cli = Cli::try_parse_from([
            "loadgen",
            "run",
            "--rate",
            "250.5",
            "--reject-ratio",
            "0.1",
            "--json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.rate, Some(250.5));
        assert!(args.json);
    }

    #[test]
    fn bench_limits_and_seed_parse() {
        assert!(
            Cli::try_parse_from(["loadgen", "bench", "--orders", "100", "--repeat", "1"]).is_ok()
        );
        match Cli::try_parse_from(["loadgen", "bench", "--warmup", "0"]).map(|cli| cli.command) {
            Ok(Command::Bench(args)) => assert_eq!(args.warmup, 0),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["loadgen", "bench"]).map(|cli| cli.command) {
            Ok(Command::Bench(args)) => {
                assert_eq!(args.warmup, 2_000);
                assert!(!args.no_settle, "runs start on a settled disk by default");
                assert!(!args.no_recheck, "the limits are measured again at the end");
            }
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["loadgen", "bench", "--no-settle", "--no-recheck"])
            .map(|cli| cli.command)
        {
            Ok(Command::Bench(args)) => assert!(args.no_settle && args.no_recheck),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["loadgen", "limits", "--messages", "10"]).is_ok());
        assert!(Cli::try_parse_from(["loadgen", "seed", "--orders", "10"]).is_ok());
    }
}

/// The tokens' `iss` and `aud` unless told otherwise (what `scripts/bench.sh` configures).
const TOKEN_ISSUER: &str = "order-pipeline-bench";
const TOKEN_AUDIENCE: &str = "order-pipeline";

/// Bearer tokens on every POST, one per customer, signed with the key the services verify with.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Sign tokens this way (with `--token-key`); none: no `Authorization` header.
    #[arg(long, value_enum, requires = "token_key")]
    pub token_signing: Option<crate::tokens::Signing>,
    /// The HS256 secret, or the PEM private key.
    #[arg(long)]
    pub token_key: Option<PathBuf>,
    /// The tokens' `iss` (the services' `AUTH__ISSUER`).
    #[arg(long, default_value = TOKEN_ISSUER)]
    pub token_issuer: String,
    /// The tokens' `aud` (the services' `AUTH__AUDIENCE`).
    #[arg(long, default_value = TOKEN_AUDIENCE)]
    pub token_audience: String,
}

impl Default for TokenArgs {
    fn default() -> Self {
        Self {
            token_signing: None,
            token_key: None,
            token_issuer: TOKEN_ISSUER.into(),
            token_audience: TOKEN_AUDIENCE.into(),
        }
    }
}

impl TokenArgs {
    /// The tokens these arguments ask for (none without `--token-signing`).
    pub fn sign(&self) -> anyhow::Result<crate::tokens::Tokens> {
        match (self.token_signing, &self.token_key) {
            (Some(signing), Some(key)) => {
                crate::tokens::Tokens::sign(signing, key, &self.token_issuer, &self.token_audience)
            }
            _ => Ok(crate::tokens::Tokens::default()),
        }
    }
}
