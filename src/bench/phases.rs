//! The phases of [`super::run`], in the order it runs them: the model and its weights, both
//! sides compiled, latency, memory, compile speed and size (accuracy and scaling have their
//! own modules).
//!
//! Rules:
//! - Each phase reports its steps to the progress bar itself; `run` counts them up front.
//! - A phase reads only what earlier phases produced (no shared mutable state).

use std::path::Path;

use triton_compiler::passes::OptLevel;
use triton_compiler::{CheckedModel, ModelStats};
use triton_runtime::Model;

use super::{
    BenchError, CompileCase, Compiled, Config, LONGEST_CALL, LatencyCase, MemoryCase, Progress, RUN_CALLS, Side, Size,
    WeightsChoice, WeightsInfo, choice, measure, memory, resolve_weights, too_long, user,
};
use crate::compile::Options;
use crate::data::{Normalization, Normalize};

/// The levels of the compile-speed table.
pub(super) const LEVELS: [OptLevel; 4] = [OptLevel::O0, OptLevel::O1, OptLevel::O2, OptLevel::O3];

/// Checks the model and picks each side's weights: the model, the blake3 of its sources, the
/// weights choice and what each side's weights are.
pub(super) fn model_and_weights(
    cfg: &Config,
    progress: &mut dyn Progress,
) -> Result<(CheckedModel, String, WeightsChoice, Vec<WeightsInfo>), BenchError> {
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
        let normalization = Normalization::from_metadata(&meta).map_err(|e| {
            user(format!("`{}`: {e}", path.as_deref().map_or_else(String::new, |p| p.display().to_string())))
        })?;
        let normalize = normalization.as_ref().map_or(Normalize::Unit, |n| n.kind);
        infos.push(WeightsInfo {
            side,
            path: path.as_ref().map(|p| p.display().to_string()),
            trained_precision: meta.get("precision").cloned(),
            normalize: normalize.name().into(),
            normalization,
            note,
        });
    }
    Ok((model, source_blake3, choice, infos))
}

/// How `side` is compiled at `level`.
fn options(cfg: &Config, choice: &WeightsChoice, side: Side, level: OptLevel) -> Options {
    Options {
        opt: level,
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
    }
}

/// Both sides compiled at the chosen level, uncached (the compile's memory is measured).
pub(super) fn compile_sides(
    cfg: &Config,
    choice: &WeightsChoice,
    progress: &mut dyn Progress,
) -> Result<Vec<Compiled>, BenchError> {
    let mut compiled = Vec::new();
    for side in Side::BOTH {
        progress.step(&format!("compiling {} at {}", side.label(), cfg.opt.name()));
        let opts = options(cfg, choice, side, cfg.opt);
        let phase = cfg.probe.is_none().then(memory::Phase::start);
        let build = crate::build_artifact(&cfg.file, &opts, &crate::Cache::disabled()).map_err(user)?;
        let compile_peak = match &cfg.probe {
            Some(p) => p.compile(&cfg.file, &opts).map_err(user)?,
            None => phase.and_then(memory::Phase::finish),
        };
        compiled.push(Compiled { side, bytes: build.bytes, summary: build.summary, compile_peak });
    }
    Ok(compiled)
}

/// The latency table: its cases, the ones skipped and why, and the time per example first
/// measured (to estimate what later cases would take).
pub(super) struct Timed {
    pub cases: Vec<LatencyCase>,
    pub skipped: Vec<String>,
    per_example_ms: Option<f64>,
}

impl Timed {
    /// The largest measured batch size that `fits` (1 when none).
    pub fn largest(&self, fits: &dyn Fn(usize) -> bool) -> usize {
        self.cases.iter().map(|c| c.batch).filter(|&b| fits(b)).max().unwrap_or(1)
    }

    /// The batch of the compile-speed table: the largest measured one up to 32 whose call fits
    /// twice that table's (quarter) budget.
    pub fn middle_batch(&self, cfg: &Config) -> usize {
        let quarter_ms = cfg.budget.scaled(0.25).max.as_secs_f64().max(0.25) * 1e3;
        self.largest(&|b| b <= 32 && self.per_example_ms.is_none_or(|p| p * b as f64 <= 2.0 * quarter_ms))
    }
}

