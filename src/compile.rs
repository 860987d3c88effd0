//! `compile_file`: a `.tri` model to a runnable, JIT-compiled model in one call.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD};
use triton_compiler::codegen::{self, CodegenError};
use triton_compiler::diagnostics::render::{self, Style};
use triton_compiler::interp::{Precision, Weights};
use triton_compiler::ir::ParamInfo;
use triton_compiler::passes::{self, OptLevel, Timings};
use triton_compiler::{CheckedModel, check_file};
use triton_runtime::{Model, RunError};

/// How to compile.
#[derive(Clone, Debug)]
pub struct Options {
    pub opt: OptLevel,
    /// `Ternary` runs quantized weights (the product); `Fp32` the latent f32 weights (the baseline).
    pub precision: Precision,
    /// Weights file (.safetensors); without one, seeded initialisation from `seed`.
    pub weights: Option<PathBuf>,
    pub seed: u64,
    /// Worker threads: 0 means all cores, 1 runs on the calling thread.
    pub threads: usize,
    /// At -O3, int8 activations for ternary layers (`false`: keep them f32).
    pub int8_activations: bool,
    /// Which model, when the file defines several.
    pub model: Option<String>,
    /// Sizes bound to the model's symbolic dimensions (`H = 64`); see
    /// [`triton_compiler::ir::specialize`].
    pub shapes: BTreeMap<String, i64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            opt: OptLevel::O3,
            precision: Precision::Ternary,
            weights: None,
            seed: 0,
            threads: 0,
            int8_activations: true,
            model: None,
            shapes: BTreeMap::new(),
        }
    }
}

#[derive(Debug)]
pub enum CompileError {
    /// The source has errors; the rendered diagnostics.
    Source(String),
    /// The file defines no model, several (without `model`), or not the one asked for.
    Model(String),
    Weights(String),
    Codegen(CodegenError),
    /// A file could not be read.
    Io(String),
    /// A pass broke the graph (a compiler bug).
    Internal(String),
    Map(String),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::Source(d) => write!(f, "the model has errors:\n{d}"),
            CompileError::Model(e)
            | CompileError::Weights(e)
            | CompileError::Io(e)
            | CompileError::Internal(e)
            | CompileError::Map(e) => f.write_str(e),
            CompileError::Codegen(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CompileError {}

/// A model ready to run, with what compiling it took.
#[derive(Debug)]
pub struct CompiledModel {
    model: Model,
    /// Time per phase and pass.
    pub timings: Timings,
}

impl CompiledModel {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Runs the runtime's microkernels at level `isa` (capped at what the CPU has); see
    /// [`Model::set_isa`].
    pub fn set_isa(&mut self, isa: triton_runtime::cpu::Isa) {
        self.model.set_isa(isa);
    }

    /// Runs a one-input, one-output model. The batch dimension is free; a wrong shape is an error
    /// naming the expected one.
    pub fn run(&self, input: &ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, RunError> {
        let mut out = self.model.run(std::slice::from_ref(input))?;
        Ok(out.swap_remove(0))
    }

    /// Runs a model on all its inputs; returns all its outputs.
    pub fn run_all(&self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        self.model.run(inputs)
    }
}

/// Picks the model `which` (or the only one) of a file's models.
/// blake3 (hex) of every source file a program read, names and texts in load order: how
/// weights files (`triton train`) and bench reports record the source they came from.
pub fn sources_blake3(sources: &triton_compiler::source::SourceMap) -> String {
    let mut hasher = blake3::Hasher::new();
    for (_, f) in sources.files() {
        hasher.update(f.name.as_bytes());
        hasher.update(f.text.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

pub fn pick_model(path: &Path, models: Vec<CheckedModel>, which: Option<&str>) -> Result<CheckedModel, String> {
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
    Ok(models.into_iter().nth(index).unwrap_or_else(|| unreachable!("index checked")))
}

/// `model` with the symbolic sizes `shapes` bound (itself when there are none).
pub fn specialized(mut model: CheckedModel, shapes: &BTreeMap<String, i64>) -> Result<CheckedModel, CompileError> {
    if !shapes.is_empty() {
        model.graph = triton_compiler::ir::specialize::specialize(&model.graph, shapes)
            .map_err(|e| CompileError::Model(format!("model {}: {e}", model.name)))?;
    }
    Ok(model)
}

/// Reads a weights file for a model, or initialises the weights from `seed` without one. The
/// weights must fit in memory ([`crate::limits::check_weights`]) before anything is allocated.
pub fn read_weights(path: Option<&Path>, params: &[ParamInfo], seed: u64) -> Result<Weights, String> {
    crate::limits::check_weights(params)?;
    let Some(p) = path else { return Ok(Weights::init(params, seed)) };
    let bytes = std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    Weights::from_safetensors(&bytes, params).map_err(|e| format!("{}: {e}", p.display()))
}

/// Checks, optimizes and JIT-compiles the model in a `.tri` file.
pub fn compile_file(path: impl AsRef<Path>, opts: &Options) -> Result<CompiledModel, CompileError> {
    let path = path.as_ref();
    let start = std::time::Instant::now();
    let checked = check_file(path);
    if checked.has_errors() {
        let text = render::render_all(checked.diags().iter(), &checked.program.sources, Style::Plain);
        return Err(CompileError::Source(text));
    }
    let model = pick_model(path, checked.models, opts.model.as_deref()).map_err(CompileError::Model)?;
    let model = specialized(model, &opts.shapes)?;
    let check_time = start.elapsed();
    let weights = read_weights(opts.weights.as_deref(), model.params(), opts.seed).map_err(CompileError::Weights)?;
    let mut compiled = compile_model(&model, &weights, opts)?;
    compiled.timings.entries.insert(0, ("parse+check+lower".into(), check_time));
    Ok(compiled)
}

/// Optimizes and JIT-compiles a checked model with its weights.
pub fn compile_model(model: &CheckedModel, weights: &Weights, opts: &Options) -> Result<CompiledModel, CompileError> {
    let popts = passes::Options {
        level: opts.opt,
        verify_each: false,
        int8_activations: opts.int8_activations,
        weights: Some(weights),
    };
    let optimized = passes::optimize(&model.graph, &popts).map_err(|e| CompileError::Internal(e.to_string()))?;
    let mut timings = optimized.timings.clone();
    let parts = timings
        .time("codegen", || {
            codegen::compile_graph(&optimized.graph, optimized.kernels.as_ref(), weights, opts.precision)
        })
        .map_err(CompileError::Codegen)?;
    let model =
        timings.time("map", || Model::from_parts(parts, opts.threads)).map_err(|e| CompileError::Map(e.to_string()))?;
    Ok(CompiledModel { model, timings })
}
