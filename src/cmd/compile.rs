//! `triton compile`: a `.tri` model to a `.tcm` artifact (through the cache), or the optimized
//! IR, the kernel plan or a summary of the optimizer's work; `--timing` reports every phase.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use triton::{Build, Cache};
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp::Precision;
use triton_compiler::passes::Timings;
use triton_runtime::artifact::MAGIC;

use super::common::{load_model, load_weights, optimize, usage_error, user_error};
use super::opts::ModelOpts;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// A compiled model (`.tcm`), for `triton run` and `triton_runtime::Model::load`.
    Artifact,
    /// What the optimizer did: run-time nodes per level, the arena plan.
    Summary,
    /// The optimized graph IR in its text form (docs/ir.md).
    Ir,
    /// The kernel plan: layout and specialization choices per matmul and convolution, then the
    /// engine kernel that runs each product on this CPU.
    Plan,
}

/// How `--timing` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingFormat {
    Table,
    Json,
}

pub struct Args<'a> {
    pub file: &'a Path,
    pub m: &'a ModelOpts,
    pub emit: Emit,
    pub output: Option<&'a Path>,
    /// `--shape NAME=VALUE` items.
    pub shapes: &'a [String],
    pub timing: Option<TimingFormat>,
    pub verify_each: bool,
    pub quiet: bool,
    pub cache: Cache,
}

impl Args<'_> {
    fn opt(&self) -> u8 {
        self.m.opt()
    }

    fn precision(&self) -> Precision {
        self.m.precision()
    }
}

pub fn run(a: &Args<'_>, style: Style) -> ExitCode {
    a.m.init_thread_pool();
    if let Some(why) = triton::files::misplaced(a.file, "a .tri model", &[]) {
        return user_error(why);
    }
    let shapes = match parse_shapes(a.shapes) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let choice = triton::weights::Choice::resolve(a.file, a.m.weights.as_deref(), a.m.seed());
    if let Err(e) = super::opts::seed_applies(a.m, &choice) {
        return usage_error(e);
    }
    if !a.quiet {
        eprintln!("{}", choice.line());
    }
    match a.emit {
        Emit::Artifact => artifact(a, &choice, shapes),
        _ => inspect(a, &choice, &shapes, style),
    }
}

/// `--shape` items, `NAME=VALUE` each.
pub fn parse_shapes(items: &[String]) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for item in items {
        let parsed = item.split_once('=').and_then(|(n, v)| {
            let n = n.trim();
            let ok = n.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            Some((n.to_string(), v.trim().parse::<i64>().ok().filter(|v| *v >= 1)?)).filter(|_| ok)
        });
        let Some((name, value)) = parsed else {
            return Err(format!(
                "--shape `{item}`: expected NAME=SIZE with NAME a symbolic dimension (uppercase first letter) and SIZE >= 1, e.g. --shape H=64,W=64"
            ));
        };
        if name == "B" {
            return Err("--shape B: the batch size `B` stays free (the runtime takes any batch)".into());
        }
        if out.insert(name.clone(), value).is_some_and(|old| old != value) {
            return Err(format!("--shape gives `{name}` twice, with different sizes"));
        }
    }
    Ok(out)
}

/// The default output: `<stem>.tcm` in the current folder.
fn default_output(file: &Path) -> PathBuf {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    PathBuf::from(format!("{stem}.tcm"))
}

/// Writing over `out` is fine when it is missing, empty or an earlier artifact; anything else
/// (a source file given as `-o` by mistake) is kept.
fn check_overwrite(out: &Path) -> Result<(), String> {
    let mut head = Vec::with_capacity(MAGIC.len());
    let read = std::fs::File::open(out).and_then(|f| f.take(MAGIC.len() as u64).read_to_end(&mut head));
    match read {
        Ok(n) if n > 0 && head != MAGIC => {
            Err(format!("refusing to overwrite `{}`: it exists and is not a Triton artifact", out.display()))
        }
        _ if out.is_dir() => Err(format!("`{}` is a folder; give the artifact's file name", out.display())),
        _ => Ok(()),
    }
}

