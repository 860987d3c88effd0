//! `triton run`: a model on NumPy inputs, JIT-compiled (or on the reference interpreter), or a
//! compiled artifact.
//!
//! Rules:
//! - Inputs: one `--input` per model input, in order or as `NAME=FILE`, or one `.npz` archive
//!   holding them by name ([`read_inputs`]).
//! - A `.tri` model with symbolic sizes besides the batch (`H`, `W`) is compiled for the sizes
//!   of the inputs given.
//! - An artifact has its weights, precision, level and code built in: options that choose them
//!   are refused (exit 2), never ignored.
//! - The JIT path compiles through the artifact cache (`$TRITON_CACHE_DIR`, else the
//!   platform's cache folder), keyed by the bound sizes too.
//! - The weights line (`weights: ...`) goes to stderr unless `--quiet`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::ArrayD;
use triton::files::{self, Kind};
use triton_compiler::codegen::CodegenError;
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp;
use triton_compiler::ir::Dim;
use triton_compiler::passes::Timings;
use triton_runtime::Model;
use triton_runtime::cpu::Isa;

use super::common::{load_weights, model_and_choice, optimize, usage_error, user_error};
use super::opts::ModelOpts;

/// What runs the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// JIT-compiled kernels (falls back to the interpreter for ops it does not run yet).
    Jit,
    /// The reference interpreter.
    Interp,
}

/// `--isa`: the runtime's instruction-set levels ([`Isa`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaArg {
    Generic,
    Avx2,
    Avx512vnni,
    Amx,
}

impl From<IsaArg> for Isa {
    fn from(a: IsaArg) -> Isa {
        match a {
            IsaArg::Generic => Isa::Generic,
            IsaArg::Avx2 => Isa::Avx2,
            IsaArg::Avx512vnni => Isa::Avx512Vnni,
            IsaArg::Amx => Isa::Amx,
        }
    }
}

/// The level `--isa` asks for, refused (exit 2) above what this CPU runs.
fn isa_level(a: &Args) -> Result<Option<Isa>, ExitCode> {
    match a.isa {
        Some(i) if i > triton_runtime::cpu::best() => Err(usage_error(format!(
            "--isa {i}: this CPU runs the runtime's kernels up to `{}`",
            triton_runtime::cpu::best()
        ))),
        i => Ok(i),
    }
}

pub struct Args {
    /// `--isa`: run the runtime's kernels at this level (at most the CPU's).
    pub isa: Option<Isa>,
    pub engine: Option<Engine>,
    pub file: PathBuf,
    /// `--input` items: `FILE` or `NAME=FILE`.
    pub inputs: Vec<String>,
    pub m: ModelOpts,
    pub out: Option<PathBuf>,
    pub top_k: Option<usize>,
    /// `--timing`: time this many calls per step after the run.
    pub timing: Option<usize>,
    pub quiet: bool,
    /// `--normalize`: apply the weights file's recorded normalization to the input.
    pub normalize: bool,
}

/// Reads a float32 or float64 `.npy` array (its header checked against its size first).
pub fn read_input(path: &Path) -> Result<ArrayD<f32>, String> {
    files::read_npy(path)
}

