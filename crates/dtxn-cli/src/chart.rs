//! The SVG chart of `dtxn bench --svg`: workload (a)'s throughput against
//! participants per transaction, one panel per concurrency, log-log.

use std::path::Path;

use dtxn_bench::{OverheadRow, Report};
use plotters::prelude::*;

/// The three contenders: name, colour, and how to read a row.
type Series = (&'static str, RGBColor, fn(&OverheadRow) -> f64);

const SERIES: [Series; 3] = [
    ("floor", RGBColor(120, 120, 120), |r| r.floor.tx_per_s),
    ("baseline", RGBColor(31, 119, 180), |r| r.baseline.tx_per_s),
    ("dtxn", RGBColor(214, 39, 40), |r| r.dtxn.tx_per_s),
];

/// Writes the chart of `report`'s workload (a) to `path`. Does nothing
/// (and succeeds) when (a) did not run.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let Some(rows) = report.overhead.as_deref().filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let mut concurrencies: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let max_parts = rows
        .iter()
        .map(|r| r.participants)
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let values = rows
        .iter()
        .flat_map(|r| SERIES.iter().map(move |(_, _, f)| f(r)));
    let (lo, hi) = values.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.max(1.0) / 2.0, hi * 2.0);

    let root = SVGBackend::new(path, (480 * concurrencies.len() as u32, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, concurrencies.len()));
    for (panel, &c) in panels.iter().zip(&concurrencies) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("no-op participants, {c} in flight"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1.0..max_parts).log_scale(), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("participants per transaction")
            .y_desc("transactions / s")
            .draw()?;
        for (name, color, value) in SERIES {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.concurrency == c)
                .map(|r| (r.participants as f64, value(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
