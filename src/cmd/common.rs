//! Helpers shared by the commands: loading a model with its diagnostics, optimizing, errors.

use std::path::Path;
use std::process::ExitCode;

use triton_compiler::diagnostics::render::{self, Style};
use triton_compiler::interp::Weights;
use triton_compiler::ir::ParamInfo;
use triton_compiler::passes::{self, OptLevel, Options};
use triton_compiler::{CheckedModel, check_file};

/// A user error outside the source (a missing input file, a bad weights file): printed, exit 1.
pub fn user_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}

/// A command line that cannot apply (a flag the input cannot take): printed, exit 2.
pub fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Checks a file and picks one model; diagnostics are printed to stderr.
pub fn load_model(file: &Path, which: Option<&str>, style: Style) -> Result<CheckedModel, ExitCode> {
    if let Some(why) = triton::files::misplaced(file, "a .tri model", &[]) {
        return Err(user_error(why));
    }
    let checked = check_file(file);
    eprint!("{}", render::render_all(checked.diags().iter(), &checked.program.sources, style));
    if checked.has_errors() {
        eprintln!("error: {} has errors", file.display());
        return Err(ExitCode::from(1));
    }
    triton::pick_model(file, checked.models, which).map_err(user_error)
}

/// Reads a weights file for a model, or initialises the weights from `seed` without one.
pub fn load_weights(path: Option<&Path>, params: &[ParamInfo], seed: u64) -> Result<Weights, ExitCode> {
    triton::read_weights(path, params, seed).map_err(user_error)
}

/// The optimizer options of the command line.
pub fn options<'a>(opt: u8, verify_each: bool, f32_activations: bool, weights: Option<&'a Weights>) -> Options<'a> {
    let level = OptLevel::from_number(opt).unwrap_or(OptLevel::O2);
    Options { level, verify_each, int8_activations: !f32_activations, weights }
}

/// Runs the pipeline of an -O level. A malformed graph is an internal compiler error (exit 101).
pub fn optimize(model: &CheckedModel, opts: &Options<'_>) -> Result<passes::Optimized, ExitCode> {
    passes::optimize(&model.graph, opts).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(101)
    })
}
