use clap::Parser;
use loadgen::cli::{BenchArgs, Cli, Command, RunArgs};
use loadgen::report::{Report, median};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let report = loadgen::run::run(&args).await?;
            if let Some(path) = &args.plot {
                loadgen::plot::draw(&report, path)?;
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            if !report.passed() {
                anyhow::bail!("{} accepted orders did not become final", report.not_final);
            }
        }
        Command::Limits(args) => {
            let limits = loadgen::limits::measure(
                &args.amqp_url,
                &args.database_url,
                args.messages,
                args.inserts,
            )
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&limits)?);
            } else {
                println!(
                    "RabbitMQ  {:.0} msg/s (ack each), {:.0} msg/s (ack 50 at a time)\nPostgreSQL {:.0} insert commits/s (8 connections)\nbroker-bound pipeline: {:.0} orders/s",
                    limits.rabbitmq_msgs_per_s_ack_each,
                    limits.rabbitmq_msgs_per_s_ack_50,
                    limits.postgres_inserts_per_s,
                    limits.broker_bound_orders_per_s()
                );
                println!("{}", floors(&limits));
            }
        }
        Command::Bench(args) => bench(args).await?,
        Command::Seed(args) => {
            let rate = loadgen::seed::seed(&args.database_url, args.orders).await?;
            println!("seeded {} orders at {rate:.0} orders/s", args.orders);
        }
    }
    Ok(())
}

/// What `bench` does before each run, so that a run does not inherit the state of the last.
struct BeforeEachRun<'a> {
    /// Databases to `VACUUM ANALYZE`.
    vacuum: &'a [String],
    /// The server to `CHECKPOINT` (then `sync`), unless `--no-settle`.
    settle: Option<&'a str>,
}

async fn repeat(
    args: &RunArgs,
    times: usize,
    before: &BeforeEachRun<'_>,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for _ in 0..times.max(1) {
        for url in before.vacuum {
            loadgen::seed::vacuum(url).await?;
        }
        if let Some(url) = before.settle {
            loadgen::seed::settle(url).await?;
        }
        let report = loadgen::run::run(args).await?;
        eprint!("{}", report.text());
        if !report.passed() {
            anyhow::bail!("{} accepted orders did not become final", report.not_final);
        }
        reports.push(report);
    }
    Ok(reports)
}

fn med(reports: &[Report], f: impl Fn(&Report) -> f64) -> f64 {
    median(&mut reports.iter().map(f).collect::<Vec<_>>())
}

