//! The `triton` command.
//!
//! Exit codes: 0 success, 1 user errors (diagnostics), 2 usage errors. A panic (101) is a bug.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod cmd;

use clap::{Parser, Subcommand};
use cmd::compile::Emit;
use cmd::opts::PrecisionArg;
use triton::train;
use triton_compiler::diagnostics::render::Style;
use triton_compiler::passes::OptLevel;

#[derive(Parser, Debug)]
#[command(name = "triton", version, about = "Compiler for ternary neural networks", propagate_version = true)]
struct Cli {
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and check .tri files; print a summary line per model.
    Check {
        /// The .tri files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only diagnostics, no summaries.
        #[arg(long, short)]
        quiet: bool,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Compile a model to a `.tcm` artifact (through the compilation cache), or print its
    /// optimized IR, kernel plan or optimizer summary.
    Compile {
        /// The .tri file defining the model.
        file: PathBuf,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        /// The artifact's path (default: `<file stem>.tcm` in the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// What to produce: the artifact; a summary of the optimizer's work; the optimized IR
        /// in its text form (one `%N = op(args) : type` line per node, as docs/ir.md describes);
        /// or the kernel plan (which kernel runs each product on this CPU, and why). The last
        /// three print and write nothing.
        #[arg(long, value_enum, default_value_t = Emit::Artifact)]
        emit: Emit,
        /// Sizes for the model's symbolic dimensions other than the batch `B`, as NAME=VALUE
        /// (comma-separated or repeated), e.g. `--shape H=64,W=64` for a fully convolutional
        /// model.
        #[arg(long = "shape", value_name = "NAME=VALUE", value_delimiter = ',')]
        shapes: Vec<String>,
        /// Print the time of every phase (a table on stderr, or `--timing=json`: JSON alone on
        /// stdout).
        #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "table")]
        timing: Option<cmd::compile::TimingFormat>,
        /// Verify the IR after every pass (always on in debug builds).
        #[arg(long)]
        verify_each: bool,
        /// Cache folder (default: $TRITON_CACHE_DIR, else the platform's cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Neither read nor write the compilation cache.
        #[arg(long, conflicts_with = "cache_dir")]
        no_cache: bool,
        /// Print nothing on stderr but errors and warnings (no weights line).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Ternarize a model's trained FP32 weights per output channel, recalibrate its batch
    /// norms, optionally fine-tune with QAT, and print the accuracy before and after.
    #[command(mut_arg("weights", |a| a.help("The FP32 weights to ternarize (.safetensors); required")))]
    #[command(mut_arg("precision", |a| a.hide(true)))]
    #[command(mut_arg("opt", |a| a.hide(true)))]
    #[command(mut_arg("f32_activations", |a| a.hide(true)))]
    Quantize {
        /// The .tri file defining the model (its ternary layers are the ones ternarized).
        file: PathBuf,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        /// The dataset to calibrate, fine-tune and measure on.
        #[command(flatten)]
        d: cmd::opts::DataOpts,
        /// The ternarization rule [default: the one each layer declares].
        #[arg(long, value_enum)]
        quant: Option<cmd::quantize::RuleArg>,
        /// Fine-tuning (as `triton train`; --epochs 0, the default, only calibrates; the
        /// learning rate defaults to 5e-4).
        #[command(flatten)]
        flags: train::defaults::Flags,
        /// Where to write the ternary weights [default: `<stem>.safetensors` if absent].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Import an ONNX model: writes a readable `.tri` model (std layers where the pattern is
    /// recognised) and its FP32 weights as safetensors, named as the model's parameters.
    Import {
        /// The .onnx file (opset 11 or later; external data beside it).
        file: PathBuf,
        /// The model to write [default: `<onnx stem>.tri` beside the ONNX file].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Its weights [default: `<tri stem>.safetensors` beside the `.tri`, where every
        /// command looks for them].
        #[arg(long)]
        weights_out: Option<PathBuf>,
        /// Which convolutions and linear layers become ternary.
        #[arg(long, value_enum, default_value_t = cmd::import::TernaryArg::Auto)]
        ternary: cmd::import::TernaryArg,
        /// The model's name [default: from the ONNX graph's name or the file's].
        #[arg(long)]
        name: Option<String>,
        /// Print nothing on stderr but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Export a model to ONNX (the checked graph: FP32, or ternary with its weights
    /// dequantized), for ONNX Runtime or any other runtime.
    #[command(mut_arg("precision", |a| a.help("fp32 writes the latent weights; ternary each quantized weight as codes * alpha [default: ternary]")))]
    Export {
        /// The .tri file defining the model.
        file: PathBuf,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        /// The ONNX file to write [default: `<stem>.onnx` beside the model].
        #[arg(long)]
        onnx: Option<PathBuf>,
        /// Print nothing on stderr but errors.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show or empty the compilation cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// Cache folder (default: $TRITON_CACHE_DIR, else the platform's cache folder).
        #[arg(long, global = true)]
        cache_dir: Option<PathBuf>,
    },
    /// Run a model on a NumPy input: a `.tcm` artifact, or a `.tri` model JIT-compiled (or on
    /// the reference interpreter).
    Run {
        /// The .tcm artifact, or the .tri file defining the model.
        file: PathBuf,
        /// The model's inputs: one `--input` per model input, in order or as NAME=FILE, each a
        /// NumPy `.npy` array (float32 or float64, shaped as the input: MNIST models take pixels
        /// scaled to [0, 1]); or one `.npz` archive holding the inputs by name.
        #[arg(long = "input", required = true, value_name = "[NAME=]FILE")]
        inputs: Vec<String>,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        /// What runs a .tri model: JIT kernels, or the reference interpreter [default: jit].
        #[arg(long, value_enum)]
        engine: Option<cmd::run::Engine>,
        /// Write the output here (.npy; .npz for a model with several outputs) instead of
        /// printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print, per example, the K highest-scoring classes (index and score) instead of the
        /// whole output (for classifiers: outputs shaped [B, classes]).
        #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
        top_k: Option<u32>,
        /// Also run the input --repeat times and print, per engine step, which kernel ran it and
        /// its median time (on stderr).
        #[arg(long)]
        timing: bool,
        /// Calls timed by --timing.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), requires = "timing")]
        repeat: u32,
        /// Run the runtime's kernels at this instruction-set level instead of the best this CPU
        /// has, to compare the paths (a level the CPU lacks is refused).
        #[arg(long, value_enum, value_name = "LEVEL")]
        isa: Option<cmd::run::IsaArg>,
        /// Print nothing on stderr but errors and warnings (no weights line, no notes).
        #[arg(long, short)]
        quiet: bool,
        /// Normalize the input as the model was trained (`(x / 255 - mean) / std` per channel
        /// for byte data, as the weights file's metadata records): give raw pixel values.
        #[arg(long)]
        normalize: bool,
    },
    /// Train a model on a dataset (IDX, CIFAR, image folders, .npy; quantization-aware for
    /// ternary layers) and write its weights.
    #[command(mut_arg("weights", |a| a.help("Start from these weights (.safetensors) [default: seeded initialisation]")))]
    #[command(mut_arg("precision", |a| a.help("ternary trains through the quantization rules (QAT); fp32 trains the plain model [default: ternary]")))]
    #[command(mut_arg("seed", |a| a.help("Seed of the initialisation (without --weights) and of the order of the images [default: 0]")))]
    #[command(mut_arg("opt", |a| a.hide(true)))]
    #[command(mut_arg("f32_activations", |a| a.hide(true)))]
    Train {
        /// The .tri file defining the model.
        file: PathBuf,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        #[command(flatten)]
        d: cmd::opts::DataOpts,
        /// Where to write the weights (default: `<file stem>.safetensors`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        flags: train::defaults::Flags,
        /// The earlier name of --weights.
        #[arg(long, hide = true, conflicts_with = "weights")]
        init: Option<PathBuf>,
        /// Write a checkpoint here after every epoch (weights, optimizer state, position), for
        /// --resume.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Continue the run a --checkpoint file holds, bit for bit (same settings; --epochs
        /// may grow).
        #[arg(long, conflicts_with_all = ["weights", "init"])]
        resume: Option<PathBuf>,
        /// Write per-epoch metrics here (JSON).
        #[arg(long)]
        log_json: Option<PathBuf>,
    },
    /// Measure a model as FP32 and as ternary side by side: accuracy, latency, size, memory and
    /// compile speed; tables on stdout, JSON, Markdown and SVG plots on request.
    #[command(mut_arg("weights", |a| a.help("Weights of the ternary side [default: `<stem>.safetensors` beside the model, else seeded initialisation, and then accuracy is not applicable]")))]
    #[command(mut_arg("threads", |a| a.help("Threads of the all-threads runs (0 or absent: every core); one thread is always measured")))]
    #[command(mut_arg("opt", |a| a.help("Optimization level of the main comparison, 0-3 (every level is in the compile table) [default: 3]")))]
    #[command(mut_arg("precision", |a| a.hide(true)))]
    Bench {
        /// The .tri file defining the model.
        file: PathBuf,
        #[command(flatten)]
        m: cmd::opts::ModelOpts,
        /// Weights of the FP32 side (default: `<stem>.fp32.safetensors` beside the model, else
        /// the ternary side's latent weights).
        #[arg(long)]
        fp32_weights: Option<PathBuf>,
        /// The dataset whose test split measures accuracy, in any format `triton train` reads
        /// (default: MNIST from $TRITON_DATA, ./data, ../shared/data, else the shipped sample).
        #[arg(long)]
        data: Option<String>,
        /// Batch sizes of the latency table.
        #[arg(long, value_delimiter = ',', default_value = "1,8,16,32,64,128", value_parser = parse_batch)]
        batch_sizes: Vec<usize>,
        /// Untimed calls before each latency case, lasting at least 50 ms (at most a quarter of
        /// its time).
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// Timed calls per latency case (fewer when --max-seconds runs out first, never under 3).
        #[arg(long, default_value_t = 1000)]
        iters: usize,
        /// Time budget of one latency case, in seconds.
        #[arg(long, default_value_t = 1.0, value_parser = parse_non_negative)]
        max_seconds: f64,
        /// Skip the scaling tables (MLP widths and the zoo beside the model).
        #[arg(long)]
        no_scaling: bool,
        /// Sizes for the model's symbolic dimensions other than the batch, as NAME=VALUE
        /// (comma-separated or repeated), e.g. `--shape H=64,W=64`.
        #[arg(long = "shape", value_name = "NAME=VALUE", value_delimiter = ',')]
        shapes: Vec<String>,
        /// A target to judge PASS/FAIL, NAME=VALUE (accuracy-drop, compression, speedup,
        /// latency-ms, compile-ms, memory-mib); repeatable, overrides the defaults.
        #[arg(long = "target", value_name = "NAME=VALUE")]
        targets: Vec<triton::bench::TargetArg>,
        /// Exit with code 3 when a target fails.
        #[arg(long)]
        fail_on_target: bool,
        /// Write every figure and the machine description as JSON (`-`: stdout).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the report as Markdown.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Draw SVG charts into this folder (latency against batch size, size, accuracy).
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Compare with a report saved by `--json`.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Relative change (percent) beyond which a time, size or memory figure regresses.
        #[arg(long, default_value_t = 10.0, value_parser = parse_non_negative)]
        threshold: f64,
        /// Accuracy fall (percentage points) beyond which accuracy regresses.
        #[arg(long, default_value_t = 0.1, value_parser = parse_non_negative)]
        accuracy_threshold: f64,
        /// Exit with code 3 when a figure regressed against --baseline.
        #[arg(long, requires = "baseline")]
        fail_on_regression: bool,
    },
    /// Internal: a memory measurement of `triton bench` in a process of its own; prints the
    /// peak as JSON.
    #[command(hide = true, name = "bench-probe")]
    BenchProbe {
        #[command(subcommand)]
        what: ProbeCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ProbeCmd {
    /// Load an artifact and run it.
    Run {
        artifact: PathBuf,
        #[arg(long)]
        batch: usize,
        #[arg(long)]
        threads: usize,
        #[arg(long, default_value_t = 3)]
        calls: usize,
    },
    /// Compile a model without the cache.
    Compile {
        file: PathBuf,
        #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3), default_value_t = 2)]
        opt: u8,
        #[arg(long, value_enum, default_value_t = PrecisionArg::Ternary)]
        precision: PrecisionArg,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        model: Option<String>,
        #[arg(long = "shape", value_name = "NAME=VALUE")]
        shapes: Vec<String>,
    },
}

/// A batch size: an integer >= 1.
fn parse_batch(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(b) if b >= 1 => Ok(b),
        _ => Err(format!("expected a batch size (an integer >= 1), got `{s}`")),
    }
}

/// A finite number >= 0.
fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number >= 0, got `{s}`")),
    }
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum CacheAction {
    /// Entries and bytes per kind.
    Stats,
    /// Delete every entry.
    Clean,
}

/// A closed pipe ends the program quietly, as in any Unix tool (`triton compile --emit ir |
/// head`): Rust ignores SIGPIPE and would panic on the failed write instead.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    // Deep-but-legal programs recurse in the checker; give it room beyond the main thread's stack.
    let worker = std::thread::Builder::new().stack_size(64 * 1024 * 1024).spawn(move || run(cli));
    match worker.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => ExitCode::from(101),
    }
}

fn style(color: Color) -> Style {
    match color {
        Color::Always => Style::Color,
        Color::Never => Style::Plain,
        Color::Auto => {
            if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                Style::Color
            } else {
                Style::Plain
            }
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    let style = style(cli.color);
    match cli.command {
        Command::Check { files, quiet, deny_warnings } => cmd::check::run(&files, quiet, deny_warnings, style),
        Command::Compile { file, m, output, emit, shapes, timing, verify_each, cache_dir, no_cache, quiet } => {
            let cache = match (no_cache, cache_dir.or_else(triton::Cache::default_dir)) {
                (true, _) => triton::Cache::disabled(),
                (false, Some(dir)) => triton::Cache::at(dir),
                (false, None) => triton::Cache::memory_only(),
            };
            let args = cmd::compile::Args {
                file: &file,
                m: &m,
                emit,
                output: output.as_deref(),
                shapes: &shapes,
                timing,
                verify_each,
                quiet,
                cache,
            };
            cmd::compile::run(&args, style)
        }
        Command::Train { file, m, d, output, flags, init, checkpoint, resume, log_json } => {
            if let Err(e) = m.refuse(&["-O", "--f32-activations"], "training runs the unoptimized graph with f32 activations (the level and int8 activations are chosen when compiling)") {
                return cmd::common::usage_error(e);
            }
            let init = m.weights.clone().or(init);
            cmd::train::run(
                &cmd::train::Args {
                    file,
                    data: d.data,
                    format: d.format,
                    output,
                    flags,
                    init,
                    m,
                    checkpoint,
                    resume,
                    log_json,
                },
                style,
            )
        }
        Command::Bench {
            file,
            m,
            fp32_weights,
            data,
            batch_sizes,
            warmup,
            iters,
            max_seconds,
            no_scaling,
            shapes,
            targets,
            fail_on_target,
            json,
            report,
            plots,
            baseline,
            threshold,
            accuracy_threshold,
            fail_on_regression,
        } => {
            if let Err(e) = m.refuse(&["--precision"], "`triton bench` measures both precisions side by side") {
                return cmd::common::usage_error(e);
            }
            let config = triton::bench::Config {
                file,
                model: m.model.clone(),
                weights: m.weights.clone(),
                fp32_weights,
                data,
                batch_sizes,
                threads: m.threads(),
                budget: triton::bench::Budget { warmup, iters, max: triton::bench::seconds(max_seconds) },
                opt: m.level(),
                int8_activations: !m.f32_activations,
                seed: m.seed(),
                scaling: !no_scaling,
                targets,
                probe: std::env::current_exe().ok().map(|exe| triton::bench::memory::Probe { exe }),
                shapes: match cmd::compile::parse_shapes(&shapes) {
                    Ok(s) => s,
                    Err(e) => return cmd::common::usage_error(e),
                },
            };
            cmd::bench::run(&cmd::bench::Args {
                config,
                json,
                report,
                plots,
                baseline,
                threshold_pct: threshold,
                accuracy_pp: accuracy_threshold,
                fail_on_regression,
                fail_on_target,
            })
        }
        Command::BenchProbe { what } => {
            let json = match what {
                ProbeCmd::Run { artifact, batch, threads, calls } => {
                    triton::bench::memory::probe_run(&artifact, batch, threads, calls)
                        .map(|r| serde_json::to_string(&r))
                }
                ProbeCmd::Compile { file, opt, precision, weights, seed, model, shapes } => {
                    let shapes = match cmd::compile::parse_shapes(&shapes) {
                        Ok(s) => s,
                        Err(e) => return cmd::common::usage_error(e),
                    };
                    let opts = triton::Options {
                        shapes,
                        opt: OptLevel::from_number(opt).unwrap_or(OptLevel::O2),
                        precision: precision.into(),
                        weights,
                        seed,
                        model,
                        ..Default::default()
                    };
                    triton::bench::memory::probe_compile(&file, &opts).map(|p| serde_json::to_string(&p))
                }
            };
            match json.and_then(|j| j.map_err(|e| e.to_string())) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => cmd::common::user_error(e),
            }
        }
        Command::Cache { action, cache_dir } => cmd::cache::run(action, cache_dir),
        Command::Export { file, m, onnx, quiet } => {
            cmd::export::run(&cmd::export::Args { file, m, onnx, quiet }, style)
        }
        Command::Quantize { file, m, d, quant, flags, output } => {
            if let Err(e) = m.refuse(
                &["-O", "--f32-activations", "--precision"],
                "quantize writes weights; the level, precision and activations are chosen when compiling",
            ) {
                return cmd::common::usage_error(e);
            }
            cmd::quantize::run(
                &cmd::quantize::Args { file, m, data: d.data, format: d.format, quant, flags, output },
                style,
            )
        }
        Command::Import { file, output, weights_out, ternary, name, quiet } => {
            cmd::import::run(&cmd::import::Args { file, output, weights_out, ternary, name, quiet })
        }
        Command::Run { file, inputs, m, engine, out, top_k, timing, repeat, isa, quiet, normalize } => cmd::run::run(
            &cmd::run::Args {
                isa: isa.map(Into::into),
                normalize,
                engine,
                file,
                inputs,
                m,
                out,
                top_k: top_k.map(|k| k as usize),
                timing: timing.then_some(repeat as usize),
                quiet,
            },
            style,
        ),
    }
}
