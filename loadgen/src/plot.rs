//! `--plot FILE.svg`: throughput and latency percentiles over the seconds of a run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let seconds = report.timeline.last().map(|s| s.second + 1).unwrap_or(1);
    let timeline = &report.timeline;

    let max_rate = timeline
        .iter()
        .map(|s| s.accepted.max(s.finals))
        .max()
        .unwrap_or(1) as f64;
    let accepted = timeline.iter().map(|s| (s.second, s.accepted as f64));
    let finals = timeline.iter().map(|s| (s.second, s.finals as f64));
    panel(
        &top,
        "orders per second",
        seconds,
        max_rate,
        [
            ("accepted/s", BLUE, accepted.collect()),
            ("final/s", GREEN, finals.collect()),
        ],
    )?;

    let max_latency = timeline
        .iter()
        .map(|s| s.end_to_end_p99_ms)
        .fold(1.0, f64::max);
    // Seconds without a final order have no latency to draw.
    let measured = || timeline.iter().filter(|s| s.finals > 0);
    let p50 = measured().map(|s| (s.second, s.end_to_end_p50_ms));
    let p99 = measured().map(|s| (s.second, s.end_to_end_p99_ms));
    panel(
        &bottom,
        "create -> final latency (ms)",
        seconds,
        max_latency,
        [("p50", BLUE, p50.collect()), ("p99", RED, p99.collect())],
    )?;
    root.present()?;
    Ok(())
}

/// A line of a chart: its legend, its colour and its (second, value) points.
type Line<'a> = (&'a str, RGBColor, Vec<(u64, f64)>);

/// One chart of per-second lines, each with its legend entry.
fn panel<const N: usize>(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    seconds: u64,
    max: f64,
    lines: [Line<'_>; N],
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..seconds, 0f64..max * 1.1)?;
    chart.configure_mesh().x_desc("second").draw()?;
    for (label, color, points) in lines {
        chart
            .draw_series(LineSeries::new(points, &color))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw()?;
    Ok(())
}