/// The model's inputs from the `--input` items, in the model's order. `names` are the
/// model's input names; `sigs` their types, for messages.
pub fn read_inputs(items: &[String], names: &[String], sigs: &[String]) -> Result<Vec<ArrayD<f32>>, String> {
    let takes = || {
        let list: Vec<String> = names.iter().zip(sigs).map(|(n, s)| format!("{n}: {s}")).collect();
        format!("{} input{} ({})", names.len(), if names.len() == 1 { "" } else { "s" }, list.join(", "))
    };
    // One archive holding them all.
    if let [one] = items
        && files::sniff(Path::new(one)) == Some(Kind::Npz)
    {
        let arrays = files::read_npz(Path::new(one))?;
        let mut by_name: BTreeMap<String, ArrayD<f32>> = arrays.iter().cloned().collect();
        if names.iter().all(|n| by_name.contains_key(n)) {
            return Ok(names.iter().filter_map(|n| by_name.remove(n)).collect());
        }
        let positional: Vec<String> = (0..arrays.len()).map(|i| format!("arr_{i}")).collect();
        if arrays.len() == names.len() && arrays.iter().map(|(n, _)| n).eq(positional.iter()) {
            return Ok(arrays.into_iter().map(|(_, a)| a).collect());
        }
        let held: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!("`{one}` holds {}; the model takes {}, by name", held.join(", "), takes()));
    }
    let mut slots: Vec<Option<ArrayD<f32>>> = vec![None; names.len()];
    let mut positional = Vec::new();
    for item in items {
        match item.split_once('=').filter(|(n, _)| names.iter().any(|m| m == n)) {
            Some((name, file)) => {
                let i = names.iter().position(|m| m == name).unwrap_or_default();
                if slots[i].is_some() {
                    return Err(format!("input `{name}` is given twice"));
                }
                slots[i] = Some(read_input(Path::new(file))?);
            }
            None => {
                if let Some((name, _)) = item.split_once('=')
                    && !Path::new(item).exists()
                {
                    return Err(format!("--input {item}: the model has no input `{name}`; it takes {}", takes()));
                }
                positional.push(item);
            }
        }
    }
    let free = slots.iter().filter(|s| s.is_none()).count();
    if positional.len() != free {
        return Err(format!("the model takes {}; got {} --input", takes(), items.len()));
    }
    let mut positional = positional.into_iter();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        if let Some(p) = positional.next() {
            *slot = Some(read_input(Path::new(p))?);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Runs a compiled artifact; the compile options (weights, -O, precision) are in it.
fn run_artifact(a: &Args) -> ExitCode {
    let meta = std::fs::read(&a.file).ok().and_then(|b| triton_runtime::artifact::read_meta(&b).ok());
    let built = meta.as_ref().map_or(String::new(), |m| format!(" (compiled {} at -{})", m.precision, m.opt_level));
    let mut refused = a.m.given();
    if a.engine.is_some() {
        refused.push("--engine");
    }
    if a.normalize {
        refused.push("--normalize (an artifact does not record it)");
    }
    if !refused.is_empty() {
        return usage_error(format!(
            "`{}` is a compiled artifact{built}: its weights, precision, level and code are fixed, so {} cannot apply; run the .tri model to choose them",
            a.file.display(),
            refused.join(", ")
        ));
    }
    let isa = match isa_level(a) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let mut model = match Model::load_with_threads(&a.file, a.m.threads()) {
        Ok(m) => m,
        Err(e) => return user_error(format!("{}: {e}", a.file.display())),
    };
    if let Some(i) = isa {
        model.set_isa(i);
    }
    let names: Vec<String> = model.inputs().iter().map(|(n, _)| n.clone()).collect();
    let sigs: Vec<String> = model.inputs().iter().map(|(_, s)| s.to_string()).collect();
    let inputs = match read_inputs(&a.inputs, &names, &sigs) {
        Ok(x) => x,
        Err(e) => return user_error(e),
    };
    let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
    match model.run(&views) {
        Ok(outputs) => {
            let out_names: Vec<String> = model.outputs().iter().map(|(n, _)| n.clone()).collect();
            let code = write_outputs(a, model.name(), &out_names, &outputs);
            if let Some(n) = a.timing {
                print_step_timing(&model, &inputs, n);
            }
            code
        }
        Err(e) => user_error(e),
    }
}

/// `--timing`: per engine step, the kernel that runs it and the median of `calls` timed calls.
fn print_step_timing(model: &Model, inputs: &[ArrayD<f32>], calls: usize) {
    use triton_runtime::engine::plan::Step;
    let views: Vec<_> = inputs.iter().map(|x| x.view()).collect();
    let steps = &model.parts().steps;
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(calls); steps.len()];
    let mut totals = Vec::with_capacity(calls);
    for _ in 0..calls {
        match model.run_profiled(&views) {
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
            model.run(&views).ok().map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    let wall = median(&mut walls);
    let shapes: Vec<_> = inputs.iter().map(|x| x.shape().to_vec()).collect();
    let mut table = triton::bench::render::Section::new(
        format!("{}: engine steps on input {shapes:?}", model.name()),
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

/// The `k` best classes of each row of a `[B, C]` output, best first (ties: lower index).
pub fn top_k(y: &ArrayD<f32>, k: usize) -> Result<Vec<Vec<(usize, f32)>>, String> {
    if y.ndim() != 2 {
        return Err(format!("--top-k needs an output shaped [B, classes]; this one is {:?}", y.shape()));
    }
    Ok(y.outer_iter()
        .map(|row| {
            let mut idx: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
            idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            idx.truncate(k);
            idx
        })
        .collect())
}

fn write_outputs(a: &Args, name: &str, names: &[String], ys: &[ArrayD<f32>]) -> ExitCode {
    use std::io::Write;
    if let Some(path) = &a.out {
        let written = if ys.len() == 1 {
            std::fs::File::create(path)
                .map_err(|e| e.to_string())
                .and_then(|f| ndarray_npy::WriteNpyExt::write_npy(&ys[0], f).map_err(|e| e.to_string()))
        } else {
            write_npz(path, names, ys)
        };
        if let Err(e) = written {
            return user_error(format!("cannot write `{}`: {e}", path.display()));
        }
        if !a.quiet {
            let shapes: Vec<_> = ys.iter().map(|y| y.shape().to_vec()).collect();
            eprintln!("wrote {name} output{} {shapes:?} to {}", if ys.len() == 1 { "" } else { "s" }, path.display());
        }
        return ExitCode::SUCCESS;
    }
    let mut stdout = std::io::stdout().lock();
    for (i, y) in ys.iter().enumerate() {
        if ys.len() > 1 {
            let _ = writeln!(stdout, "{}:", names.get(i).map_or("output", String::as_str));
        }
        match a.top_k {
            Some(k) => match top_k(y, k) {
                Ok(rows) => {
                    for (r, best) in rows.iter().enumerate() {
                        let items: Vec<String> = best.iter().map(|(c, s)| format!("{c} ({s:.6})")).collect();
                        let _ = writeln!(stdout, "example {r}: {}", items.join(", "));
                    }
                }
                Err(e) => return usage_error(e),
            },
            None => {
                let _ = writeln!(stdout, "{y:.6}");
            }
        }
    }
    ExitCode::SUCCESS
}

/// Several outputs as one `.npz` archive, by name.
fn write_npz(path: &Path, names: &[String], ys: &[ArrayD<f32>]) -> Result<(), String> {
    if path.extension().is_some_and(|e| e == "npy") {
        return Err(format!("the model has {} outputs: give a .npz path to hold them all", ys.len()));
    }
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (n, y) in names.iter().zip(ys) {
        let mut bytes = Vec::new();
        ndarray_npy::WriteNpyExt::write_npy(y, &mut bytes).map_err(|e| e.to_string())?;
        zip.start_file(format!("{n}.npy"), stored).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut zip, &bytes).map_err(|e| e.to_string())?;
    }
    zip.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// The symbolic sizes (other than the batch `B`) of a model's inputs, read off the arrays: a
/// dimension that is exactly one symbol takes the array's size.
fn bind_sizes(g: &triton_compiler::ir::Graph, inputs: &[ArrayD<f32>]) -> Result<BTreeMap<String, i64>, String> {
    let mut sizes = BTreeMap::new();
    for ((_, id), x) in g.inputs.iter().zip(inputs) {
        let ty = &g.nodes[*id].ty;
        if ty.rank() != x.ndim() {
            // The engine's shape check says what is wrong, naming the expected shape.
            continue;
        }
        for (d, &n) in ty.shape.iter().zip(x.shape()) {
            let syms = d.symbols();
            if let [s] = syms.as_slice()
                && **s != *"B"
                && *d == Dim::sym(s)
            {
                match sizes.insert(s.to_string(), n as i64) {
                    Some(old) if old != n as i64 => {
                        return Err(format!("`{s}` is {old} in one input dimension and {n} in another"));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(sizes)
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    match files::sniff(&a.file) {
        Some(Kind::Artifact) => return run_artifact(a),
        Some(Kind::Other) | None => {}
        Some(_) => {
            if let Some(why) = files::misplaced(&a.file, "a .tri model or a compiled artifact (.tcm)", &[]) {
                return user_error(why);
            }
        }
    }
    let isa = match isa_level(a) {
        Ok(i) => i,
        Err(code) => return code,
    };
    if isa.is_some() && a.engine == Some(Engine::Interp) {
        return usage_error("--isa chooses the engine's kernels; the reference interpreter (--engine interp) has none");
    }
    let mut timings = Timings::new();
    let (model, choice) = match model_and_choice(&a.file, &a.m, &mut timings, style, a.quiet) {
        Ok(mc) => mc,
        Err(code) => return code,
    };
    let names: Vec<String> = model.graph.inputs.iter().map(|(n, _)| n.clone()).collect();
    let sigs: Vec<String> = model.inputs().iter().map(|(_, t)| t.to_string()).collect();
    let inputs = match read_inputs(&a.inputs, &names, &sigs) {
        Ok(x) => x,
        Err(e) => return user_error(e),
    };
    let mut inputs = inputs;
    if a.normalize
        && let Err(e) = normalize_input(choice.path(), &mut inputs)
    {
        return user_error(e);
    }
    // A fully convolutional model is compiled for the sizes it is given.
    let sizes = match bind_sizes(&model.graph, &inputs) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    let model = match triton::specialized(model, &sizes) {
        Ok(m) => m,
        Err(e) => return user_error(e),
    };
    let precision = a.m.precision();
    // The JIT compiles through the artifact cache (keyed by sources, weights, options and the
    // bound sizes): running the same model again, or at the same size, skips compiling.
    let jit = match a.engine.unwrap_or(Engine::Jit) {
        Engine::Interp => None,
        Engine::Jit => {
            let opts = triton::Options {
                opt: a.m.level(),
                precision,
                weights: choice.path().map(Path::to_path_buf),
                seed: a.m.seed(),
                threads: a.m.threads(),
                int8_activations: !a.m.f32_activations,
                model: a.m.model.clone(),
                shapes: sizes,
                verify_each: false,
            };
            let cache = triton::Cache::default_dir().map_or_else(triton::Cache::memory_only, triton::Cache::at);
            let built = triton::build_artifact(&a.file, &opts, &cache);
            for w in cache.take_warnings() {
                eprintln!("warning: {w}");
            }
            match built {
                Ok(b) => match Model::from_artifact(b.bytes.as_ref(), a.m.threads()) {
                    Ok(mut m) => {
                        if let Some(i) = isa {
                            m.set_isa(i);
                        }
                        Some(m)
                    }
                    Err(e) => return user_error(e),
                },
                Err(triton::CompileError::Codegen(e @ CodegenError::Unsupported(_))) => {
                    if !a.quiet {
                        eprintln!("note: {e}; running on the reference interpreter");
                    }
                    None
                }
                Err(e) => return user_error(e),
            }
        }
    };
    if let (Some(n), None) = (a.timing, &jit) {
        eprintln!("note: --timing times the engine's steps; the reference interpreter has none ({n} calls skipped)");
    }
    let result = match &jit {
        Some(m) => m.run(&inputs.iter().map(|x| x.view()).collect::<Vec<_>>()).map_err(|e| e.to_string()),
        None => {
            let weights = match load_weights(choice.path(), model.params(), a.m.seed()) {
                Ok(w) => w,
                Err(code) => return code,
            };
            let settings = a.m.settings(false, BTreeMap::new());
            let optimized = match optimize(&model, Some(&weights), &settings, &mut timings) {
                Ok(o) => o,
                Err(code) => return code,
            };
            let graph = &optimized.graph;
            interp::prepare(graph, &weights, precision)
                .and_then(|p| interp::run(graph, &p, &inputs, precision))
                .map_err(|e| e.to_string())
        }
    };
    let outputs = match result {
        Ok(o) => o,
        Err(e) => return user_error(e),
    };
    let out_names: Vec<String> = (0..outputs.len()).map(|i| format!("output_{i}")).collect();
    let code = write_outputs(a, &model.name, &out_names, &outputs);
    if let (Some(n), Some(m)) = (a.timing, &jit) {
        print_step_timing(m, &inputs, n);
    }
    code
}

/// `--normalize`: the normalization recorded in the weights file applied to the one input,
/// channel by channel (channels first; a flat input is split into equal channel planes).
fn normalize_input(weights: Option<&Path>, inputs: &mut [ArrayD<f32>]) -> Result<(), String> {
    let path =
        weights.ok_or("--normalize: there is no weights file to read the normalization from (give --weights)")?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let norm = triton::data::Normalization::from_metadata(&meta)
        .map_err(|e| format!("`{}`: {e}", path.display()))?
        .ok_or_else(|| {
            format!("--normalize: `{}` records no normalization (it was not written by `triton train`)", path.display())
        })?;
    let [x] = inputs else {
        return Err(format!("--normalize applies to a model with one input; this one has {}", inputs.len()));
    };
    let batch = x.shape().first().copied().unwrap_or(1).max(1);
    let per = x.len() / batch;
    let c = norm.channels();
    if per % c != 0 {
        return Err(format!(
            "--normalize: the input has {per} values per example, not a multiple of the {c} channels normalized"
        ));
    }
    let plane = per / c;
    for (i, v) in x.iter_mut().enumerate() {
        *v = norm.apply(*v, (i % per) / plane);
    }
    Ok(())
}
