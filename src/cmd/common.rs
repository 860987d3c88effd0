//! Helpers shared by the commands: loading a model with its diagnostics, optimizing, errors.

use std::path::Path;
use std::process::ExitCode;

use triton_compiler::diagnostics::render::{self, Style};
use triton_compiler::interp::Weights;
use triton_compiler::ir::ParamInfo;
use triton_compiler::passes::{Optimized, Timings};
use triton_compiler::{CheckedModel, driver};

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

/// Checks a file (timed into `timings`) and selects one model with its sizes bound (the
/// driver's first phases); diagnostics are printed to stderr.
pub fn load_model(
    file: &Path,
    settings: &driver::Settings,
    timings: &mut Timings,
    style: Style,
) -> Result<CheckedModel, ExitCode> {
    load_model_hashed(file, settings, timings, style).map(|(m, _)| m)
}

/// [`load_model`], with the blake3 hash of every source file read (what weights files record).
pub fn load_model_hashed(
    file: &Path,
    settings: &driver::Settings,
    timings: &mut Timings,
    style: Style,
) -> Result<(CheckedModel, String), ExitCode> {
    if let Some(why) = triton::files::misplaced(file, "a .tri model", &[]) {
        return Err(user_error(why));
    }
    let checked = driver::check(file, timings);
    eprint!("{}", render::render_all(checked.diags().iter(), &checked.program.sources, style));
    if checked.has_errors() {
        eprintln!("error: {} has errors", file.display());
        return Err(ExitCode::from(1));
    }
    let hash = triton::sources_blake3(&checked.program.sources);
    Ok((driver::select(file, checked, settings).map_err(driver_error)?, hash))
}

/// The model a command runs and where its weights come from (`--weights`, beside the model,
/// else seeded; `--seed` with a weights file refused), the choice said on stderr unless `quiet`.
pub fn model_and_choice(
    file: &Path,
    m: &super::opts::ModelOpts,
    timings: &mut Timings,
    style: Style,
    quiet: bool,
) -> Result<(CheckedModel, triton::weights::Choice), ExitCode> {
    let model = load_model(file, &m.settings(false, Default::default()), timings, style)?;
    let choice = triton::weights::Choice::resolve(file, m.weights.as_deref(), m.seed());
    super::opts::seed_applies(m, &choice).map_err(usage_error)?;
    if !quiet {
        eprintln!("{}", choice.line());
    }
    Ok((model, choice))
}

/// Reads a weights file for a model, or initialises the weights from `seed` without one.
pub fn load_weights(path: Option<&Path>, params: &[ParamInfo], seed: u64) -> Result<Weights, ExitCode> {
    triton::read_weights(path, params, seed).map_err(user_error)
}

/// The driver's optimizer phase. A graph a pass broke is an internal compiler error: reported
/// as such (exit 1), never a panic.
pub fn optimize(
    model: &CheckedModel,
    weights: Option<&Weights>,
    settings: &driver::Settings,
    timings: &mut Timings,
) -> Result<Optimized, ExitCode> {
    let quantized = weights.map(|w| driver::quantize(&model.graph, w, timings));
    driver::optimize(&model.graph, weights.zip(quantized.as_ref()), settings, timings).map_err(driver_error)
}

/// A driver error as the command's exit.
pub fn driver_error(e: driver::DriverError) -> ExitCode {
    match e {
        driver::DriverError::Internal(_) => {
            eprintln!("error: {e} (a bug in Triton: please report it with the model)");
            ExitCode::from(1)
        }
        e => user_error(e),
    }
}
