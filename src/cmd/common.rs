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

/// Checks a file and picks one model; diagnostics are printed to stderr.
pub fn load_model(file: &Path, which: Option<&str>, style: Style) -> Result<CheckedModel, ExitCode> {
    let checked = check_file(file);
    eprint!("{}", render::render_all(checked.diags().iter(), &checked.program.sources, style));
    if checked.has_errors() {
        eprintln!("error: {} has errors", file.display());
        return Err(ExitCode::from(1));
    }
    let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
    let index = match (which, checked.models.len()) {
        (None, 1) => 0,
        (None, 0) => return Err(user_error(format!("{} defines no model", file.display()))),
        (None, _) => {
            return Err(user_error(format!(
                "{} defines several models ({}); choose one with --model",
                file.display(),
                names.join(", ")
            )));
        }
        (Some(w), _) => match names.iter().position(|n| *n == w) {
            Some(i) => i,
            None => {
                return Err(user_error(format!(
                    "{} has no model `{w}`; it defines: {}",
                    file.display(),
                    names.join(", ")
                )));
            }
        },
    };
    Ok(checked.models.into_iter().nth(index).unwrap_or_else(|| unreachable!("index checked")))
}

/// Reads a weights file for a model, or initialises the weights from `seed` without one.
pub fn load_weights(path: Option<&Path>, params: &[ParamInfo], seed: u64) -> Result<Weights, ExitCode> {
    let Some(p) = path else { return Ok(Weights::init(params, seed)) };
    let bytes = std::fs::read(p).map_err(|e| user_error(format!("cannot read `{}`: {e}", p.display())))?;
    Weights::from_safetensors(&bytes, params).map_err(|e| user_error(format!("{}: {e}", p.display())))
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
