//! The pipeline, written out in one place: a `.tri` file to the runtime's model parts.
//!
//! ```text
//! check      load + lex + parse + check + lower        -> Checked (every model, diagnostics)
//! select     pick the model, bind symbolic sizes        -> CheckedModel
//! weights    a safetensors file, or seeded init         -> Weights (memory checked first)
//! quantize   each quantized weight, once                -> QuantCache
//! optimize   the -O level's passes (verifier between)   -> Optimized (graph, arena, kernel plan)
//! codegen    kernels and runtime steps                  -> ModelParts (+ report)
//! ```
//!
//! Rules:
//! - Every entry point runs these functions, in this order: the facade (`triton::compile_file`),
//!   the artifact builder and its cache (which skips the later phases on a hit), each command
//!   and the bench. No other code calls the optimizer and the code generator in sequence.
//! - Each phase records its wall time in the caller's [`Timings`] under a fixed name.
//! - `Settings::verify_each` reaches the optimizer: the IR is verified after every pass.
//! - Errors are [`DriverError`]s: what the user got wrong (source, model choice, sizes,
//!   weights) apart from what the compiler got wrong (`Internal`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use triton_runtime::engine::plan::ModelParts;

use crate::codegen::{self, CodegenError, CodegenReport, KernelSource};
use crate::interp::Precision;
use crate::ir::{Graph, ParamInfo, specialize};
use crate::passes::{self, OptLevel, Optimized, Timings};
use crate::weights::Weights;
use crate::weights::quant::QuantCache;
use crate::{Checked, CheckedModel};

/// What a compile is asked to do (the inputs are the file and the weights).
#[derive(Clone, Debug)]
pub struct Settings {
    pub level: OptLevel,
    /// Verify the IR after every pass (always on in debug builds).
    pub verify_each: bool,
    /// At -O3, int8 activations for ternary products (`false`: keep them f32).
    pub int8_activations: bool,
    /// `Ternary` runs quantized weights; `Fp32` the latent f32 weights (the baseline).
    pub precision: Precision,
    /// Which model, when the file defines several.
    pub model: Option<String>,
    /// Sizes bound to symbolic dimensions (`H = 64`).
    pub shapes: BTreeMap<String, i64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            level: OptLevel::O3,
            verify_each: false,
            int8_activations: true,
            precision: Precision::Ternary,
            model: None,
            shapes: BTreeMap::new(),
        }
    }
}

/// Where the weights come from.
#[derive(Clone, Copy, Debug)]
pub enum WeightsFrom<'a> {
    /// Seeded initialisation.
    Seed(u64),
    /// A safetensors file's bytes; `name` (its path) is for messages.
    Safetensors { name: &'a str, bytes: &'a [u8] },
}

#[derive(Debug)]
pub enum DriverError {
    /// The source has errors (the diagnostics are in the returned [`Checked`] value's program;
    /// this holds them rendered as plain text).
    Source(String),
    /// No model, several without a choice, or not the one asked for.
    Model(String),
    /// Sizes that cannot be bound.
    Sizes(String),
    Weights(String),
    Codegen(CodegenError),
    /// A pass broke the graph: a compiler bug.
    Internal(String),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Source(d) => write!(f, "the model has errors:\n{d}"),
            DriverError::Model(e) | DriverError::Sizes(e) | DriverError::Weights(e) => f.write_str(e),
            DriverError::Codegen(e) => write!(f, "{e}"),
            DriverError::Internal(e) => write!(f, "internal compiler error: {e}"),
        }
    }
}

impl std::error::Error for DriverError {}

/// Phase 1: loads and checks `path` and everything it imports (timed as `lex+parse` and
/// `check+lower`). Diagnostics stay in the result for the caller to render.
pub fn check(path: &Path, timings: &mut Timings) -> Checked {
    crate::check_file_timed(path, timings)
}

/// Phase 2: the model `settings.model` (or the only one) of a checked file, with the sizes of
/// `settings.shapes` bound.
pub fn select(path: &Path, checked: Checked, settings: &Settings) -> Result<CheckedModel, DriverError> {
    if checked.has_errors() {
        return Err(DriverError::Source(checked.render_plain()));
    }
    let model = pick(path, checked.models, settings.model.as_deref()).map_err(DriverError::Model)?;
    bind(model, &settings.shapes)
}

