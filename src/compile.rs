//! `compile_file`: a `.tri` model to a runnable, JIT-compiled model in one call.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD};
use triton_compiler::CheckedModel;
use triton_compiler::codegen::CodegenError;
use triton_compiler::driver;
use triton_compiler::interp::{Precision, Weights};
use triton_compiler::ir::ParamInfo;
use triton_compiler::passes::{OptLevel, Timings};
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
    /// Verify the IR after every optimizer pass (`--verify-each`).
    pub verify_each: bool,
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
            verify_each: false,
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

impl From<driver::DriverError> for CompileError {
    fn from(e: driver::DriverError) -> CompileError {
        match e {
            driver::DriverError::Source(d) => CompileError::Source(d),
            driver::DriverError::Model(m) | driver::DriverError::Sizes(m) => CompileError::Model(m),
            driver::DriverError::Weights(w) => CompileError::Weights(w),
            driver::DriverError::Codegen(c) => CompileError::Codegen(c),
            driver::DriverError::Internal(i) => CompileError::Internal(i),
        }
    }
}

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

/// Picks the model `which` (or the only one) of a file's models ([`driver::pick`]).
pub fn pick_model(path: &Path, models: Vec<CheckedModel>, which: Option<&str>) -> Result<CheckedModel, String> {
    driver::pick(path, models, which)
}

/// `model` with the symbolic sizes `shapes` bound ([`driver::bind`]).
pub fn specialized(model: CheckedModel, shapes: &BTreeMap<String, i64>) -> Result<CheckedModel, CompileError> {
    Ok(driver::bind(model, shapes)?)
}

/// Reads a weights file for a model, or initialises the weights from `seed` without one
/// ([`driver::weights`]: they must fit in memory before anything is allocated).
pub fn read_weights(path: Option<&Path>, params: &[ParamInfo], seed: u64) -> Result<Weights, String> {
    let bytes = match path {
        Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?),
        None => None,
    };
    let name = path.map(|p| p.display().to_string()).unwrap_or_default();
    let from = match &bytes {
        Some(bytes) => driver::WeightsFrom::Safetensors { name: &name, bytes },
        None => driver::WeightsFrom::Seed(seed),
    };
    driver::weights(params, from, &mut Timings::new()).map_err(|e| e.to_string())
}

impl Options {
    /// The driver's settings for these options.
    pub fn settings(&self) -> driver::Settings {
        driver::Settings {
            level: self.opt,
            verify_each: self.verify_each,
            int8_activations: self.int8_activations,
            precision: self.precision,
            model: self.model.clone(),
            shapes: self.shapes.clone(),
        }
    }
}

/// The weights a model is compiled with: the options' file, else the seed.
pub(crate) fn load_weights(
    model: &CheckedModel,
    opts: &Options,
    bytes: Option<&[u8]>,
    timings: &mut Timings,
) -> Result<Weights, CompileError> {
    let name = opts.weights.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
    let from = match bytes {
        Some(bytes) => driver::WeightsFrom::Safetensors { name: &name, bytes },
        None => driver::WeightsFrom::Seed(opts.seed),
    };
    Ok(driver::weights(model.params(), from, timings)?)
}

/// Checks, optimizes and JIT-compiles the model in a `.tri` file (the [`driver`]'s phases).
pub fn compile_file(path: impl AsRef<Path>, opts: &Options) -> Result<CompiledModel, CompileError> {
    let path = path.as_ref();
    let mut timings = Timings::new();
    let settings = opts.settings();
    let checked = driver::check(path, &mut timings);
    let model = driver::select(path, checked, &settings)?;
    let bytes = match &opts.weights {
        Some(p) => Some(std::fs::read(p).map_err(|e| CompileError::Io(format!("cannot read `{}`: {e}", p.display())))?),
        None => None,
    };
    let weights = load_weights(&model, opts, bytes.as_deref(), &mut timings)?;
    let mut compiled = compile_model(&model, &weights, opts)?;
    let mut all = timings;
    all.entries.append(&mut compiled.timings.entries);
    compiled.timings = all;
    Ok(compiled)
}

/// Optimizes and JIT-compiles a checked model with its weights (the [`driver`]'s last phases).
pub fn compile_model(model: &CheckedModel, weights: &Weights, opts: &Options) -> Result<CompiledModel, CompileError> {
    let mut timings = Timings::new();
    let settings = opts.settings();
    let mut source = driver::jit_kernels();
    let compiled = driver::build(model, weights, &settings, &mut source, &mut timings)?;
    let parts = compiled.parts;
    let model =
        timings.time("map", || Model::from_parts(parts, opts.threads)).map_err(|e| CompileError::Map(e.to_string()))?;
    Ok(CompiledModel { model, timings })
}
