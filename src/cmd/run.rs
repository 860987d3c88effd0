//! `triton run`: a model on a NumPy input with the reference interpreter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::ArrayD;
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp::{self, Precision};

use super::common::{load_model, load_weights, optimize, options, user_error};

pub struct Args {
    pub file: PathBuf,
    pub input: PathBuf,
    pub weights: Option<PathBuf>,
    pub precision: Precision,
    pub opt: u8,
    pub f32_activations: bool,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub model: Option<String>,
}

/// Reads a float32 or float64 `.npy` array.
pub fn read_input(path: &Path) -> Result<ArrayD<f32>, String> {
    let open = || std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()));
    match <ArrayD<f32> as ndarray_npy::ReadNpyExt>::read_npy(open()?) {
        Ok(a) => return Ok(a),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(format!("`{}` is not a readable .npy array: {e}", path.display())),
    }
    match <ArrayD<f64> as ndarray_npy::ReadNpyExt>::read_npy(open()?) {
        Ok(a) => Ok(a.mapv(|v| v as f32)),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(d)) => {
            Err(format!("`{}` holds {d} values; expected a float32 or float64 array", path.display()))
        }
        Err(e) => Err(format!("`{}` is not a readable .npy array: {e}", path.display())),
    }
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    let model = match load_model(&a.file, a.model.as_deref(), style) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let weights = match load_weights(a.weights.as_deref(), model.params(), a.seed) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let optimized = match optimize(&model, &options(a.opt, false, a.f32_activations, Some(&weights))) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let input = match read_input(&a.input) {
        Ok(x) => x,
        Err(e) => return user_error(e),
    };
    let graph = &optimized.graph;
    let result =
        interp::prepare(graph, &weights, a.precision).and_then(|p| interp::run(graph, &p, &[input], a.precision));
    let outputs = match result {
        Ok(o) => o,
        Err(e) => return user_error(e),
    };
    let y = &outputs[0];
    match &a.out {
        Some(path) => {
            let written = std::fs::File::create(path)
                .map_err(|e| e.to_string())
                .and_then(|f| ndarray_npy::WriteNpyExt::write_npy(y, f).map_err(|e| e.to_string()));
            if let Err(e) = written {
                return user_error(format!("cannot write `{}`: {e}", path.display()));
            }
            eprintln!("wrote {} output {:?} to {}", model.name, y.shape(), path.display());
        }
        None => println!("{y:.6}"),
    }
    ExitCode::SUCCESS
}
