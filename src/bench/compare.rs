//! `--baseline OLD.json`: a run compared with a saved one, figure by figure.
//!
//! Rules:
//! - Figures are matched by what they measure (side, threads, batch, -O level); a figure only
//!   one run has is skipped.
//! - Times, bytes and memory are lower-is-better: a regression is a rise of more than
//!   `threshold_pct` percent (times also by more than [`MIN_MS`], below which timer noise
//!   dominates). Accuracy regresses when it falls by more than `accuracy_pp` percentage points.
//! - A time must also stand out of the noise both runs measured ([`Spread`]): a latency's
//!   95% confidence intervals of the mean must not overlap, a compile's fastest new sample must
//!   be slower than the slowest old one. The same holds, mirrored, for an improvement.
//! - A baseline of another model, source or machine is still compared, with a warning saying so.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{FORMAT, Report, Side};

/// Time changes smaller than this (ms) are never regressions.
pub const MIN_MS: f64 = 0.05;

/// One figure in both runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub figure: String,
    pub old: f64,
    pub new: f64,
    /// Relative change, percent (positive: larger).
    pub change_pct: f64,
    pub regression: bool,
    pub improvement: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: String,
    pub threshold_pct: f64,
    pub accuracy_pp: f64,
    pub warnings: Vec<String>,
    pub changes: Vec<Change>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.regression)
    }
}

/// Reads a report written by `triton bench --json`.
pub fn load(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read baseline `{}`: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("baseline `{}` is not JSON: {e}", path.display()))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(format!(
                "baseline `{}` is a format {f} report; this triton reads format {FORMAT} (re-run the baseline)",
                path.display()
            ));
        }
        None => return Err(format!("`{}` is not a `triton bench --json` report (no `format`)", path.display())),
    }
    serde_json::from_value(value)
        .map_err(|e| format!("baseline `{}` is not a triton bench report: {e}", path.display()))
}

struct Builder {
    threshold: f64,
    changes: Vec<Change>,
}

impl Builder {
    /// A lower-is-better figure; `floor` is the smallest absolute rise that counts.
    fn lower(&mut self, figure: String, old: f64, new: f64, floor: f64) {
        self.timed(figure, old, new, floor, Spread::None);
    }

    /// A lower-is-better time whose change must also clear `spread`.
    fn timed(&mut self, figure: String, old: f64, new: f64, floor: f64, spread: Spread) {
        if !(old.is_finite() && new.is_finite()) || old <= 0.0 {
            return;
        }
        let pct = 100.0 * (new - old) / old;
        let big = (new - old).abs() > floor;
        let (rose, fell) = spread.separated();
        self.changes.push(Change {
            figure,
            old,
            new,
            change_pct: pct,
            regression: pct > self.threshold && big && rose,
            improvement: pct < -self.threshold && big && fell,
        });
    }
}

/// The noise of a time in both runs, as measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Spread {
    /// Not known: the change alone decides.
    None,
    /// Each run's range `(low, high)` (a confidence interval, or the samples' extremes).
    Ranges { old: (f64, f64), new: (f64, f64) },
}

impl Spread {
    /// (the new range lies above the old one, the new range lies below it).
    fn separated(self) -> (bool, bool) {
        match self {
            Spread::None => (true, true),
            Spread::Ranges { old, new } => (new.0 > old.1, new.1 < old.0),
        }
    }

    /// Confidence intervals of two latency means (none: `None`).
    fn of_latency(old: &super::Latency, new: &super::Latency) -> Spread {
        match (old.ci95_ms, new.ci95_ms) {
            (Some(o), Some(n)) => {
                Spread::Ranges { old: (old.mean_ms - o, old.mean_ms + o), new: (new.mean_ms - n, new.mean_ms + n) }
            }
            _ => Spread::None,
        }
    }

    /// The extremes of two sets of samples (either empty: `None`).
    fn of_samples(old: &[f64], new: &[f64]) -> Spread {
        let range = |v: &[f64]| {
            (!v.is_empty())
                .then(|| (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max)))
        };
        match (range(old), range(new)) {
            (Some(old), Some(new)) => Spread::Ranges { old, new },
            _ => Spread::None,
        }
    }
}

