//! What a quarter of the maximum costs against the maximum, and its latency against the floors
//! this machine measured in the same bench: the three ratios `loadgen bench` judges the pipeline
//! by at moderate rates.
//!
//! - CPU per order of the two services at 25% of the maximum over their CPU per order at the
//!   maximum (target at most [`CPU_TARGET`]): the same work should cost the same at any load.
//!   PostgreSQL's and RabbitMQ's ratio is reported beside it, not judged.
//! - POST p99 at 25% over the p99 of one PostgreSQL commit alone (at most [`POST_TARGET`]): an
//!   accepted order waits for one commit.
//! - create→final p99 at 25% over the sum of the floors' p99s, three commits and two confirmed
//!   publishes, what an order needs in sequence (at most [`END_TO_END_TARGET`]).

use serde::Serialize;

use crate::cpu::CpuReport;
use crate::limits::Limits;
use crate::report::{Report, median};

/// The services' CPU per order at 25% may be at most this many times their CPU at the maximum.
pub const CPU_TARGET: f64 = 1.5;
/// POST p99 at 25% may be at most this many times one commit's p99.
pub const POST_TARGET: f64 = 2.0;
/// create→final p99 at 25% may be at most this many times the floors' sum.
pub const END_TO_END_TARGET: f64 = 1.0;

/// Commits and confirmed publishes an order waits for in sequence: the order's insert, the
/// processor's verdict, the order service's update; `order.created` and `order.processed`.
const COMMITS_PER_ORDER: f64 = 3.0;
const PUBLISHES_PER_ORDER: f64 = 2.0;

const SERVICES: [&str; 2] = ["order_service", "processor_service"];
const SERVERS: [&str; 2] = ["postgresql", "rabbitmq"];

/// The ratios of one bench, from the medians of its runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// Both services' CPU per final order, in µs: at the maximum and at 25% of it.
    pub services_cpu_per_order_us_at_max: f64,
    pub services_cpu_per_order_us_at_quarter: f64,
    /// The second over the first.
    pub services_cpu_quarter_over_max: f64,
    /// The same ratio for PostgreSQL and RabbitMQ together (reported, not a target).
    pub servers_cpu_quarter_over_max: f64,
    /// POST p99 at 25% over one commit's p99.
    pub post_p99_over_commit_floor: f64,
    /// Three commits' and two publishes' p99 added up, in ms.
    pub floors_sum_p99_ms: f64,
    /// create→final p99 at 25% over that sum.
    pub end_to_end_p99_over_floors_sum: f64,
}

/// What a ratio is judged against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub ratio: f64,
    pub target: f64,
}

impl Verdict {
    pub fn met(&self) -> bool {
        self.ratio <= self.target
    }
}

fn sum_of(cpu: &CpuReport, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .map(|name| cpu.per_order_us.get(*name).copied())
        .sum()
}

/// The median over the runs of the CPU per order of `names` together; `None` when a run did
/// not count one of them (its PID was not given).
fn median_sum(reports: &[Report], names: &[&str]) -> Option<f64> {
    let mut values = reports
        .iter()
        .map(|r| r.cpu.as_ref().and_then(|cpu| sum_of(cpu, names)))
        .collect::<Option<Vec<f64>>>()?;
    (!values.is_empty()).then(|| median(&mut values))
}

impl Ratios {
    /// The ratios of the closed-loop runs at the maximum and the open-loop runs at 25% of it,
    /// against `limits`; `None` without the services' CPU (their PIDs were not given).
    pub fn of(limits: &Limits, at_max: &[Report], at_quarter: &[Report]) -> Option<Self> {
        let services_max = median_sum(at_max, &SERVICES)?;
        let services_quarter = median_sum(at_quarter, &SERVICES)?;
        let servers = median_sum(at_max, &SERVERS)
            .zip(median_sum(at_quarter, &SERVERS))
            .map_or(f64::NAN, |(max, quarter)| quarter / max);
        let p99 = |f: fn(&Report) -> f64| median(&mut at_quarter.iter().map(f).collect::<Vec<_>>());
        let commit = limits.postgres_commit_latency.p99_ms;
        let floors_sum = COMMITS_PER_ORDER * commit
            + PUBLISHES_PER_ORDER * limits.rabbitmq_confirm_latency.p99_ms;
        Some(Self {
            services_cpu_per_order_us_at_max: services_max,
            services_cpu_per_order_us_at_quarter: services_quarter,
            services_cpu_quarter_over_max: services_quarter / services_max,
            servers_cpu_quarter_over_max: servers,
            post_p99_over_commit_floor: p99(|r| r.post_latency.p99_ms) / commit,
            floors_sum_p99_ms: floors_sum,
            end_to_end_p99_over_floors_sum: p99(|r| r.end_to_end_latency.p99_ms) / floors_sum,
        })
    }

    pub fn cpu(&self) -> Verdict {
        Verdict {
            ratio: self.services_cpu_quarter_over_max,
            target: CPU_TARGET,
        }
    }

    pub fn post(&self) -> Verdict {
        Verdict {
            ratio: self.post_p99_over_commit_floor,
            target: POST_TARGET,
        }
    }

