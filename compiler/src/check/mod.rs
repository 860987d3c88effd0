//! Checking: names, compile-time evaluation, dtypes and shapes.
//!
//! Phases, in order: `resolve` (module scopes, imports, names in every layer) then, for each
//! `model` in the files the user named, `elab` (instantiate the layer tree with its compile-time
//! arguments and infer every tensor type). Both only collect diagnostics; nothing here renders.
//! Warnings are only kept for files without errors.

pub use crate::ir::dim;
pub mod args;
mod elab;
pub mod model;
pub mod ops;
pub mod resolve;
mod suggest;
pub mod value;

pub use model::{CheckedModel, Init, ModelStats, ParamInfo, QuantRule};

use crate::load::Program;
use crate::syntax::ast::{Item, LayerKind};
use resolve::LayerRef;

/// Resolves every module and checks every model defined in a root module.
pub fn check(program: &mut Program) -> Vec<CheckedModel> {
    let mut diags = std::mem::take(&mut program.diags);
    let scopes = resolve::resolve(program, &mut diags);
    let mut models = Vec::new();
    for &root in &program.roots {
        for (i, item) in program.module(root).ast.items.iter().enumerate() {
            if let Item::Layer(l) = item
                && l.kind == LayerKind::Model
            {
                let elab = elab::Elab::new(program, &scopes, &mut diags);
                if let Some(m) = elab.model(LayerRef { module: root, item: i }) {
                    models.push(m);
                }
            }
        }
    }
    program.diags = quiet_warnings_where_errors(diags);
    models
}

/// Warnings in a file that has errors are noise (often consequences of the errors): drop them.
fn quiet_warnings_where_errors(diags: crate::diagnostics::Diags) -> crate::diagnostics::Diags {
    let dropped = diags.dropped();
    let all = diags.into_vec();
    let error_files: std::collections::HashSet<_> =
        all.iter().filter(|d| d.is_error()).filter_map(|d| d.primary_span().map(|s| s.file)).collect();
    let mut out = crate::diagnostics::Diags::new();
    for d in all {
        if d.is_error() || d.primary_span().is_none_or(|s| !error_files.contains(&s.file)) {
            out.push(d);
        }
    }
    out.add_dropped(dropped);
    out
}