fn artifact(a: &Args<'_>, choice: &triton::weights::Choice, shapes: BTreeMap<String, i64>) -> ExitCode {
    let start = Instant::now();
    let opts = triton::Options {
        opt: a.m.level(),
        precision: a.precision(),
        weights: choice.path().map(Path::to_path_buf),
        seed: a.m.seed(),
        threads: 1,
        int8_activations: !a.m.f32_activations,
        model: a.m.model.clone(),
        shapes,
        verify_each: a.verify_each,
    };
    let out = a.output.map_or_else(|| default_output(a.file), Path::to_path_buf);
    if let Err(e) = check_overwrite(&out) {
        return user_error(e);
    }
    let built = triton::build_artifact(a.file, &opts, &a.cache);
    for w in a.cache.take_warnings() {
        eprintln!("warning: {w}");
    }
    let mut build = match built {
        Ok(b) => b,
        Err(triton::CompileError::Source(diags)) => {
            eprint!("{diags}");
            eprintln!("error: {} has errors", a.file.display());
            return ExitCode::from(1);
        }
        Err(e @ triton::CompileError::Codegen(_)) => {
            let free = free_sizes(a.file, a.m.model.as_deref());
            if free.is_empty() {
                return user_error(e);
            }
            return user_error(format!(
                "{e}\nhint: the model's sizes {} are symbolic; compile for given sizes with --shape {}",
                free.join(", "),
                free.iter().map(|s| format!("{s}=64")).collect::<Vec<_>>().join(",")
            ));
        }
        Err(e) => return user_error(e),
    };
    let write = Instant::now();
    // An unchanged model compiled again to the same file: the file already holds these bytes.
    if !triton::cache::same_contents(&out, &build.bytes) {
        if let Err(e) = triton::cache::write_atomic(&out, &build.bytes) {
            return user_error(format!("cannot write `{}`: {e}", out.display()));
        }
        build.timings.add("artifact write", write.elapsed());
    } else {
        build.timings.add("artifact write (unchanged)", write.elapsed());
    }
    let total = start.elapsed();
    let s = &build.summary;
    let how = match build.hit {
        Some(triton::cache::Level::Memory) => "cache hit (memory)",
        Some(triton::cache::Level::Disk) => "cache hit",
        None if a.cache.enabled() => "compiled, cached",
        None => "compiled, cache off",
    };
    let line = format!(
        "{}: model {} -{} -> {}: {} bytes, {} ({} bytes); {}; {} kernels, {} bytes of code; {:.1} ms ({how})",
        a.file.display(),
        s.model,
        a.m.level().name(),
        out.display(),
        s.artifact_bytes,
        size_ratio(s.fp32_bytes, s.artifact_bytes as u64),
        s.fp32_bytes,
        if s.trit_count == 0 {
            "no ternary weights".to_string()
        } else {
            format!("{:.2} bits per ternary weight", s.trit_bytes as f64 * 8.0 / s.trit_count as f64)
        },
        s.kernels,
        s.code_bytes,
        total.as_secs_f64() * 1e3,
    );
    // `--timing=json`: stdout carries the JSON alone.
    match a.timing {
        Some(TimingFormat::Json) => {
            if !a.quiet {
                eprintln!("{line}");
            }
            println!("{}", timing_json(&build, total));
        }
        Some(TimingFormat::Table) => {
            println!("{line}");
            eprint!("{}", timing_table(&build, total));
        }
        None => println!("{line}"),
    }
    ExitCode::SUCCESS
}

/// The symbolic sizes of a model's inputs other than the batch `B`.
fn free_sizes(file: &Path, model: Option<&str>) -> Vec<String> {
    let checked = triton::driver::check(file, &mut Timings::new());
    triton::driver::pick(file, checked.models, model)
        .map(|m| triton_compiler::ir::specialize::input_symbols(&m.graph).into_iter().filter(|s| s != "B").collect())
        .unwrap_or_default()
}