/// The median CPU per order of the runs, program by program.
fn med_cpu(reports: &[Report]) -> Option<loadgen::cpu::CpuReport> {
    loadgen::cpu::median(reports.iter().filter_map(|r| r.cpu.as_ref()))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    // Measured before the runs, and again after them (unless `--no-recheck`).
    let measure_limits =
        || loadgen::limits::measure(&args.target.amqp_url, &args.database_url, 50_000, 20_000);
    let limits = measure_limits().await?;
    eprintln!("limits: {limits:?}");
    let base = RunArgs {
        target: args.target.clone(),
        orders: args.orders,
        concurrency: args.concurrency,
        rate: None,
        threads: 1,
        reject_ratio: 0.0,
        max_order_total: "10000.00".parse()?,
        deadline_seconds: args.deadline_seconds,
        json: false,
        plot: None,
        quiet: true,
        idempotency_keys: args.idempotency_keys,
    };
    let before = BeforeEachRun {
        vacuum: &args.vacuum,
        settle: (!args.no_settle).then_some(args.database_url.as_str()),
    };
    if args.warmup > 0 {
        let warmup = RunArgs {
            orders: args.warmup,
            ..base.clone()
        };
        eprintln!("warm-up ({} orders, not reported):", args.warmup);
        repeat(&warmup, 1, &before).await?;
    }
    // `repeat` vacuums and analyzes before each run, so the first measured run plans with the
    // warm-up's statistics.
    let closed = repeat(&base, args.repeat, &before).await?;
    let max = med(&closed, |r| r.final_per_s);
    let mut open = Vec::new();
    for share in [0.25, 0.5] {
        let run = RunArgs {
            rate: Some(max * share),
            plot: if share == 0.25 {
                args.plot.clone()
            } else {
                None
            },
            ..base.clone()
        };
        let reports = repeat(&run, args.repeat, &before).await?;
        if let (Some(path), Some(report)) = (&run.plot, reports.first()) {
            loadgen::plot::draw(report, path)?;
        }
        open.push((share, reports));
    }
    // The same limits again: on a shared machine they can move a lot within the bench.
    let limits_after = if args.no_recheck {
        None
    } else {
        let after = measure_limits().await?;
        eprintln!("limits at the end: {after:?}");
        Some(after)
    };
    let drift = limits_after.as_ref().map(|after| limits.drift(after));
    let bound = limits.broker_bound_orders_per_s();
    let quarter = open
        .iter()
        .find(|(share, _)| *share == 0.25)
        .map_or(&[][..], |(_, reports)| reports.as_slice());
    let ratios = loadgen::ratios::Ratios::of(&limits, &closed, quarter);
    let summary = json!({
        "limits": limits,
        "limits_at_the_end": limits_after,
        "drift_of_the_limits": drift,
        "broker_bound_orders_per_s": bound,
        "max_closed_loop": {
            "final_per_s": max,
            "accepted_per_s": med(&closed, |r| r.accepted_per_s),
            "ratio_to_broker_bound": max / bound,
            "cpu": med_cpu(&closed),
            "end_to_end_p99_ms": med(&closed, |r| r.end_to_end_latency.p99_ms),
            "peak_rss_order_service_mib": closed.iter().filter_map(|r| r.peak_rss_order_service_mib).fold(0.0, f64::max),
            "peak_rss_processor_service_mib": closed.iter().filter_map(|r| r.peak_rss_processor_service_mib).fold(0.0, f64::max),
        },
        "open_loop": open.iter().map(|(share, reports)| json!({
            "share_of_max": share,
            "rate": max * share,
            "final_per_s": med(reports, |r| r.final_per_s),
            "post_p99_ms": med(reports, |r| r.post_latency.p99_ms),
            "end_to_end_p50_ms": med(reports, |r| r.end_to_end_latency.p50_ms),
            "end_to_end_p99_ms": med(reports, |r| r.end_to_end_latency.p99_ms),
            "cpu": med_cpu(reports),
        })).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "RabbitMQ alone: {:.0} msg/s acking each ({:.0} acking 50 at a time); PostgreSQL alone: {:.0} insert commits/s",
            limits.rabbitmq_msgs_per_s_ack_each,
            limits.rabbitmq_msgs_per_s_ack_50,
            limits.postgres_inserts_per_s
        );
        println!("broker-bound pipeline: {bound:.0} orders/s");
        println!("{}", floors(&limits));
        println!(
            "max closed loop: {max:.0} orders final/s = {:.0}% of the broker bound",
            100.0 * max / bound
        );
        if let Some(cpu) = med_cpu(&closed) {
            println!("  CPU per order: {}", cpu.text());
        }
        for (share, reports) in &open {
            println!(
                "open loop at {:.0}% ({:.0}/s): POST p99 {:.2} ms (loadgen late to send: p99 {:.2} ms), create->final p50 {:.2} ms p99 {:.2} ms",
                share * 100.0,
                max * share,
                med(reports, |r| r.post_latency.p99_ms),
                med(reports, |r| r.send_lag.as_ref().map_or(0.0, |l| l.p99_ms)),
                med(reports, |r| r.end_to_end_latency.p50_ms),
                med(reports, |r| r.end_to_end_latency.p99_ms),
            );
            if let Some(cpu) = med_cpu(reports) {
                println!("  CPU per order: {}", cpu.text());
            }
        }
        match &ratios {
            Some(ratios) => println!("{}", ratios.text()),
            None => println!("ratios at 25%: not measured without both services' PIDs"),
        }
        if let (Some(after), Some(drift)) = (&limits_after, drift) {
            println!(
                "limits at the end: RabbitMQ {:.0} msg/s ({:+.0}%), PostgreSQL {:.0} commits/s ({:+.0}%), one commit alone p99 {:.2} ms ({:+.0}%)",
                after.rabbitmq_msgs_per_s_ack_each,
                100.0 * drift.rabbitmq,
                after.postgres_inserts_per_s,
                100.0 * drift.postgres,
                after.postgres_commit_latency.p99_ms,
                100.0 * drift.commit_p99,
            );
            if drift.is_large() {
                println!(
                    "WARNING: the machine's own limits moved by more than {:.0}% during the bench: its numbers measure the machine as much as the pipeline",
                    100.0 * loadgen::limits::Drift::TOLERATED
                );
            }
        }
    }
    Ok(())
}

/// The latency floors, one line each.
fn floors(limits: &loadgen::limits::Limits) -> String {
    let line = |what: &str, latency: &loadgen::report::Latency| {
        format!(
            "{what} alone, one at a time at {}/s: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            loadgen::limits::FLOOR_RATE,
            latency.p50_ms,
            latency.p99_ms,
            latency.max_ms
        )
    };
    format!(
        "{}\n{}",
        line("PostgreSQL commit", &limits.postgres_commit_latency),
        line(
            "RabbitMQ persistent publish+confirm",
            &limits.rabbitmq_confirm_latency
        )
    )
}