/// The model `which` (or the only one) of a file's models.
pub fn pick(path: &Path, models: Vec<CheckedModel>, which: Option<&str>) -> Result<CheckedModel, String> {
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let index = match which {
        Some(w) => names
            .iter()
            .position(|n| n == w)
            .ok_or_else(|| format!("{} has no model `{w}`; it defines: {}", path.display(), names.join(", ")))?,
        None if names.len() == 1 => 0,
        None if names.is_empty() => return Err(format!("{} defines no model", path.display())),
        None => {
            return Err(format!(
                "{} defines several models ({}); choose one with --model",
                path.display(),
                names.join(", ")
            ));
        }
    };
    models.into_iter().nth(index).ok_or_else(|| format!("{}: model {index} vanished", path.display()))
}

/// `model` with the symbolic sizes `shapes` bound (itself when there are none).
pub fn bind(mut model: CheckedModel, shapes: &BTreeMap<String, i64>) -> Result<CheckedModel, DriverError> {
    if !shapes.is_empty() {
        model.graph = specialize::specialize(&model.graph, shapes)
            .map_err(|e| DriverError::Sizes(format!("model {}: {e}", model.name)))?;
    }
    Ok(model)
}

/// Phase 3: the weights of a model's parameters (timed as `weights`). They must fit in memory
/// ([`crate::limits::check_weights`]) before anything is allocated.
pub fn weights(params: &[ParamInfo], from: WeightsFrom<'_>, timings: &mut Timings) -> Result<Weights, DriverError> {
    timings.time("weights", || {
        crate::limits::check_weights(params).map_err(DriverError::Weights)?;
        match from {
            WeightsFrom::Seed(seed) => Ok(Weights::init(params, seed)),
            WeightsFrom::Safetensors { name, bytes } => {
                Weights::from_safetensors(bytes, params).map_err(|e| DriverError::Weights(format!("{name}: {e}")))
            }
        }
    })
}

/// Phase 3b: every quantized weight quantized once (timed as `quantize`), for the kernel plan
/// and the code generator to share.
pub fn quantize(graph: &Graph, weights: &Weights, timings: &mut Timings) -> QuantCache {
    timings.time("quantize", || QuantCache::build(&graph.params, weights))
}

/// Phase 4: the -O level's passes, each timed as `pass NAME`, the IR verified after each when
/// `settings.verify_each`. `weights`, when known, feed the kernel plan's zero-skip decisions.
pub fn optimize(
    graph: &Graph,
    weights: Option<(&Weights, &QuantCache)>,
    settings: &Settings,
    timings: &mut Timings,
) -> Result<Optimized, DriverError> {
    let opts = passes::Options {
        level: settings.level,
        verify_each: settings.verify_each,
        int8_activations: settings.int8_activations,
        weights: weights.map(|(w, _)| w),
        quantized: weights.map(|(_, q)| q),
    };
    let optimized = passes::optimize(graph, &opts).map_err(|e| DriverError::Internal(e.to_string()))?;
    for (name, d) in &optimized.timings.entries {
        timings.add(&format!("pass {name}"), *d);
    }
    Ok(optimized)
}

/// Phase 5: the runtime's model parts, with kernels from `source` (a cache, or the JIT), timed
/// as `codegen`. It is the quantized weights' last reader: it takes them.
pub fn codegen(
    optimized: &Optimized,
    weights: (&Weights, QuantCache),
    precision: Precision,
    source: &mut KernelSource<'_>,
    timings: &mut Timings,
) -> Result<(ModelParts, CodegenReport), DriverError> {
    let (weights, mut quantized) = weights;
    timings.time("codegen", || {
        let plan = optimized.kernels.as_ref();
        codegen::compile_graph_quantized(&optimized.graph, plan, weights, Some(&mut quantized), precision, source)
            .map_err(DriverError::Codegen)
    })
}

/// Kernels compiled by the JIT as they are asked for, no cache.
pub fn jit_kernels() -> impl FnMut(&codegen::KernelSpec) -> Result<(Vec<u8>, bool), CodegenError> {
    |spec| spec.compile().map(|code| (code, false))
}

/// Everything a whole compile made.
#[derive(Debug)]
pub struct Compiled {
    pub optimized: Optimized,
    pub parts: ModelParts,
    pub report: CodegenReport,
}

/// Phases 4 and 5 for a selected model and its weights.
pub fn build(
    model: &CheckedModel,
    weights: &Weights,
    settings: &Settings,
    source: &mut KernelSource<'_>,
    timings: &mut Timings,
) -> Result<Compiled, DriverError> {
    let quantized = quantize(&model.graph, weights, timings);
    let optimized = optimize(&model.graph, Some((weights, &quantized)), settings, timings)?;
    let (parts, report) = codegen(&optimized, (weights, quantized), settings.precision, source, timings)?;
    Ok(Compiled { optimized, parts, report })
}
