//! `triton check`: parse and check files, print a summary line per model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use triton_compiler::diagnostics::group_digits;
use triton_compiler::diagnostics::render::{self, Style};
use triton_compiler::{ModelStats, check_file};

pub fn run(files: &[PathBuf], quiet: bool, deny_warnings: bool, style: Style) -> ExitCode {
    let mut errors = 0usize;
    let mut warnings = 0usize;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for path in files {
        if let Some(why) = triton::files::misplaced(path, "a .tri model", &[]) {
            let _ = writeln!(stderr, "error: {why}");
            errors += 1;
            continue;
        }
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
    let inputs: Vec<String> = m.inputs().iter().map(|(_, t)| t.to_string()).collect();
    let output = m.output().to_string();
    let ternary_pct = if s.parameters > 0 { 100.0 * s.ternary as f64 / s.parameters as f64 } else { 0.0 };
    format!(
        "model {}: {}, {} parameters ({} ternary, {ternary_pct:.1}%), {} -> {}, FP32 {} -> packed {} ({:.1}x)",
        m.name,
        count(m.layers, "layer"),
        group_digits(s.parameters),
        group_digits(s.ternary),
        inputs.join(", "),
        output,
        bytes(s.fp32_bytes),
        bytes(s.packed_bytes),
        s.compression()
    )
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} KB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}
