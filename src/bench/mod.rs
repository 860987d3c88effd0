//! `triton bench`: a model as FP32 and as ternary, side by side, on accuracy, latency, size,
//! memory and compile speed.
//!
//! Rules:
//! - Every figure is measured in this run; what cannot be measured (no dataset, untrained
//!   weights) is reported as not applicable with the reason, never as a number.
//! - Both sides run compiled artifacts of the same model at the same -O level, built by
//!   [`crate::build_artifact`] exactly as `triton compile` builds them and loaded by the runtime:
//!   FP32 runs the latent f32 weights on the runtime's GEMM (the `gemm` crate), ternary the
//!   packed ternary kernels.
//! - Weights ([`resolve_weights`]): `--weights`, else `<stem>.safetensors` beside the model;
//!   the FP32 side prefers FP32-trained weights (`--fp32-weights`, else
//!   `<stem>.fp32.safetensors`), else runs the ternary side's latent weights and says so.
//! - Latency cases are timed within a budget ([`measure`]), FP32 and ternary calls alternating
//!   so both sides see the same machine state (ratios are what a noisy machine measures
//!   best); the report records every sample count. Timing never enters tests: tests check the
//!   report's structure and invariants.
//! - The report ([`Report`]) is the single source of every output: the terminal table, the
//!   Markdown report, the plots, the JSON and the comparison with a baseline.

mod accuracy;
mod choice;
pub mod compare;
pub mod machine;
pub mod measure;
pub mod memory;
pub mod metrics;
mod phases;
pub mod plots;
pub mod render;
mod report;
pub mod scaling;
pub mod stats;
pub mod targets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use triton_compiler::CheckedModel;
use triton_compiler::interp::Precision;
use triton_compiler::passes::OptLevel;
use triton_runtime::Model;

use crate::data::{self, Normalization};
pub use choice::{WeightsChoice, resolve_weights};
pub use machine::Machine;
pub use measure::Budget;
pub use memory::Peak;
pub use metrics::Classification;
pub use report::*;
pub use stats::Latency;
pub use targets::{Outcome, Target, TargetArg};

/// Version of the JSON report's layout; a baseline of another version is refused.
pub const FORMAT: u32 = 1;

/// Calls at the largest batch size in the memory measurement.
pub const RUN_CALLS: usize = 3;

/// A latency case whose call would take longer than this many per-case budgets (of at least a
/// second) is skipped.
pub const LONGEST_CALL: f64 = 10.0;

/// What to benchmark and how.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub model: Option<String>,
    pub weights: Option<PathBuf>,
    pub fp32_weights: Option<PathBuf>,
    /// Dataset lookup as `triton train --data` takes it (`None`: the default places).
    pub data: Option<String>,
    pub batch_sizes: Vec<usize>,
    /// Threads of the all-threads runs (0: every core).
    pub threads: usize,
    pub budget: Budget,
    pub opt: OptLevel,
    /// Seed of the initialisation when there are no weights.
    pub seed: u64,
    /// At -O3, quantize the ternary side's activations to int8 (`--f32-activations` clears it).
    pub int8_activations: bool,
    /// Add the scaling tables (MLP widths, the zoo beside the model).
    pub scaling: bool,
    pub targets: Vec<TargetArg>,
    /// Where memory is measured: a child process (see [`memory`]), or this one when `None`.
    pub probe: Option<memory::Probe>,
    /// Sizes bound to the model's symbolic dimensions (`--shape H=64`).
    pub shapes: std::collections::BTreeMap<String, i64>,
}

/// A failure that stops the benchmark (a user error: bad model, weights, data, options).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    User(String),
}

fn user(e: impl std::fmt::Display) -> BenchError {
    BenchError::User(e.to_string())
}

/// What a step of the run reports (for a progress bar).
pub trait Progress {
    /// Steps in all (called once, first).
    fn total(&mut self, steps: usize);
    /// The step about to run.
    fn step(&mut self, what: &str);
}

/// No progress reporting.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn total(&mut self, _: usize) {}
    fn step(&mut self, _: &str) {}
}

/// One side, compiled at the chosen level.
struct Compiled {
    side: Side,
    bytes: std::sync::Arc<crate::cache::Blob>,
    summary: crate::artifact::Summary,
    compile_peak: Option<Peak>,
}

