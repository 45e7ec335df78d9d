//! The SVG charts of `dtxn bench`: with `--svg`, workload (a)'s throughput
//! against participants per transaction, one panel per concurrency,
//! log-log; with `--cdf-svg`, workload (b)'s end-to-end latency CDF of the
//! floor, the baseline and dtxn at 10 in flight (log latency axis).

use std::path::Path;

use dtxn_bench::{LatencyCdf, OverheadRow, Report};
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

/// Colour of a contender in the latency CDF.
fn cdf_color(contender: &str) -> RGBColor {
    SERIES
        .iter()
        .find(|(name, _, _)| *name == contender)
        .map_or(BLACK, |(_, color, _)| *color)
}

/// Writes the latency CDF of `report`'s workload (b) to `path`. Does
/// nothing (and succeeds) when (b) did not run.
pub fn write_latency_cdf_svg(
    report: &Report,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let Some(latency) = &report.latency else {
        return Ok(());
    };
    let series: Vec<&LatencyCdf> = latency
        .cdf
        .iter()
        .filter(|c| !c.points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let all = series.iter().flat_map(|c| c.points.iter().map(|p| p[0]));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.max(1e-3) / 1.25, hi.max(lo * 2.0) * 1.25);

    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "end-to-end latency, {} participants of {:.1} ± {:.1} ms, {} in flight",
                latency.participants, latency.mean_ms, latency.jitter_ms, latency.low.concurrency
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of transactions")
        .x_labels(16)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let reference = latency.reference_ms;
    if reference > lo && reference < hi {
        let grey = RGBColor(180, 180, 180);
        chart
            .draw_series(LineSeries::new(
                [(reference, 0.0), (reference, 1.0)],
                grey.stroke_width(1),
            ))?
            .label(format!("2 × slowest participant ({reference:.1} ms)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey));
    }
    for c in series {
        let color = cdf_color(c.contender);
        // A step function: each quantile's latency holds until the next.
        let mut steps = Vec::with_capacity(c.points.len() * 2);
        let mut last = 0.0;
        for p in &c.points {
            steps.push((p[0], last));
            steps.push((p[0], p[1]));
            last = p[1];
        }
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
            .label(format!("{} ({} transactions)", c.contender, c.samples))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