    pub fn end_to_end(&self) -> Verdict {
        Verdict {
            ratio: self.end_to_end_p99_over_floors_sum,
            target: END_TO_END_TARGET,
        }
    }

    /// Three lines, one per ratio, each with its target and whether it was met.
    pub fn text(&self) -> String {
        let judged = |v: Verdict| {
            format!(
                "{:.2} (target ≤ {}: {})",
                v.ratio,
                v.target,
                if v.met() { "met" } else { "missed" }
            )
        };
        format!(
            "ratio at 25%: services' CPU per order {:.0} µs over {:.0} µs at the maximum = {} (PostgreSQL + RabbitMQ {:.2})\n\
             ratio at 25%: POST p99 over one commit's p99 = {}\n\
             ratio at 25%: create->final p99 over the floors' sum ({:.2} ms: 3 commits + 2 publishes, p99 each) = {}",
            self.services_cpu_per_order_us_at_quarter,
            self.services_cpu_per_order_us_at_max,
            judged(self.cpu()),
            self.servers_cpu_quarter_over_max,
            judged(self.post()),
            self.floors_sum_p99_ms,
            judged(self.end_to_end()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    fn latency(p99_ms: f64) -> Latency {
        Latency {
            p99_ms,
            ..Latency::default()
        }
    }

    fn run(services: (f64, f64), servers: (f64, f64), post_p99: f64, e2e_p99: f64) -> Report {
        let per_order_us = [
            ("order_service", services.0),
            ("processor_service", services.1),
            ("postgresql", servers.0),
            ("rabbitmq", servers.1),
            ("loadgen", 1000.0),
        ]
        .into_iter()
        .map(|(name, us)| (name.to_string(), us))
        .collect();
        Report {
            post_latency: latency(post_p99),
            end_to_end_latency: latency(e2e_p99),
            cpu: Some(CpuReport {
                per_order_us,
                ..CpuReport::default()
            }),
            ..Report::default()
        }
    }

    fn limits(commit_p99: f64, confirm_p99: f64) -> Limits {
        Limits {
            rabbitmq_msgs_per_s_ack_each: 10_000.0,
            rabbitmq_msgs_per_s_ack_50: 20_000.0,
            postgres_inserts_per_s: 5_000.0,
            postgres_commit_latency: latency(commit_p99),
            rabbitmq_confirm_latency: latency(confirm_p99),
        }
    }

    #[test]
    fn ratios_come_from_the_medians_of_the_runs_against_the_same_benchs_floors() {
        let at_max = [
            run((70.0, 30.0), (100.0, 100.0), 50.0, 90.0),
            run((90.0, 30.0), (120.0, 100.0), 60.0, 80.0),
            run((200.0, 100.0), (300.0, 300.0), 70.0, 70.0),
        ];
        let at_quarter = [
            run((200.0, 100.0), (400.0, 400.0), 4.0, 30.0),
            run((100.0, 50.0), (200.0, 200.0), 2.0, 10.0),
            run((150.0, 50.0), (300.0, 200.0), 3.0, 20.0),
        ];
        let ratios = Ratios::of(&limits(1.0, 2.5), &at_max, &at_quarter).unwrap();
        assert_eq!(ratios.services_cpu_per_order_us_at_max, 120.0);
        assert_eq!(ratios.services_cpu_per_order_us_at_quarter, 200.0);
        assert!((ratios.services_cpu_quarter_over_max - 200.0 / 120.0).abs() < 1e-9);
        assert!((ratios.servers_cpu_quarter_over_max - 500.0 / 220.0).abs() < 1e-9);
        assert_eq!(ratios.post_p99_over_commit_floor, 3.0);
        assert_eq!(ratios.floors_sum_p99_ms, 8.0);
        assert_eq!(ratios.end_to_end_p99_over_floors_sum, 2.5);
        assert!(!ratios.cpu().met());
        assert!(!ratios.post().met());
        assert!(!ratios.end_to_end().met());
        let text = ratios.text();
        assert!(text.contains("= 1.67 (target ≤ 1.5: missed)"), "{text}");
        assert!(text.contains("= 3.00 (target ≤ 2: missed)"), "{text}");
    }

    #[test]
    fn targets_within_reach_are_met_and_a_missing_service_gives_no_ratios() {
        let at_max = [run((100.0, 50.0), (100.0, 100.0), 40.0, 90.0)];
        let at_quarter = [run((120.0, 60.0), (150.0, 150.0), 2.0, 8.0)];
        let ratios = Ratios::of(&limits(1.0, 2.5), &at_max, &at_quarter).unwrap();
        assert!(ratios.cpu().met() && ratios.post().met() && ratios.end_to_end().met());
        assert!(
            ratios.text().matches(": met)").count() == 3,
            "{}",
            ratios.text()
        );

        let mut without = run((0.0, 0.0), (0.0, 0.0), 2.0, 8.0);
        if let Some(cpu) = without.cpu.as_mut() {
            cpu.per_order_us.remove("processor_service");
        }
        assert_eq!(Ratios::of(&limits(1.0, 2.5), &at_max, &[without]), None);
        assert_eq!(Ratios::of(&limits(1.0, 2.5), &at_max, &[]), None);
    }
}
