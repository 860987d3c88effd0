//! `--plots DIR`: SVG charts of a [`Report`] (plotters): latency against batch size, size bars,
//! accuracy bars.
//!
//! Rules: one file per chart, named for what it shows; a chart whose figures were not measured
//! (accuracy without a dataset) is not drawn, and [`write`] says which were skipped and why.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Report, Side};

type Result<T> = std::result::Result<T, String>;

const FP32: RGBColor = RGBColor(0x44, 0x77, 0xaa);
const TERNARY: RGBColor = RGBColor(0xee, 0x66, 0x77);

fn color(side: Side) -> RGBColor {
    match side {
        Side::Fp32 => FP32,
        Side::Ternary => TERNARY,
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn canvas(path: &Path, size: (u32, u32)) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    Ok(root)
}

/// Median latency against batch size, log-log, one line per side and thread count.
fn latency(r: &Report, path: &Path) -> Result<()> {
    let root = canvas(path, (900, 560))?;
    let batches = &r.settings.batch_sizes;
    let (bmin, bmax) =
        (batches.iter().copied().min().unwrap_or(1) as f64, batches.iter().copied().max().unwrap_or(1) as f64);
    let lo = r.latency.iter().map(|c| c.stats.median_ms).fold(f64::INFINITY, f64::min);
    let hi = r.latency.iter().map(|c| c.stats.median_ms).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: median latency per call", r.model), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((bmin * 0.8..bmax * 1.25).log_scale(), (lo * 0.7..hi * 1.4).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("batch size")
        .y_desc("median latency (ms)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()
        .map_err(err)?;
    for side in Side::BOTH {
        for threads in r.thread_counts() {
            let pts: Vec<(f64, f64)> = r
                .latency
                .iter()
                .filter(|c| c.side == side && c.threads == threads)
                .map(|c| (c.batch as f64, c.stats.median_ms))
                .collect();
            let c = color(side);
            let style = if threads == 1 { c.stroke_width(2) } else { c.mix(0.6).stroke_width(2) };
            let label = format!("{}, {threads} thread{}", side.label(), if threads == 1 { "" } else { "s" });
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            let marker = if threads == 1 { c.filled() } else { c.mix(0.6).filled() };
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, marker))).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Labelled vertical bars.
fn bars(path: &Path, title: &str, y_desc: &str, items: &[(String, f64, RGBColor)], y_range: (f64, f64)) -> Result<()> {
    // Room for every label: at least 50 px a bar.
    let width = (items.len() as u32 * 50 + 140).max(800);
    let root = canvas(path, (width, 500))?;
    let n = items.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, y_range.0..y_range.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            items.iter().enumerate().map(|(i, (_, v, c))| {
                Rectangle::new([(i as f64 + 0.15, y_range.0), (i as f64 + 0.85, *v)], c.filled())
            }),
        )
        .map_err(err)?;
    let label = ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(
            items
                .iter()
                .enumerate()
                .map(|(i, (_, v, _))| Text::new(format!("{v:.2}"), (i as f64 + 0.5, *v), label.clone())),
        )
        .map_err(err)?;
    let name = ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    let below = y_range.0 - (y_range.1 - y_range.0) * 0.01;
    chart
        .draw_series(
            items.iter().enumerate().map(|(i, (l, _, _))| Text::new(l.clone(), (i as f64 + 0.5, below), name.clone())),
        )
        .map_err(err)?;
    root.present().map_err(err)
}

fn size(r: &Report, path: &Path) -> Result<()> {
    let z = &r.size;
    // KiB below a MiB, so small models do not round to zero.
    let (unit, div) = if z.fp32_bytes < 1 << 20 { ("KiB", 1024.0) } else { ("MiB", 1024.0 * 1024.0) };
    let items = vec![
        ("weights as FP32".to_string(), z.fp32_bytes as f64 / div, FP32),
        ("FP32 artifact".to_string(), z.fp32_artifact_bytes as f64 / div, FP32),
        ("ternary artifact".to_string(), z.ternary_artifact_bytes as f64 / div, TERNARY),
    ];
    let top = items.iter().map(|i| i.1).fold(0.0, f64::max) * 1.15;
    bars(path, &format!("{}: size ({:.1}x compression)", r.model, z.compression), unit, &items, (0.0, top.max(1e-6)))
}

/// Overall and per-class accuracy of both sides.
fn accuracy(r: &Report, path: &Path) -> Result<bool> {
    let (Some(f), Some(t)) = (r.accuracy.fp32.measured(), r.accuracy.ternary.measured()) else { return Ok(false) };
    let mut items =
        vec![("all F".to_string(), 100.0 * f.accuracy, FP32), ("all T".to_string(), 100.0 * t.accuracy, TERNARY)];
    for (a, b) in f.per_class.iter().zip(&t.per_class) {
        items.push((format!("{} F", a.class), 100.0 * a.recall, FP32));
        items.push((format!("{} T", b.class), 100.0 * b.recall, TERNARY));
    }
    let lo = items.iter().map(|i| i.1).fold(100.0, f64::min);
    let floor = (lo - (100.0 - lo).max(1.0)).max(0.0).floor();
    let delta = r.accuracy.delta_pp().unwrap_or(0.0);
    bars(
        path,
        &format!(
            "{}: accuracy, overall and per class; F = FP32, T = ternary (FP32 - ternary = {delta:.2} pp)",
            r.model
        ),
        "accuracy (%)",
        &items,
        (floor, 100.0),
    )?;
    Ok(true)
}

/// Charts drawn (title, file) and charts skipped (with the reason).
pub type Written = (Vec<(String, PathBuf)>, Vec<String>);

/// Writes the charts into `dir` (made if missing).
pub fn write(r: &Report, dir: &Path) -> Result<Written> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make `{}`: {e}", dir.display()))?;
    let mut drawn = Vec::new();
    let mut skipped = Vec::new();
    let p = dir.join("latency.svg");
    latency(r, &p).map_err(|e| format!("{}: {e}", p.display()))?;
    drawn.push(("latency against batch size".to_string(), p));
    let p = dir.join("size.svg");
    size(r, &p).map_err(|e| format!("{}: {e}", p.display()))?;
    drawn.push(("size".to_string(), p));
    let p = dir.join("accuracy.svg");
    if accuracy(r, &p).map_err(|e| format!("{}: {e}", p.display()))? {
        drawn.push(("accuracy".to_string(), p));
    } else {
        skipped.push("accuracy.svg: accuracy was not measured".to_string());
    }
    Ok((drawn, skipped))
}
