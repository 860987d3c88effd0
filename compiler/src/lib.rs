//! The Triton compiler: `.tri` source to the runtime's model parts.
//!
//! Pipeline, one folder per phase: `syntax` (lex, parse) -> `load` (files and imports) ->
//! `check` (names, compile-time evaluation, dtypes, shapes, lowering) -> `ir` (graph, verifier)
//! -> `passes` (optimizer) -> `codegen` (kernels, runtime steps). [`driver`] runs them in that
//! order, one function per phase, for every entry point. Errors are collected as
//! [`diagnostics::Diag`] values and rendered to miette in one place.

pub mod check;
pub mod codegen;
pub mod diagnostics;
pub mod driver;
pub mod grad;
pub mod interp;
pub mod invariant;
pub mod ir;
pub mod limits;
pub mod load;
pub mod onnx;
pub mod passes;
pub mod reference;
pub mod source;
pub mod syntax;
pub mod weights;

use std::path::Path;

pub use check::{CheckedModel, ModelStats};
pub use diagnostics::{Diag, Diags};
pub use load::Program;

/// The result of checking: every file read, every model checked, every diagnostic.
#[derive(Debug)]
pub struct Checked {
    pub program: Program,
    pub models: Vec<CheckedModel>,
}

impl Checked {
    pub fn diags(&self) -> &Diags {
        &self.program.diags
    }

    pub fn has_errors(&self) -> bool {
        self.program.diags.has_errors()
    }

    /// Every diagnostic rendered as plain text (no colours), as `triton check` prints it.
    pub fn render_plain(&self) -> String {
        diagnostics::render::render_all(
            self.program.diags.iter(),
            &self.program.sources,
            diagnostics::render::Style::Plain,
        )
    }
}

/// Loads and checks one `.tri` file and everything it imports.
pub fn check_file(path: &Path) -> Checked {
    let mut loader = load::Loader::new();
    loader.load_file(path);
    finish(loader)
}

/// [`check_file`], recording the time of loading (reading, lexing, parsing every file) and of
/// checking (names, evaluation, shapes, lowering to the IR) under `load` and `check`.
pub fn check_file_timed(path: &Path, timings: &mut passes::Timings) -> Checked {
    let mut loader = load::Loader::new();
    timings.time("lex+parse", || loader.load_file(path));
    timings.time("check+lower", || finish(loader))
}

/// Checks source text. Relative imports resolve against `dir` when given.
pub fn check_source(name: &str, text: &str, dir: Option<&Path>) -> Checked {
    let mut loader = load::Loader::new();
    loader.load_source(name, text, dir);
    finish(loader)
}

fn finish(loader: load::Loader) -> Checked {
    let mut program = loader.finish();
    let models = check::check(&mut program);
    Checked { program, models }
}
