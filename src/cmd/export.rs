//! `triton export`: a `.tri` model and its weights to ONNX, for any runtime that reads it.
//!
//! Rules:
//! - The checked (unoptimized) graph is exported: FP32 with the latent weights, or ternary
//!   with each quantized weight dequantized (`--precision ternary`).
//! - The output (`--onnx`, default `<stem>.onnx` beside the model) is never a file a user
//!   wrote: an existing file is replaced only when given explicitly and written by
//!   `triton export` (its producer is `triton`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use triton_compiler::diagnostics::render::Style;
use triton_compiler::onnx::export;
use triton_compiler::passes::Timings;

use super::common::{load_weights, model_and_choice, usage_error, user_error};
use super::opts::ModelOpts;

pub struct Args {
    pub file: PathBuf,
    pub m: ModelOpts,
    pub onnx: Option<PathBuf>,
    pub quiet: bool,
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    let start = Instant::now();
    if let Err(e) = a.m.refuse(
        &["-O", "--f32-activations", "--threads"],
        "export writes the checked graph; the level, int8 activations and threads are chosen where the model runs",
    ) {
        return usage_error(e);
    }
    if let Some(why) = triton::files::misplaced(&a.file, "a .tri model", &[]) {
        return user_error(why);
    }
    let out = a.onnx.clone().unwrap_or_else(|| a.file.with_extension("onnx"));
    let ours =
        |p: &Path| std::fs::read(p).ok().and_then(|b| export::producer(&b)).is_some_and(|p| p == export::PRODUCER);
    if let Err(e) = triton::files::may_replace(&out, a.onnx.is_some(), ours, "triton export", "--onnx") {
        return user_error(e);
    }
    let mut timings = Timings::new();
    let (model, choice) = match model_and_choice(&a.file, &a.m, &mut timings, style, a.quiet) {
        Ok(mc) => mc,
        Err(code) => return code,
    };
    let weights = match load_weights(choice.path(), model.params(), a.m.seed()) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let bytes = match export::export(&model.graph, &weights, a.m.precision()) {
        Ok(b) => b,
        Err(e) => return user_error(format!("{}: {e}", a.file.display())),
    };
    if let Err(e) = triton::cache::write_atomic(&out, &bytes) {
        return user_error(format!("cannot write `{}`: {e}", out.display()));
    }
    if !a.quiet {
        eprintln!(
            "{}: model {} ({}) -> {} ({:.1} MB, opset {}) in {:.0} ms",
            a.file.display(),
            model.name,
            a.m.precision().name(),
            out.display(),
            bytes.len() as f64 / 1e6,
            export::OPSET,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    ExitCode::SUCCESS
}