/// Runs the whole benchmark: the model and its weights, both sides compiled, then each
/// measurement in turn ([`phases`]).
pub fn run(cfg: &Config, progress: &mut dyn Progress) -> Result<Report, BenchError> {
    let start = Instant::now();
    if cfg.batch_sizes.is_empty() || cfg.batch_sizes.contains(&0) {
        return Err(user("--batch-sizes must list batch sizes of at least 1"));
    }
    let all_threads = if cfg.threads == 0 { rayon::current_num_threads().max(1) } else { cfg.threads };
    let thread_counts: Vec<usize> = if all_threads == 1 { vec![1] } else { vec![1, all_threads] };
    let scaling_steps = if cfg.scaling { scaling::steps(&cfg.file) } else { 0 };
    let mut batches = cfg.batch_sizes.clone();
    batches.sort_unstable();
    batches.dedup();
    let memory_steps = if batches.iter().any(|&b| b > 1) { 2 } else { 1 };
    let levels = phases::LEVELS.len();
    progress.total(5 + 2 * memory_steps + thread_counts.len() * batches.len() + 2 * levels + scaling_steps);

    let (model, source_blake3, choice, infos) = phases::model_and_weights(cfg, progress)?;
    let scratch = tempfile::tempdir().map_err(|e| user(format!("cannot make a scratch folder: {e}")))?;
    let compiled = phases::compile_sides(cfg, &choice, progress)?;
    let accuracy = accuracy::measure(cfg, &model, &infos, &compiled, all_threads, progress)?;
    let timed = phases::latency(cfg, &compiled, &thread_counts, &batches, progress)?;
    let memory =
        phases::memory(cfg, &compiled, scratch.path(), timed.largest(&|_| true), memory_steps, all_threads, progress)?;
    let compile = phases::compile_speed(cfg, &choice, scratch.path(), timed.middle_batch(cfg), progress)?;
    let size = phases::size(&model, &compiled);
    let scaling = if cfg.scaling { Some(scaling::measure(cfg, scratch.path(), progress)?) } else { None };

    let mut report = Report {
        format: FORMAT,
        model: model.name.clone(),
        file: cfg.file.display().to_string(),
        source_blake3,
        unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        wall_seconds: 0.0,
        machine: Machine::detect(),
        settings: Settings {
            opt: cfg.opt.name().into(),
            batch_sizes: cfg.batch_sizes.clone(),
            threads: all_threads,
            warmup: cfg.budget.warmup,
            iters: cfg.budget.iters,
            max_seconds_per_case: cfg.budget.max.as_secs_f64(),
            seed: cfg.seed,
        },
        weights: infos,
        accuracy,
        latency: timed.cases,
        size,
        memory,
        compile,
        scaling,
        targets: Vec::new(),
        skipped: timed.skipped,
    };
    report.targets = judge(&report, &targets::bounds(&cfg.targets));
    report.wall_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Why a call at `batch` is not timed: it would take longer than `limit_ms`, estimated from
/// the time per example measured at a smaller batch (`None`: nothing measured yet, time it).
pub(crate) fn too_long(per_example_ms: Option<f64>, batch: usize, limit_ms: f64) -> Option<String> {
    let estimate = per_example_ms? * batch as f64;
    (estimate > limit_ms).then(|| {
        format!(
            "a call would take about {:.1} s, over {:.1} s ({LONGEST_CALL} case budgets); raise --max-seconds",
            estimate / 1e3,
            limit_ms / 1e3
        )
    })
}

/// Each target's outcome on `report`.
pub fn judge(report: &Report, bounds: &[(Target, f64)]) -> Vec<Outcome> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    bounds
        .iter()
        .map(|&(t, bound)| {
            let measured = match t {
                Target::AccuracyDrop => report.accuracy.delta_pp(),
                Target::Compression => Some(report.size.compression),
                Target::Speedup => report.speedup(1, 1),
                Target::LatencyMs => report.latency_of(Side::Ternary, 1, 1).map(|c| c.stats.median_ms),
                Target::CompileMs => report
                    .compile
                    .iter()
                    .find(|c| c.side == Side::Ternary && c.opt == report.settings.opt)
                    .map(|c| c.cold_ms),
                Target::MemoryMib => report
                    .memory
                    .iter()
                    .filter(|m| m.side == Side::Ternary)
                    .max_by_key(|m| m.batch)
                    .and_then(|m| m.inference.as_ref())
                    .map(|p| mib(p.peak_bytes)),
            };
            Outcome::judge(t, bound, measured)
        })
        .collect()
}

/// Seconds as a [`Duration`] for the budget (negative or NaN: zero).
pub fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_estimated_over_the_limit_are_skipped() {
        // 200 ms per example, 10 s limit: batch 32 (6.4 s) runs, batch 64 (12.8 s) does not.
        assert_eq!(too_long(Some(200.0), 32, 10_000.0), None);
        let why = too_long(Some(200.0), 64, 10_000.0).expect("skipped");
        assert!(why.contains("12.8 s") && why.contains("--max-seconds"), "{why}");
        // Nothing measured yet: always timed.
        assert_eq!(too_long(None, 1 << 20, 1.0), None);
    }

    #[test]
    fn weights_beside_the_model_are_found_and_fp32_falls_back_with_a_note() {
        let dir = tempfile::tempdir().expect("temp");
        let model = dir.path().join("m.tri");
        let none = resolve_weights(&model, None, None);
        assert_eq!(none, WeightsChoice { ternary: None, fp32: None, fp32_note: None });
        std::fs::write(dir.path().join("m.safetensors"), b"x").expect("write");
        let one = resolve_weights(&model, None, None);
        assert_eq!(one.ternary.as_deref(), Some(dir.path().join("m.safetensors").as_path()));
        assert_eq!(one.fp32, one.ternary);
        assert!(one.fp32_note.as_deref().is_some_and(|n| n.contains("latent")));
        std::fs::write(dir.path().join("m.fp32.safetensors"), b"x").expect("write");
        let both = resolve_weights(&model, None, None);
        assert_eq!(both.fp32.as_deref(), Some(dir.path().join("m.fp32.safetensors").as_path()));
        assert_eq!(both.fp32_note, None);
        // Given files win over shipped ones.
        let given = resolve_weights(&model, Some(Path::new("a.safetensors")), Some(Path::new("b.safetensors")));
        assert_eq!(
            (given.ternary.as_deref(), given.fp32.as_deref()),
            (Some(Path::new("a.safetensors")), Some(Path::new("b.safetensors")))
        );
    }
}
