//! ONNX import (an `.onnx` file to a readable `.tri` model and its FP32 weights) and export
//! ([`export`]: a checked model's graph to ONNX).
//!
//! Phases, one file each: [`read`] (protobuf to a checked plain graph: sizes, data, order),
//! [`convert`] (nodes onto std layers and built-in ops, or the list of what has no
//! equivalent), then a check of the written source with the compiler's own checker, so an
//! import that succeeds always gives a model `triton check` accepts with weights that fit it.
//!
//! Rules:
//! - Nothing is written by this module; the caller writes the source and the weights only
//!   when [`import`] returns them.
//! - Every failure is an [`ImportError`]; an unsupported model lists every node that has no
//!   equivalent, by name and op type, not just the first.

pub mod convert;
pub mod export;
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto {
    //! Types generated from the ONNX project's `onnx.proto` (see `scripts/gen-onnx-proto.sh`).
    include!("proto/onnx.rs");
}
pub mod read;

use std::path::Path;

pub use convert::{TernaryPolicy, Unsupported};
pub use read::ReadError;

use crate::weights::Weights;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} node{} ha{} no equivalent in Triton's language:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, if .0.len() == 1 { "s" } else { "ve" }, .0.iter().map(|u| format!("  {} ({}): {}", u.node, u.op, u.why)).collect::<Vec<_>>().join("\n"))]
    Unsupported(Vec<Unsupported>),
    #[error(
        "internal error: the imported model does not check (a bug in `triton import`; please report it with the model):\n{0}"
    )]
    Check(String),
}

/// What to import and how.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The model's name in the source (default: from the graph's name or the file's).
    pub name: Option<String>,
    pub ternary: TernaryPolicy,
}

/// An imported model.
#[derive(Debug)]
pub struct Imported {
    /// The `.tri` source.
    pub source: String,
    /// Its FP32 weights, named by parameter path.
    pub weights: Weights,
    pub name: String,
    pub nodes: usize,
    pub layers: usize,
    pub ternary: usize,
    pub opset: i64,
}

/// A model name (an identifier starting with a capital) from `s`.
pub fn model_name(s: &str) -> String {
    let words: Vec<String> = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            cs.next().map_or_else(String::new, |f| f.to_ascii_uppercase().to_string() + cs.as_str())
        })
        .collect();
    let name = words.concat();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) { format!("Model{name}") } else { name }
}

/// Imports ONNX `bytes` (`file` names it in messages and is where external data is looked up).
pub fn import(bytes: &[u8], file: &Path, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let graph = read::read(bytes, file.parent())?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = opts.name.clone().unwrap_or_else(|| {
        model_name(if graph.name.is_empty() || graph.name == "main_graph" { &stem } else { &graph.name })
    });
    let file_name = file.file_name().map_or_else(|| file.display().to_string(), |f| f.to_string_lossy().into_owned());
    let producer = if graph.producer.is_empty() { String::new() } else { format!("{}, ", graph.producer) };
    let origin = format!("{file_name} ({producer}opset {})", graph.opset);
    let converted = convert::convert(&graph, &name, opts.ternary, &origin).map_err(ImportError::Unsupported)?;
    // The written source must check, and its parameters must be exactly the weights.
    let checked = crate::check_source(&format!("{stem}.tri"), &converted.source, None);
    if checked.has_errors() {
        let text = crate::diagnostics::render::render_all(
            checked.diags().iter(),
            &checked.program.sources,
            crate::diagnostics::render::Style::Plain,
        );
        return Err(ImportError::Check(format!("{text}\n{}", converted.source)));
    }
    let model = checked
        .models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| ImportError::Check(format!("no model `{name}`")))?;
    let weights = Weights { tensors: converted.weights };
    for p in model.params() {
        let want: Vec<usize> = p.shape.iter().map(|d| *d as usize).collect();
        match weights.tensors.get(&p.name) {
            Some(t) if t.shape() == want.as_slice() => {}
            Some(t) => {
                return Err(ImportError::Check(format!(
                    "`{}` is {:?}, the model declares {want:?}",
                    p.name,
                    t.shape()
                )));
            }
            None => return Err(ImportError::Check(format!("no weights for `{}`", p.name))),
        }
    }
    Ok(Imported {
        source: converted.source,
        weights,
        name,
        nodes: converted.nodes,
        layers: converted.layers,
        ternary: converted.ternary,
        opset: graph.opset,
    })
}
