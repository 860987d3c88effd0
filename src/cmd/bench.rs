//! `triton bench`: FP32 against ternary on one model; prints the tables and writes the JSON,
//! Markdown and SVG outputs asked for.
//!
//! Rules:
//! - Every output path is checked before the (long) run starts: a baseline that cannot be read
//!   and an output that would replace a file of another kind stop the command at once.
//! - Outputs replace only what `triton bench` wrote before (a JSON report with its `format`, a
//!   Markdown report with its title); anything else is kept and the command fails.
//! - Exit codes: 0 done, 1 a user error, 2 usage, 3 measured but a target failed
//!   (`--fail-on-target`) or a figure regressed against the baseline (`--fail-on-regression`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use triton::bench::{self, Config, Progress, compare, plots, render};

use super::common::user_error;

/// Exit code of a finished run that failed a target or regressed.
pub const FAILED_CHECK: u8 = 3;

#[derive(Debug)]
pub struct Args {
    pub config: Config,
    pub json: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub threshold_pct: f64,
    pub accuracy_pp: f64,
    pub fail_on_regression: bool,
    pub fail_on_target: bool,
}

/// An indicatif bar on a terminal; nothing otherwise.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn total(&mut self, steps: usize) {
        self.0.set_length(steps as u64);
    }

    fn step(&mut self, what: &str) {
        // The step before this one is done.
        if !self.0.message().is_empty() {
            self.0.inc(1);
        }
        self.0.set_message(what.to_string());
    }
}

pub fn run(a: &Args) -> ExitCode {
    let baseline = match a.baseline.as_deref().map(compare::load).transpose() {
        Ok(b) => b,
        Err(e) => return user_error(e),
    };
    for (path, kind) in [(&a.json, Kind::Json), (&a.report, Kind::Markdown)] {
        if let Some(p) = path
            && let Err(e) = may_write(p, kind)
        {
            return user_error(e);
        }
    }
    if let Some(dir) = &a.plots
        && dir.exists()
        && !dir.is_dir()
    {
        return user_error(format!("--plots: `{}` exists and is not a folder", dir.display()));
    }

    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut progress = Bar(bar);
    let result = bench::run(&a.config, &mut progress);
    progress.0.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => return user_error(e),
    };
    let cmp = baseline.as_ref().map(|old| {
        let name = a.baseline.as_deref().map_or_else(String::new, |p| p.display().to_string());
        compare::compare(old, &report, &name, a.threshold_pct, a.accuracy_pp)
    });

    // With `--json -` stdout carries the JSON alone; the tables go to stderr.
    let tables = format!("{}measured in {:.1} s\n", render::terminal(&report, cmp.as_ref()), report.wall_seconds);
    if a.json.as_deref() == Some(Path::new("-")) {
        eprint!("{tables}");
    } else {
        print!("{tables}");
    }

    let mut drawn = Vec::new();
    if let Some(dir) = &a.plots {
        match plots::write(&report, dir) {
            Ok((d, skipped)) => {
                for s in skipped {
                    eprintln!("note: plot skipped: {s}");
                }
                for (_, p) in &d {
                    eprintln!("plot -> {}", p.display());
                }
                drawn = d;
            }
            Err(e) => return user_error(format!("cannot draw the plots: {e}")),
        }
    }
    if let Some(path) = &a.json {
        let mut value = match serde_json::to_value(&report) {
            Ok(v) => v,
            Err(e) => return user_error(format!("cannot encode the report: {e}")),
        };
        if let (Some(c), Some(obj)) = (&cmp, value.as_object_mut()) {
            obj.insert("comparison".into(), serde_json::to_value(c).unwrap_or_default());
        }
        if let Err(e) = write(path, &format!("{value:#}\n")) {
            return user_error(e);
        }
    }
    if let Some(path) = &a.report {
        let base = path.parent().unwrap_or(Path::new(""));
        let links: Vec<(String, String)> =
            drawn.iter().map(|(title, p)| (title.clone(), relative(p, base).display().to_string())).collect();
        if let Err(e) = write(path, &render::markdown(&report, cmp.as_ref(), &links)) {
            return user_error(e);
        }
    }

    let failed_targets = report.targets.iter().filter(|o| o.pass == Some(false)).count();
    let regressions = cmp.as_ref().map_or(0, |c| c.regressions().count());
    if a.fail_on_target && failed_targets > 0 {
        eprintln!("error: {failed_targets} target(s) failed");
        return ExitCode::from(FAILED_CHECK);
    }
    if a.fail_on_regression && regressions > 0 {
        eprintln!("error: {regressions} figure(s) regressed against the baseline");
        return ExitCode::from(FAILED_CHECK);
    }
    ExitCode::SUCCESS
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Markdown,
}

/// Whether `path` may be (over)written: it is missing, or an earlier output of the same kind.
fn may_write(path: &Path, kind: Kind) -> Result<(), String> {
    if path == Path::new("-") {
        return Ok(());
    }
    if path.is_dir() {
        return Err(format!("`{}` is a folder; give a file name", path.display()));
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return match path.exists() {
            true => Err(format!(
                "refusing to overwrite `{}`: it is not a text file written by triton bench",
                path.display()
            )),
            false => Ok(()),
        };
    };
    let ours = match kind {
        Kind::Json => serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v.get("format").is_some() && v.get("machine").is_some()),
        Kind::Markdown => text.starts_with("# triton bench"),
    };
    if text.is_empty() || ours {
        Ok(())
    } else {
        Err(format!("refusing to overwrite `{}`: it exists and was not written by triton bench", path.display()))
    }
}

/// Writes `text` to `path` (`-`: standard output).
fn write(path: &Path, text: &str) -> Result<(), String> {
    if path == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    triton::cache::write_atomic(path, text.as_bytes()).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// `p` relative to `base` when it lies under it (links in the Markdown report).
fn relative(p: &Path, base: &Path) -> PathBuf {
    p.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}
