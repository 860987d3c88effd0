//! `triton import`: an ONNX model to a `.tri` model and its FP32 weights (safetensors).
//!
//! Rules:
//! - Nothing is written unless the whole model imports: an unsupported node, a malformed file
//!   or a model that would not check leaves every file as it was (exit 1).
//! - Outputs: `-o` (default `<onnx stem>.tri` beside the ONNX file) and `--weights-out`
//!   (default `<tri stem>.safetensors` beside the `.tri`, where every command looks for them).
//!   A default output that exists is never replaced; an explicit one is replaced only when it
//!   is what `triton import` writes (a `.tri` it imported, a safetensors file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use triton_compiler::onnx::{self, ImportOptions, TernaryPolicy};

use super::common::{usage_error, user_error};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TernaryArg {
    /// Every convolution and linear layer ternary but the first and the last.
    Auto,
    /// None: an FP32 model (ternarize later by editing the layers).
    None,
    /// Every convolution and linear layer.
    All,
}

impl From<TernaryArg> for TernaryPolicy {
    fn from(t: TernaryArg) -> TernaryPolicy {
        match t {
            TernaryArg::Auto => TernaryPolicy::Auto,
            TernaryArg::None => TernaryPolicy::None,
            TernaryArg::All => TernaryPolicy::All,
        }
    }
}

pub struct Args {
    pub file: PathBuf,
    pub output: Option<PathBuf>,
    pub weights_out: Option<PathBuf>,
    pub ternary: TernaryArg,
    pub name: Option<String>,
    pub quiet: bool,
}

/// The first line of every `.tri` the importer writes (how an explicit `-o` knows it may replace
/// a file).
const MARK: &str = "# Imported by `triton import`";

pub fn run(a: &Args) -> ExitCode {
    let start = Instant::now();
    if let Some(name) = &a.name
        && (name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit()))
    {
        return usage_error(format!(
            "--name `{name}` is not an identifier (letters, digits and `_`, not starting with a digit)"
        ));
    }
    let tri = a.output.clone().unwrap_or_else(|| a.file.with_extension("tri"));
    if tri.extension().is_none_or(|e| e != "tri") {
        return usage_error(format!("-o `{}`: the model's file name must end in `.tri`", tri.display()));
    }
    let weights = a.weights_out.clone().unwrap_or_else(|| triton::weights::beside(&tri));
    for (path, explicit, ours) in [
        (&tri, a.output.is_some(), is_imported_tri as fn(&Path) -> bool),
        (&weights, a.weights_out.is_some(), is_safetensors),
    ] {
        if let Err(e) = triton::files::may_replace(path, explicit, ours, "triton import", "-o / --weights-out") {
            return user_error(e);
        }
    }
    let size = match std::fs::metadata(&a.file) {
        Ok(m) if m.is_dir() => return user_error(format!("`{}` is a folder; give the .onnx file", a.file.display())),
        Ok(m) => m.len(),
        Err(e) => return user_error(format!("cannot read `{}`: {e}", a.file.display())),
    };
    if let Err(e) = triton_compiler::limits::check_alloc(&format!("`{}`", a.file.display()), Some(size)) {
        return user_error(e);
    }
    let bytes = match std::fs::read(&a.file) {
        Ok(b) => b,
        Err(e) => return user_error(format!("cannot read `{}`: {e}", a.file.display())),
    };
    let opts = ImportOptions { name: a.name.clone(), ternary: a.ternary.into() };
    let imported = match onnx::import(&bytes, &a.file, &opts) {
        Ok(m) => m,
        Err(e) => return user_error(format!("{}: {e}", a.file.display())),
    };
    let mut meta = std::collections::HashMap::new();
    meta.insert("imported_from".to_string(), a.file.display().to_string());
    meta.insert("model".to_string(), imported.name.clone());
    meta.insert("precision".to_string(), "fp32".to_string());
    let weight_bytes = match imported.weights.to_safetensors(Some(meta)) {
        Ok(b) => b,
        Err(e) => return user_error(e),
    };
    if let Err(e) = triton::cache::write_atomic(&weights, &weight_bytes) {
        return user_error(format!("cannot write `{}`: {e}", weights.display()));
    }
    if let Err(e) = triton::cache::write_atomic(&tri, imported.source.as_bytes()) {
        return user_error(format!("cannot write `{}`: {e}", tri.display()));
    }
    if !a.quiet {
        eprintln!(
            "{}: model {} (opset {}): {} nodes -> {} layers ({} ternary) -> {}, {} ({:.1} MB) in {:.0} ms",
            a.file.display(),
            imported.name,
            imported.opset,
            imported.nodes,
            imported.layers,
            imported.ternary,
            tri.display(),
            weights.display(),
            weight_bytes.len() as f64 / 1e6,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    ExitCode::SUCCESS
}

fn is_imported_tri(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(MARK.as_bytes()))
}

fn is_safetensors(path: &Path) -> bool {
    triton::files::sniff(path) == Some(triton::files::Kind::Safetensors)
}