/// Latency per batch size, one thread and all; FP32 and ternary alternate. A case whose call
/// would take over [`LONGEST_CALL`] budgets (estimated from the smallest batch on one thread)
/// is skipped and the report says so.
pub(super) fn latency(
    cfg: &Config,
    compiled: &[Compiled],
    thread_counts: &[usize],
    batches: &[usize],
    progress: &mut dyn Progress,
) -> Result<Timed, BenchError> {
    let load = |c: &Compiled, threads: usize| Model::from_artifact(c.bytes.as_ref(), threads).map_err(user);
    let mut timed = Timed { cases: Vec::new(), skipped: Vec::new(), per_example_ms: None };
    let limit_ms = LONGEST_CALL * cfg.budget.max.as_secs_f64().max(1.0) * 1e3;
    for &threads in thread_counts {
        let models = compiled.iter().map(|c| load(c, threads)).collect::<Result<Vec<_>, _>>()?;
        for &batch in batches {
            progress.step(&format!("latency at batch {batch}, {threads} thread(s)"));
            if let Some(why) = too_long(timed.per_example_ms, batch, limit_ms) {
                timed.skipped.push(format!("batch {batch}, {threads} thread(s) skipped: {why}"));
                continue;
            }
            let pair = measure::time_models(&models.iter().collect::<Vec<_>>(), batch, cfg.budget).map_err(user)?;
            let slowest = pair.iter().map(|t| t.stats.per_example_ms(batch)).fold(0.0, f64::max);
            timed.per_example_ms.get_or_insert(slowest);
            for (c, t) in compiled.iter().zip(pair) {
                timed.cases.push(LatencyCase {
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
    timed.cases.sort_by_key(|c| (c.side, c.threads, c.batch));
    Ok(timed)
}

/// Memory while running at batch 1 (the model's own footprint) and at `max_batch`, the largest
/// batch whose latency was measured.
pub(super) fn memory(
    cfg: &Config,
    compiled: &[Compiled],
    scratch: &Path,
    max_batch: usize,
    memory_steps: usize,
    all_threads: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<MemoryCase>, BenchError> {
    let mut memory_batches = vec![1, max_batch];
    memory_batches.dedup();
    for _ in memory_batches.len()..memory_steps {
        for _ in Side::BOTH {
            progress.step("memory: the largest batch was not measured");
        }
    }
    let mut cases = Vec::new();
    for c in compiled {
        let path = scratch.join(format!("{}.tcm", c.side.label()));
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
            cases.push(MemoryCase {
                side: c.side,
                compile: c.compile_peak.clone(),
                inference: run.peak,
                batch,
                arena_bytes: run.arena_bytes,
                isolated: cfg.probe.is_some(),
            });
        }
    }
    Ok(cases)
}

/// Compile speed (cold and warm) and the runtime at batch 1 and `mid_batch`, per side and level.
pub(super) fn compile_speed(
    cfg: &Config,
    choice: &WeightsChoice,
    scratch: &Path,
    mid_batch: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<CompileCase>, BenchError> {
    let mut compile = Vec::new();
    for side in Side::BOTH {
        for level in LEVELS {
            progress.step(&format!("compile speed of {} at {}", side.label(), level.name()));
            let times =
                measure::compile_times(&cfg.file, &options(cfg, choice, side, level), scratch, 3, 5).map_err(user)?;
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
    Ok(compile)
}

/// Sizes: the model's parameters and both artifacts.
pub(super) fn size(model: &CheckedModel, compiled: &[Compiled]) -> Size {
    let stats = ModelStats::of(model);
    let artifact = |side: Side| compiled.iter().find(|c| c.side == side).map(|c| &c.summary);
    let (fp32, ternary) = (artifact(Side::Fp32), artifact(Side::Ternary));
    let ternary_bytes = ternary.map_or(0, |t| t.artifact_bytes);
    Size {
        parameters: stats.parameters,
        ternary_weights: stats.ternary,
        fp32_bytes: stats.fp32_bytes,
        fp32_artifact_bytes: fp32.map_or(0, |f| f.artifact_bytes),
        ternary_artifact_bytes: ternary_bytes,
        compression: stats.fp32_bytes as f64 / ternary_bytes.max(1) as f64,
        code_bytes: ternary.map_or(0, |t| t.code_bytes),
        trit_bytes: ternary.map_or(0, |t| t.trit_bytes),
    }
}
