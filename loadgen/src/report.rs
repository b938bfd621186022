//! What a run measured, as text or JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::CpuReport;

/// Percentiles of a latency histogram recorded in microseconds, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[allow(clippy::expect_used)] // constant bounds, checked by the tests
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One second of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    pub second: u64,
    pub accepted: u64,
    pub finals: u64,
    pub end_to_end_p50_ms: f64,
    pub end_to_end_p99_ms: f64,
    /// Resident memory of the services during this second, when their PIDs are known.
    pub rss_order_service_mib: Option<f64>,
    pub rss_processor_service_mib: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `closed` (fixed concurrency) or `open` (fixed arrival rate).
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub requested: u64,
    pub accepted: u64,
    /// POSTs that did not answer 201...
    pub refused: u64,
    /// ...of which answered 503 (shed or unavailable)...
    pub refused_503: u64,
    /// ...and of which got no answer at all (a timeout or a connection error)...
    pub unanswered: u64,
    /// ...of which timed out (30 s).
    pub timed_out: u64,
    /// How long the 503 answers took, from when the order was due (open loop) or sent.
    pub refusal_latency: Latency,
    pub duration_s: f64,
    pub accepted_per_s: f64,
    pub final_per_s: f64,
    pub post_latency: Latency,
    /// Open loop: how late loadgen itself sent each order after it was due. This is part of the
    /// POST latency, which counts from when the order was due, and it is loadgen's share, not the
    /// service's: a large value says that loadgen (or the machine under it) kept up badly.
    pub send_lag: Option<Latency>,
    pub end_to_end_latency: Latency,
    pub statuses: BTreeMap<String, u64>,
    /// Accepted orders with no verdict by the deadline: lost or stuck. The run fails if any.
    pub not_final: u64,
    pub peak_rss_order_service_mib: Option<f64>,
    pub peak_rss_processor_service_mib: Option<f64>,
    /// CPU per final order of each program whose PID was given, and loadgen's own.
    pub cpu: Option<CpuReport>,
    pub timeline: Vec<Second>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.not_final == 0 && self.accepted > 0
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let mode = match (self.concurrency, self.rate) {
            (_, Some(rate)) => format!("open loop at {rate:.0} orders/s"),
            (Some(c), None) => format!("closed loop, {c} clients"),
            _ => self.mode.clone(),
        };
        out.push_str(&format!(
            "{mode}: {} requested, {} accepted, {} refused in {:.1} s\n",
            self.requested, self.accepted, self.refused, self.duration_s
        ));
        out.push_str(&format!(
            "  accepted/s {:.0}   final/s {:.0}\n",
            self.accepted_per_s, self.final_per_s
        ));
        if self.refused > 0 {
            out.push_str(&format!(
                "  refused: {} answered 503, {} unanswered ({} timed out, the others failed to connect or send), {} other\n",
                self.refused_503,
                self.unanswered,
                self.timed_out,
                self.refused - self.refused_503 - self.unanswered
            ));
        }
        let mut latencies = vec![
            ("POST", &self.post_latency),
            ("create->final", &self.end_to_end_latency),
        ];
        if self.refused_503 > 0 {
            latencies.push(("503", &self.refusal_latency));
        }
        for (name, l) in latencies {
            out.push_str(&format!(
                "  {name:<14} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ));
        }
        if let Some(l) = &self.send_lag {
            out.push_str(&format!(
                "  {:<14} p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms (loadgen's share of POST)\n",
                "sent late", l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ));
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        out.push_str(&format!(
            "  statuses: {}   not final: {}\n",
            statuses.join(", "),
            self.not_final
        ));
        if let Some(mib) = self.peak_rss_order_service_mib {
            out.push_str(&format!("  peak RSS order_service {mib:.1} MiB\n"));
        }
        if let Some(mib) = self.peak_rss_processor_service_mib {
            out.push_str(&format!("  peak RSS processor_service {mib:.1} MiB\n"));
        }
        if let Some(cpu) = &self.cpu {
            out.push_str(&format!("  CPU: {}\n", cpu.text()));
        }
        out
    }
}

/// The median of some numbers (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let mut histogram = new_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).unwrap();
        }
        let latency = Latency::of(&histogram);
        assert_eq!(latency.count, 1000);
        assert!((latency.p50_ms - 500.0).abs() < 1.0, "{latency:?}");
        assert!((latency.p90_ms - 900.0).abs() < 1.0, "{latency:?}");
        assert!((latency.p99_ms - 990.0).abs() < 1.0, "{latency:?}");
        assert!((latency.max_ms - 1000.0).abs() < 1.0, "{latency:?}");
        assert_eq!(Latency::of(&new_histogram()), Latency::default());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn a_run_with_lost_orders_fails() {
        let report = Report {
            accepted: 10,
            not_final: 1,
            ..Report::default()
        };
        assert!(!report.passed());
        let report = Report {
            accepted: 10,
            ..Report::default()
        };
        assert!(report.passed());
    }
}
