//! The `triton` command.
//!
//! Exit codes: 0 success, 1 user errors (diagnostics), 2 usage errors. A panic (101) is a bug.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod cmd;

use clap::{Parser, Subcommand};
use cmd::compile::Emit;
use triton::train;
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp::Precision;

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
        /// Optimization level.
        #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3), default_value_t = 2)]
        opt: u8,
        /// The artifact's path (default: `<file stem>.tcm` in the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// What to produce: the artifact, a summary of the optimizer, the optimized IR, or the
        /// kernel plan (the last three print and write nothing).
        #[arg(long, value_enum, default_value_t = Emit::Artifact)]
        emit: Emit,
        /// Weights (.safetensors) to compile in; default: seeded initialisation.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Seed of the initialisation used without --weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// fp32 compiles the latent full-precision weights; ternary quantizes them.
        #[arg(long, value_enum, default_value_t = PrecisionArg::Ternary)]
        precision: PrecisionArg,
        /// At -O3, keep the activations of ternary layers in f32 instead of int8.
        #[arg(long)]
        f32_activations: bool,
        /// Print the time of every phase (a table on stderr, or `--timing=json` on stdout).
        #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "table")]
        timing: Option<cmd::compile::TimingFormat>,
        /// Verify the IR after every pass (always on in debug builds).
        #[arg(long)]
        verify_each: bool,
        /// Which model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
        /// Cache folder (default: $TRITON_CACHE_DIR, else the platform's cache folder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Neither read nor write the compilation cache.
        #[arg(long, conflicts_with = "cache_dir")]
        no_cache: bool,
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
        /// Input tensor (.npy, float32 or float64), shaped as the model's input.
        #[arg(long)]
        input: PathBuf,
        /// Weights (.safetensors) named like the model's parameters; default: seeded initialisation.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// fp32 runs the latent full-precision weights; ternary quantizes them.
        #[arg(long, value_enum, default_value_t = PrecisionArg::Ternary)]
        precision: PrecisionArg,
        /// Optimization level.
        #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3), default_value_t = 2)]
        opt: u8,
        /// At -O3, keep the activations of ternary layers in f32 instead of int8.
        #[arg(long)]
        f32_activations: bool,
        /// What runs the model: JIT kernels, or the reference interpreter.
        #[arg(long, value_enum, default_value_t = cmd::run::Engine::Jit)]
        engine: cmd::run::Engine,
        /// Write the output here (.npy) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seed of the initialisation used without --weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Which model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Train a model on MNIST (quantization-aware for ternary layers) and write its weights.
    Train {
        /// The .tri file defining the model.
        file: PathBuf,
        /// The dataset: a folder with MNIST's IDX files (or a folder holding `mnist/`), or
        /// `mnist` to search $TRITON_DATA, ./data and ../shared/data.
        #[arg(long)]
        data: Option<String>,
        /// Where to write the weights (default: `<file stem>.safetensors`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Base learning rate.
        #[arg(long, default_value_t = 2e-3)]
        lr: f32,
        #[arg(long, value_enum, default_value_t = train::OptimizerKind::Adam)]
        optimizer: train::OptimizerKind,
        /// Weight decay of weights (decoupled for Adam, L2 for SGD); biases are not decayed.
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f32,
        #[arg(long, value_enum, default_value_t = train::Schedule::Cosine)]
        schedule: train::Schedule,
        /// ternary trains through the quantization rules (QAT); fp32 trains the plain model.
        #[arg(long, value_enum, default_value_t = PrecisionArg::Ternary)]
        precision: PrecisionArg,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Pixel normalisation (recorded in the weights file's metadata).
        #[arg(long, value_enum, default_value_t = triton::data::Normalize::Unit)]
        normalize: triton::data::Normalize,
        /// Augment with random shifts of up to this many pixels.
        #[arg(long, default_value_t = 0)]
        shift: usize,
        /// Train on the first N training images only.
        #[arg(long)]
        subset: Option<usize>,
        /// Start from these weights instead of the seeded initialisation.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Write per-epoch metrics here (JSON).
        #[arg(long)]
        log_json: Option<PathBuf>,
        /// Worker threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
        /// Which model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum CacheAction {
    /// Entries and bytes per kind.
    Stats,
    /// Delete every entry.
    Clean,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PrecisionArg {
    Fp32,
    Ternary,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Ternary => Precision::Ternary,
        }
    }
}

fn main() -> ExitCode {
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
        Command::Compile {
            file,
            opt,
            output,
            emit,
            weights,
            seed,
            precision,
            f32_activations,
            timing,
            verify_each,
            model,
            cache_dir,
            no_cache,
        } => {
            let cache = match (no_cache, cache_dir.or_else(triton::Cache::default_dir)) {
                (true, _) => triton::Cache::disabled(),
                (false, Some(dir)) => triton::Cache::at(dir),
                (false, None) => triton::Cache::memory_only(),
            };
            let args = cmd::compile::Args {
                file: &file,
                opt,
                emit,
                output: output.as_deref(),
                timing,
                verify_each,
                f32_activations,
                precision: precision.into(),
                weights: weights.as_deref(),
                seed,
                model: model.as_deref(),
                cache,
            };
            cmd::compile::run(&args, style)
        }
        Command::Train {
            file,
            data,
            output,
            epochs,
            batch_size,
            lr,
            optimizer,
            weight_decay,
            schedule,
            precision,
            seed,
            normalize,
            shift,
            subset,
            init,
            log_json,
            threads,
            model,
        } => {
            let config = train::TrainConfig {
                epochs,
                batch_size,
                lr,
                optim: train::OptimConfig::new(optimizer, weight_decay),
                schedule,
                precision: precision.into(),
                seed,
                normalize,
                shift,
                subset,
            };
            cmd::train::run(&cmd::train::Args { file, data, output, config, init, model, log_json, threads }, style)
        }
        Command::Cache { action, cache_dir } => cmd::cache::run(action, cache_dir),
        Command::Run { file, input, weights, precision, opt, f32_activations, engine, out, seed, model } => {
            cmd::run::run(
                &cmd::run::Args {
                    engine,
                    file,
                    input,
                    weights,
                    precision: precision.into(),
                    opt,
                    f32_activations,
                    out,
                    seed,
                    model,
                },
                style,
            )
        }
    }
}