/// How the artifact compares with the model's FP32 weights: `17.1x smaller than its FP32
/// weights`, `41.7x larger than ...`, `about the size of ...`.
pub fn size_ratio(fp32: u64, artifact: u64) -> String {
    if fp32 == 0 {
        return "the model has no weights".into();
    }
    let r = fp32 as f64 / artifact.max(1) as f64;
    if r >= 1.05 {
        format!("{r:.1}x smaller than its FP32 weights")
    } else if r <= 1.0 / 1.05 {
        format!("{:.1}x larger than its FP32 weights", 1.0 / r)
    } else {
        "about the size of its FP32 weights".into()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cache_state(b: &Build) -> &'static str {
    match b.hit {
        Some(triton::cache::Level::Memory) => "hit (memory)",
        Some(triton::cache::Level::Disk) => "hit (disk)",
        None => "miss",
    }
}

fn timing_table(b: &Build, total: Duration) -> String {
    let mut out = format!("{:<44} {:>10}\n", "phase", "ms");
    for (name, d) in &b.timings.entries {
        out.push_str(&format!("{name:<44} {:>10.3}\n", ms(*d)));
        if let (true, Some(r)) = (name == "codegen", &b.codegen) {
            out.push_str(&format!("{:<44} {:>10.3}\n", "  static values (quantize, fold)", ms(r.statics)));
            out.push_str(&format!("{:<44} {:>10.3}\n", "  weight packing", ms(r.packing)));
            for (kind, k) in &r.kernels {
                let label = format!("  kernels {kind}: {} ({} cached), {} B", k.count, k.cached, k.bytes);
                out.push_str(&format!("{label:<44} {:>10.3}\n", ms(k.time)));
            }
        }
    }
    out.push_str(&format!("{:<44} {:>10.3}\n", "total", ms(total)));
    let lines = b.summary.lines.max(1);
    out.push_str(&format!(
        "{} source lines, {:.4} ms/line; cache {}\n",
        b.summary.lines,
        ms(total) / lines as f64,
        cache_state(b)
    ));
    out
}

fn timing_json(b: &Build, total: Duration) -> String {
    let phases: Vec<serde_json::Value> =
        b.timings.entries.iter().map(|(n, d)| serde_json::json!({ "name": n, "ms": ms(*d) })).collect();
    let codegen = b.codegen.as_ref().map(|r| {
        let kernels: serde_json::Map<String, serde_json::Value> = r
            .kernels
            .iter()
            .map(|(kind, k)| {
                let v = serde_json::json!({ "count": k.count, "cached": k.cached, "bytes": k.bytes, "ms": ms(k.time) });
                (kind.to_string(), v)
            })
            .collect();
        serde_json::json!({ "statics_ms": ms(r.statics), "packing_ms": ms(r.packing), "kernels": kernels })
    });
    let s = &b.summary;
    serde_json::json!({
        "model": s.model,
        "phases": phases,
        "codegen": codegen,
        "total_ms": ms(total),
        "lines": s.lines,
        "ms_per_line": ms(total) / s.lines.max(1) as f64,
        "cache": cache_state(b),
        "key": b.key,
        "artifact": {
            "bytes": s.artifact_bytes,
            "fp32_weight_bytes": s.fp32_bytes,
            "ratio": s.ratio(),
            "trit_bytes": s.trit_bytes,
            "trits": s.trit_count,
            "tensor_bytes": s.tensor_bytes,
            "code_bytes": s.code_bytes,
            "kernels": s.kernels,
        },
    })
    .to_string()
}

/// The engine's side of `--emit plan`: the model compiled (seeded weights when none are
/// given; the kernels do not depend on the values) and, per product step, the kernel and
/// instruction-set level that run it on this CPU; the layout conversions too.
fn print_engine_plan(
    a: &Args<'_>,
    model: &triton_compiler::CheckedModel,
    weights: Option<&triton_compiler::interp::Weights>,
) {
    let seeded;
    let w = match weights {
        Some(w) => w,
        None => {
            seeded = triton_compiler::interp::Weights::init(model.params(), a.m.seed());
            &seeded
        }
    };
    let opts = triton::Options {
        opt: a.m.level(),
        precision: a.precision(),
        threads: 1,
        int8_activations: !a.m.f32_activations,
        ..triton::Options::default()
    };
    let compiled = match triton::compile_model(model, w, &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("note: no engine plan: {e}");
            return;
        }
    };
    let m = compiled.model();
    let parts = m.parts();
    for (i, (step, kernel)) in parts.steps.iter().zip(m.step_kernels()).enumerate() {
        use triton_runtime::engine::plan::Step;
        match step {
            Step::Conv { weight, .. } | Step::Gemm { weight, .. } => {
                println!("step {i:>3} {:<8} {:<24} runs {kernel}", step.name(), parts.weights[*weight].name)
            }
            Step::Relayout { to, .. } => println!("step {i:>3} relayout to {}", to.name()),
            _ => {}
        }
    }
}

/// `--emit summary|ir|plan`: the front end and the optimizer, no code.
fn inspect(a: &Args<'_>, choice: &triton::weights::Choice, shapes: &BTreeMap<String, i64>, style: Style) -> ExitCode {
    let start = Instant::now();
    let mut t = Timings::new();
    let settings = a.m.settings(a.verify_each, shapes.clone());
    let model = match load_model(a.file, &settings, &mut t, style) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // The engine plan compiles the model with its weights: they must fit first.
    if let Err(e) = triton::limits::check_weights(model.params()) {
        return user_error(e);
    }
    // Without a weights file the weights are not known at compile time: no zero-skip analysis.
    let weights = match choice.path() {
        Some(p) => match load_weights(Some(p), model.params(), 0) {
            Ok(w) => Some(w),
            Err(code) => return code,
        },
        None => None,
    };
    let optimized = match optimize(&model, weights.as_ref(), &settings, &mut t) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match a.emit {
        Emit::Ir => print!("{}", optimized.graph),
        Emit::Plan => {
            match &optimized.kernels {
                Some(plan) => print!("{plan}"),
                None => eprintln!("note: kernels are planned from -O2 on; -O{} runs every op as written", a.opt()),
            }
            if optimized.kernels.is_some() {
                print_engine_plan(a, &model, weights.as_ref());
            }
        }
        Emit::Summary | Emit::Artifact => {
            let g = &optimized.graph;
            let mut line = format!(
                "{}: model {}: {} run-time nodes at -O0, {} at -O{}",
                a.file.display(),
                model.name,
                model.graph.runtime_nodes(),
                g.runtime_nodes(),
                a.opt()
            );
            let folded = g.static_compute_nodes();
            if folded > 0 {
                line.push_str(&format!(" (+{folded} on parameters only, evaluated once)"));
            }
            match &optimized.plan {
                Some(Ok(plan)) => line.push_str(&format!("; {plan}")),
                Some(Err(why)) => line.push_str(&format!("; arena not planned ahead: {why}")),
                None => {}
            }
            println!("{line}");
        }
    }
    if a.timing.is_some() {
        eprintln!("{:<28} {:>10}", "phase", "ms");
        for (name, d) in &t.entries {
            eprintln!("{name:<28} {:>10.3}", ms(*d));
        }
        eprintln!("{:<28} {:>10.3}", "total", ms(start.elapsed()));
    }
    ExitCode::SUCCESS
}
