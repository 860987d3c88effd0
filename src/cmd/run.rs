//! `triton run`: a model on a NumPy input, JIT-compiled (or on the reference interpreter).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::ArrayD;
use triton_compiler::codegen::{self, CodegenError};
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp::{self, Precision};
use triton_runtime::Model;

use super::common::{load_model, load_weights, optimize, options, user_error};

/// What runs the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// JIT-compiled kernels (falls back to the interpreter for ops it does not run yet).
    Jit,
    /// The reference interpreter.
    Interp,
}

pub struct Args {
    pub engine: Engine,
    pub file: PathBuf,
    pub input: PathBuf,
    pub weights: Option<PathBuf>,
    pub precision: Precision,
    pub opt: u8,
    pub f32_activations: bool,
    pub out: Option<PathBuf>,
    pub seed: u64,
    pub model: Option<String>,
    /// `--timing`: time this many calls per step after the run.
    pub timing: Option<usize>,
    /// Engine threads (0: every core).
    pub threads: usize,
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

/// Whether `path` is a compiled artifact (by its first bytes, whatever its name).
fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && head == triton_runtime::artifact::MAGIC
}

/// Runs a compiled artifact; the compile options (weights, -O, precision) are in it.
fn run_artifact(a: &Args) -> ExitCode {
    if a.weights.is_some() || a.engine == Engine::Interp {
        return user_error(format!(
            "`{}` is a compiled artifact: its weights and code are fixed (run the .tri model for --weights or --engine interp)",
            a.file.display()
        ));
    }
    let model = match Model::load_with_threads(&a.file, a.threads) {
        Ok(m) => m,
        Err(e) => return user_error(format!("{}: {e}", a.file.display())),
    };
    let input = match read_input(&a.input) {
        Ok(x) => x,
        Err(e) => return user_error(e),
    };
    match model.run(&[input.view()]) {
        Ok(outputs) => {
            let code = write_output(a, model.name(), &outputs[0]);
            if let Some(n) = a.timing {
                print_step_timing(&model, &input, n);
            }
            code
        }
        Err(e) => user_error(e),
    }
}

/// `--timing`: per engine step, the kernel that runs it and the median of `calls` timed calls.
fn print_step_timing(model: &Model, input: &ArrayD<f32>, calls: usize) {
    use triton_runtime::engine::plan::Step;
    let steps = &model.parts().steps;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(calls); steps.len()];
    let mut totals = Vec::with_capacity(calls);
    for _ in 0..calls {
        match model.run_profiled(&[input.view()]) {
            Ok((_, times)) => {
                totals.push(times.iter().map(|t| t.as_secs_f64() * 1e3).sum::<f64>());
                for (s, t) in samples.iter_mut().zip(times) {
                    s.push(t.as_secs_f64() * 1e3);
                }
            }
            Err(e) => {
                eprintln!("note: no timing: {e}");
                return;
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        triton::bench::stats::median(v)
    };
    let total = median(&mut totals);
    // The same calls end to end (`Model::run`, as `triton bench` times them), for the overhead
    // outside the steps: arena, input and output conversion.
    let mut walls: Vec<f64> = (0..calls)
        .filter_map(|_| {
            let t = std::time::Instant::now();
            model.run(&[input.view()]).ok().map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    let wall = median(&mut walls);
    let mut table = triton::bench::render::Section::new(
        format!("{}: engine steps on input {:?}", model.name(), input.shape()),
        &["step", "op", "weight", "runs on", "median ms", "share"],
    );
    let kernels = model.step_kernels();
    for (i, (step, s)) in steps.iter().zip(samples.iter_mut()).enumerate() {
        let ms = median(s);
        let weight = match step {
            Step::Conv { weight, .. } | Step::Gemm { weight, .. } => model.parts().weights[*weight].name.clone(),
            _ => String::new(),
        };
        let share = if total > 0.0 { 100.0 * ms / total } else { 0.0 };
        table.row(vec![
            i.to_string(),
            step.name().to_string(),
            weight,
            kernels[i].clone(),
            format!("{ms:.4}"),
            format!("{share:.1}%"),
        ]);
    }
    table.notes.push(format!(
        "{} steps, {calls} calls: median {total:.4} ms per call (sum of steps), {wall:.4} ms end to end",
        steps.len()
    ));
    eprint!("{}", table.terminal());
}

fn write_output(a: &Args, name: &str, y: &ArrayD<f32>) -> ExitCode {
    match &a.out {
        Some(path) => {
            let written = std::fs::File::create(path)
                .map_err(|e| e.to_string())
                .and_then(|f| ndarray_npy::WriteNpyExt::write_npy(y, f).map_err(|e| e.to_string()));
            if let Err(e) = written {
                return user_error(format!("cannot write `{}`: {e}", path.display()));
            }
            eprintln!("wrote {name} output {:?} to {}", y.shape(), path.display());
        }
        None => println!("{y:.6}"),
    }
    ExitCode::SUCCESS
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    if is_artifact(&a.file) {
        return run_artifact(a);
    }
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
    let jit = match a.engine {
        Engine::Interp => None,
        Engine::Jit => match codegen::compile_graph(graph, optimized.kernels.as_ref(), &weights, a.precision) {
            Ok(parts) => match Model::from_parts(parts, a.threads) {
                Ok(m) => Some(m),
                Err(e) => return user_error(e),
            },
            Err(e @ CodegenError::Unsupported(_)) => {
                eprintln!("note: {e}; running on the reference interpreter");
                None
            }
            Err(e) => return user_error(e),
        },
    };
    if let (Some(n), None) = (a.timing, &jit) {
        eprintln!("note: --timing times the engine's steps; the reference interpreter has none ({n} calls skipped)");
    }
    let result = match &jit {
        Some(m) => m.run(&[input.view()]).map_err(|e| e.to_string()),
        None => interp::prepare(graph, &weights, a.precision)
            .and_then(|p| interp::run(graph, &p, std::slice::from_ref(&input), a.precision))
            .map_err(|e| e.to_string()),
    };
    let outputs = match result {
        Ok(o) => o,
        Err(e) => return user_error(e),
    };
    let code = write_output(a, &model.name, &outputs[0]);
    if let (Some(n), Some(m)) = (a.timing, &jit) {
        print_step_timing(m, &input, n);
    }
    code
}
