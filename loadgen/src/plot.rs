//! `--plot FILE.svg`: throughput and latency percentiles over the seconds of a run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let seconds = report.timeline.last().map(|s| s.second + 1).unwrap_or(1);

    let max_rate = report
        .timeline
        .iter()
        .map(|s| s.accepted.max(s.finals))
        .max()
        .unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption("orders per second", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..seconds, 0f64..max_rate * 1.1)?;
    chart.configure_mesh().x_desc("second").draw()?;
    chart
        .draw_series(LineSeries::new(
            report
                .timeline
                .iter()
                .map(|s| (s.second, s.accepted as f64)),
            &BLUE,
        ))?
        .label("accepted/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            report.timeline.iter().map(|s| (s.second, s.finals as f64)),
            &GREEN,
        ))?
        .label("final/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart.configure_series_labels().border_style(BLACK).draw()?;

    let max_latency = report
        .timeline
        .iter()
        .map(|s| s.end_to_end_p99_ms)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("create -> final latency (ms)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..seconds, 0f64..max_latency * 1.1)?;
    chart.configure_mesh().x_desc("second").draw()?;
    chart
        .draw_series(LineSeries::new(
            report
                .timeline
                .iter()
                .filter(|s| s.finals > 0)
                .map(|s| (s.second, s.end_to_end_p50_ms)),
            &BLUE,
        ))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            report
                .timeline
                .iter()
                .filter(|s| s.finals > 0)
                .map(|s| (s.second, s.end_to_end_p99_ms)),
            &RED,
        ))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
