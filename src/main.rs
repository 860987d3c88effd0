//! The `triton` command.
//!
//! Exit codes: 0 success, 1 user errors (diagnostics), 2 usage errors. A panic (101) is a bug.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod cmd;

use clap::{Parser, Subcommand};
use cmd::compile::Emit;
use triton_compiler::diagnostics::render::{self, Style};
use triton_compiler::interp::Precision;
use triton_compiler::{ModelStats, check_file};

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
    /// Compile a model: check, lower to the graph IR and optimize.
    Compile {
        /// The .tri file defining the model.
        file: PathBuf,
        /// Optimization level.
        #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3), default_value_t = 2)]
        opt: u8,
        /// What to print: a summary, or the optimized IR.
        #[arg(long, value_enum, default_value_t = Emit::Summary)]
        emit: Emit,
        /// Print the time of every phase and pass (to stderr).
        #[arg(long)]
        timing: bool,
        /// Verify the IR after every pass (always on in debug builds).
        #[arg(long)]
        verify_each: bool,
        /// Which model, when the file defines several.
        #[arg(long)]
        model: Option<String>,
    },
    /// Run a model on a NumPy input with the reference interpreter.
    Run {
        /// The .tri file defining the model.
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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PrecisionArg {
    Fp32,
    Ternary,
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
        Command::Check { files, quiet, deny_warnings } => check(&files, quiet, deny_warnings, style),
        Command::Compile { file, opt, emit, timing, verify_each, model } => {
            let args = cmd::compile::Args { file: &file, opt, emit, timing, verify_each, model: model.as_deref() };
            cmd::compile::run(&args, style)
        }
        Command::Run { file, input, weights, precision, opt, out, seed, model } => {
            let precision = match precision {
                PrecisionArg::Fp32 => Precision::Fp32,
                PrecisionArg::Ternary => Precision::Ternary,
            };
            cmd::run::run(&cmd::run::Args { file, input, weights, precision, opt, out, seed, model }, style)
        }
    }
}

fn check(files: &[PathBuf], quiet: bool, deny_warnings: bool, style: Style) -> ExitCode {
    let mut errors = 0usize;
    let mut warnings = 0usize;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for path in files {
        let checked = check_file(path);
        let diags = checked.diags();
        errors += diags.error_count();
        warnings += diags.warning_count();
        let text = render::render_all(diags.iter(), &checked.program.sources, style);
        let _ = stderr.write_all(text.as_bytes());
        if diags.dropped() > 0 {
            let _ = writeln!(stderr, "... and {} more diagnostics not shown\n", diags.dropped());
        }
        if quiet || checked.has_errors() {
            continue;
        }
        if checked.models.is_empty() {
            let _ = writeln!(
                stdout,
                "{}: ok (no models; layers are checked when a model instantiates them)",
                path.display()
            );
        }
        for m in &checked.models {
            let _ = writeln!(stdout, "{}: {}", path.display(), summary(m));
        }
    }
    let failed = errors > 0 || (deny_warnings && warnings > 0);
    if errors > 0 || warnings > 0 {
        let _ = writeln!(
            stderr,
            "{}: {}, {}",
            if failed { "check failed" } else { "check passed" },
            count(errors, "error"),
            count(warnings, "warning")
        );
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

fn summary(m: &triton_compiler::CheckedModel) -> String {
    let s = ModelStats::of(m);
    let inputs: Vec<String> = m.inputs.iter().map(|(_, t)| t.to_string()).collect();
    let output = m.output.as_ref().map_or("?".to_string(), |t| t.to_string());
    let ternary_pct = if s.parameters > 0 { 100.0 * s.ternary as f64 / s.parameters as f64 } else { 0.0 };
    format!(
        "model {}: {} layers, {} parameters ({} ternary, {ternary_pct:.1}%), {} -> {}, FP32 {} -> packed {} ({:.1}x)",
        m.name,
        m.layers,
        thousands(s.parameters),
        thousands(s.ternary),
        inputs.join(", "),
        output,
        bytes(s.fp32_bytes),
        bytes(s.packed_bytes),
        s.compression()
    )
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}
