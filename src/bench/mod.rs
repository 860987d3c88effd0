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
use triton_compiler::interp::Precision;
use triton_compiler::passes::OptLevel;
use triton_compiler::{CheckedModel, ModelStats};
use triton_runtime::Model;

use crate::compile::Options;
use crate::data::{self, CLASSES, Normalize};
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

/// Runs the whole benchmark.
pub fn run(cfg: &Config, progress: &mut dyn Progress) -> Result<Report, BenchError> {
    let start = Instant::now();
    if cfg.batch_sizes.is_empty() || cfg.batch_sizes.contains(&0) {
        return Err(user("--batch-sizes must list batch sizes of at least 1"));
    }
    let all_threads = if cfg.threads == 0 { rayon::current_num_threads().max(1) } else { cfg.threads };
    let thread_counts: Vec<usize> = if all_threads == 1 { vec![1] } else { vec![1, all_threads] };
    let levels = [OptLevel::O0, OptLevel::O1, OptLevel::O2, OptLevel::O3];
    let scaling_steps = if cfg.scaling { scaling::steps(&cfg.file) } else { 0 };
    let mut batches = cfg.batch_sizes.clone();
    batches.sort_unstable();
    batches.dedup();
    let memory_steps = if batches.iter().any(|&b| b > 1) { 2 } else { 1 };
    progress.total(5 + 2 * memory_steps + thread_counts.len() * batches.len() + 2 * levels.len() + scaling_steps);

    // The model and its weights.
    progress.step("checking the model");
    if let Some(why) = crate::files::misplaced(&cfg.file, "a .tri model", &[]) {
        return Err(user(why));
    }
    let checked = crate::driver::check(&cfg.file, &mut triton_compiler::passes::Timings::new());
    if checked.has_errors() {
        let text = triton_compiler::diagnostics::render::render_all(
            checked.diags().iter(),
            &checked.program.sources,
            triton_compiler::diagnostics::render::Style::Plain,
        );
        return Err(user(format!("{} has errors:\n{text}", cfg.file.display())));
    }
    let source_blake3 = crate::sources_blake3(&checked.program.sources);
    let settings =
        crate::driver::Settings { model: cfg.model.clone(), shapes: cfg.shapes.clone(), ..Default::default() };
    let model = crate::driver::select(&cfg.file, checked, &settings).map_err(user)?;
    let choice = resolve_weights(&cfg.file, cfg.weights.as_deref(), cfg.fp32_weights.as_deref());
    let mut infos = Vec::new();
    for side in Side::BOTH {
        let (path, note) = match side {
            Side::Fp32 => (choice.fp32.clone(), choice.fp32_note.clone()),
            Side::Ternary => (choice.ternary.clone(), None),
        };
        let meta = path.as_deref().map(choice::metadata).transpose()?.unwrap_or_default();
        let normalize = meta.get("normalize").and_then(|n| Normalize::from_name(n)).unwrap_or(Normalize::Unit);
        infos.push(WeightsInfo {
            side,
            path: path.as_ref().map(|p| p.display().to_string()),
            trained_precision: meta.get("precision").cloned(),
            normalize: normalize.name().into(),
            note,
        });
    }
    let options = |side: Side, opt: OptLevel| Options {
        opt,
        precision: side.precision(),
        weights: match side {
            Side::Fp32 => choice.fp32.clone(),
            Side::Ternary => choice.ternary.clone(),
        },
        seed: cfg.seed,
        threads: 0,
        int8_activations: cfg.int8_activations,
        model: cfg.model.clone(),
        shapes: cfg.shapes.clone(),
        verify_each: false,
    };

    // Both sides compiled at the chosen level, uncached (the compile's memory is measured).
    let scratch = tempfile::tempdir().map_err(|e| user(format!("cannot make a scratch folder: {e}")))?;
    let mut compiled = Vec::new();
    for side in Side::BOTH {
        progress.step(&format!("compiling {} at {}", side.label(), cfg.opt.name()));
        let opts = options(side, cfg.opt);
        let phase = cfg.probe.is_none().then(memory::Phase::start);
        let build = crate::build_artifact(&cfg.file, &opts, &crate::Cache::disabled()).map_err(user)?;
        let compile_peak = match &cfg.probe {
            Some(p) => p.compile(&cfg.file, &opts).map_err(user)?,
            None => phase.and_then(memory::Phase::finish),
        };
        compiled.push(Compiled { side, bytes: build.bytes, summary: build.summary, compile_peak });
    }
    let load = |c: &Compiled, threads: usize| Model::from_artifact(c.bytes.as_ref(), threads).map_err(user);

    // Accuracy.
    let accuracy = accuracy::measure(cfg, &model, &infos, &compiled, all_threads, progress)?;

    // Latency per batch size, one thread and all; FP32 and ternary alternate. A case whose
    // call would take over LONGEST_CALL budgets (estimated from the smallest batch on one
    // thread) is skipped and the report says so.
    let mut latency = Vec::new();
    let mut skipped = Vec::new();
    let mut per_example_ms: Option<f64> = None;
    let limit_ms = LONGEST_CALL * cfg.budget.max.as_secs_f64().max(1.0) * 1e3;
    for &threads in &thread_counts {
        let models = [load(&compiled[0], threads)?, load(&compiled[1], threads)?];
        for &batch in &batches {
            progress.step(&format!("latency at batch {batch}, {threads} thread(s)"));
            if let Some(why) = too_long(per_example_ms, batch, limit_ms) {
                skipped.push(format!("batch {batch}, {threads} thread(s) skipped: {why}"));
                continue;
            }
            let pair = measure::time_models(&[&models[0], &models[1]], batch, cfg.budget).map_err(user)?;
            let slowest = pair.iter().map(|t| t.stats.per_example_ms(batch)).fold(0.0, f64::max);
            per_example_ms.get_or_insert(slowest);
            for (c, t) in compiled.iter().zip(pair) {
                latency.push(LatencyCase {
                    side: c.side,
                    threads,
                    batch,
                    per_example_ms: t.stats.per_example_ms(batch),
                    throughput: t.stats.throughput(batch),
                    stats: t.stats,
                    samples_ms: t.samples_ms,
                });
            }
        }
    }
    latency.sort_by_key(|c| (c.side, c.threads, c.batch));
    let measured =
        |fits: &dyn Fn(usize) -> bool| latency.iter().map(|c| c.batch).filter(|&b| fits(b)).max().unwrap_or(1);

    // Memory while running at batch 1 (the model's own footprint) and at the largest batch
    // whose latency was measured.
    let max_batch = measured(&|_| true);
    let mut memory_batches = vec![1, max_batch];
    memory_batches.dedup();
    for _ in memory_batches.len()..memory_steps {
        for _ in Side::BOTH {
            progress.step("memory: the largest batch was not measured");
        }
    }
    let mut memory_cases = Vec::new();
    for c in &compiled {
        let path = scratch.path().join(format!("{}.tcm", c.side.label()));
        if cfg.probe.is_some() {
            std::fs::write(&path, &**c.bytes).map_err(|e| user(format!("cannot write `{}`: {e}", path.display())))?;
        }
        for &batch in &memory_batches {
            progress.step(&format!("memory of {} at batch {batch}", c.side.label()));
            let run = match &cfg.probe {
                Some(p) => p.run(&path, batch, all_threads, RUN_CALLS),
                None => memory::run_phase(
                    || Model::from_artifact(c.bytes.as_ref(), all_threads).map_err(|e| e.to_string()),
                    batch,
                    RUN_CALLS,
                ),
            }
            .map_err(user)?;
            memory_cases.push(MemoryCase {
                side: c.side,
                compile: c.compile_peak.clone(),
                inference: run.peak,
                batch,
                arena_bytes: run.arena_bytes,
                isolated: cfg.probe.is_some(),
            });
        }
    }

    // Compile speed and runtime per level.
    // At a middle batch size: the largest measured one up to 32 whose call fits twice this
    // table's (quarter) budget.
    let quarter_ms = cfg.budget.scaled(0.25).max.as_secs_f64().max(0.25) * 1e3;
    let mid_batch = measured(&|b| b <= 32 && per_example_ms.is_none_or(|p| p * b as f64 <= 2.0 * quarter_ms));
    let mut compile = Vec::new();
    for side in Side::BOTH {
        for level in levels {
            progress.step(&format!("compile speed of {} at {}", side.label(), level.name()));
            let times = measure::compile_times(&cfg.file, &options(side, level), scratch.path(), 3, 5).map_err(user)?;
            let m = Model::from_artifact(times.build.bytes.as_ref(), 1).map_err(user)?;
            let budget = cfg.budget.scaled(0.25);
            let time = |b: usize| measure::time_models(&[&m], b, budget).map(|mut t| t.remove(0).stats).map_err(user);
            let (b1, bm) = (time(1)?, time(mid_batch)?);
            let (cold, warm) = (measure::median_of(&times.cold_ms), measure::median_of(&times.warm_ms));
            let lines = times.build.summary.lines;
            compile.push(CompileCase {
                side,
                opt: level.name().into(),
                lines,
                cold_ms: cold,
                warm_ms: warm,
                cold_samples: times.cold_ms.len(),
                warm_samples: times.warm_ms.len(),
                cold_ms_samples: times.cold_ms.clone(),
                warm_ms_samples: times.warm_ms.clone(),
                ms_per_line: cold / lines.max(1) as f64,
                cache_speedup: cold / warm.max(1e-9),
                latency_b1_ms: b1.median_ms,
                batch: mid_batch,
                latency_batch_ms: bm.median_ms,
            });
        }
    }

    let stats = ModelStats::of(&model);
    let (fp32c, tc) = (&compiled[0], &compiled[1]);
    let size = Size {
        parameters: stats.parameters,
        ternary_weights: stats.ternary,
        fp32_bytes: stats.fp32_bytes,
        fp32_artifact_bytes: fp32c.summary.artifact_bytes,
        ternary_artifact_bytes: tc.summary.artifact_bytes,
        compression: stats.fp32_bytes as f64 / tc.summary.artifact_bytes.max(1) as f64,
        code_bytes: tc.summary.code_bytes,
        trit_bytes: tc.summary.trit_bytes,
    };
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
        latency,
        size,
        memory: memory_cases,
        compile,
        scaling,
        targets: Vec::new(),
        skipped,
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