/// Compares `new` with `old`.
pub fn compare(old: &Report, new: &Report, baseline: &str, threshold_pct: f64, accuracy_pp: f64) -> Comparison {
    let mut warnings = Vec::new();
    if old.model != new.model {
        warnings.push(format!("the baseline measured model `{}`, this run `{}`", old.model, new.model));
    } else if old.source_blake3 != new.source_blake3 {
        warnings.push("the model's source changed since the baseline".into());
    }
    if old.machine.cpu != new.machine.cpu || old.machine.cores != new.machine.cores {
        warnings.push(format!(
            "the baseline ran on {} ({} cores), this run on {} ({} cores): times are not comparable",
            old.machine.cpu, old.machine.cores, new.machine.cpu, new.machine.cores
        ));
    }
    if old.settings.opt != new.settings.opt {
        warnings.push(format!("the baseline ran at -{}, this run at -{}", old.settings.opt, new.settings.opt));
    }
    let mut b = Builder { threshold: threshold_pct, changes: Vec::new() };
    for side in Side::BOTH {
        if let (Some(o), Some(n)) = (old.accuracy.side(side).measured(), new.accuracy.side(side).measured()) {
            let (o, n) = (100.0 * o.accuracy, 100.0 * n.accuracy);
            b.changes.push(Change {
                figure: format!("{} accuracy (%)", side.label()),
                old: o,
                new: n,
                change_pct: 100.0 * (n - o) / o.max(1e-9),
                regression: o - n > accuracy_pp,
                improvement: n - o > accuracy_pp,
            });
        }
    }
    for n in &new.latency {
        if let Some(o) = old.latency_of(n.side, n.threads, n.batch) {
            let figure = format!("{} latency b{} {}t, median ms", n.side.label(), n.batch, n.threads);
            b.timed(figure, o.stats.median_ms, n.stats.median_ms, MIN_MS, Spread::of_latency(&o.stats, &n.stats));
        }
    }
    for n in &new.compile {
        if let Some(o) = old.compile.iter().find(|o| o.side == n.side && o.opt == n.opt) {
            let what = format!("{} -{}", n.side.label(), n.opt);
            let cold = Spread::of_samples(&o.cold_ms_samples, &n.cold_ms_samples);
            let warm = Spread::of_samples(&o.warm_ms_samples, &n.warm_ms_samples);
            b.timed(format!("{what} cold compile ms"), o.cold_ms, n.cold_ms, MIN_MS, cold);
            b.timed(format!("{what} warm compile ms"), o.warm_ms, n.warm_ms, MIN_MS, warm);
        }
    }
    b.lower(
        "ternary artifact bytes".into(),
        old.size.ternary_artifact_bytes as f64,
        new.size.ternary_artifact_bytes as f64,
        0.0,
    );
    b.lower(
        "FP32 artifact bytes".into(),
        old.size.fp32_artifact_bytes as f64,
        new.size.fp32_artifact_bytes as f64,
        0.0,
    );
    for n in &new.memory {
        let Some(o) = old.memory.iter().find(|o| o.side == n.side && o.batch == n.batch) else { continue };
        if let (Some(op), Some(np)) = (&o.inference, &n.inference) {
            b.lower(
                format!("{} peak RSS running b{} (bytes)", n.side.label(), n.batch),
                op.peak_bytes as f64,
                np.peak_bytes as f64,
                0.0,
            );
        }
    }
    Comparison { baseline: baseline.into(), threshold_pct, accuracy_pp, warnings, changes: b.changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> Builder {
        Builder { threshold: 10.0, changes: Vec::new() }
    }

    #[test]
    fn a_time_regresses_only_beyond_the_threshold_the_floor_and_the_noise() {
        let mut b = builder();
        let apart = Spread::Ranges { old: (0.9, 1.1), new: (1.4, 1.6) };
        let overlapping = Spread::Ranges { old: (0.5, 1.5), new: (1.0, 2.0) };
        b.timed("apart".into(), 1.0, 1.5, MIN_MS, apart);
        b.timed("overlapping".into(), 1.0, 1.5, MIN_MS, overlapping);
        b.timed("small".into(), 1.0, 1.05, MIN_MS, Spread::None);
        b.timed("below the floor".into(), 0.01, 0.03, MIN_MS, Spread::None);
        b.timed("faster".into(), 1.5, 1.0, MIN_MS, Spread::Ranges { old: (1.4, 1.6), new: (0.9, 1.1) });
        let flags: Vec<(bool, bool)> = b.changes.iter().map(|c| (c.regression, c.improvement)).collect();
        assert_eq!(flags, [(true, false), (false, false), (false, false), (false, false), (false, true)]);
    }

    #[test]
    fn sample_ranges_and_intervals_come_from_the_runs() {
        assert_eq!(Spread::of_samples(&[], &[1.0]), Spread::None);
        assert_eq!(
            Spread::of_samples(&[3.0, 1.0, 2.0], &[5.0, 4.0]),
            Spread::Ranges { old: (1.0, 3.0), new: (4.0, 5.0) }
        );
        let l = |mean: f64, ci: Option<f64>| super::super::Latency {
            samples: 10,
            mean_ms: mean,
            median_ms: mean,
            p95_ms: mean,
            p99_ms: mean,
            min_ms: mean,
            max_ms: mean,
            stddev_ms: 0.0,
            ci95_ms: ci,
        };
        assert_eq!(Spread::of_latency(&l(1.0, Some(0.1)), &l(2.0, None)), Spread::None);
        assert_eq!(
            Spread::of_latency(&l(1.0, Some(0.1)), &l(2.0, Some(0.2))),
            Spread::Ranges { old: (0.9, 1.1), new: (1.8, 2.2) }
        );
    }
}
