//! Resident memory of this process, for the peak-RSS figures.
//!
//! Rules:
//! - Linux only (`/proc/self/status`; elsewhere every figure is `None`). A phase's peak is
//!   measured by resetting the kernel's high-water mark (`/proc/self/clear_refs`, value 5) before
//!   it and reading `VmHWM` after it; when the reset is refused the peak is the process's peak so
//!   far, and [`Phase::finish`] says so.
//! - `triton bench` measures in a child process ([`Probe`]: the `triton` binary's hidden
//!   `bench-probe` command), so a figure is what a process doing only that (compiling the model,
//!   or loading its artifact and running it) needs, not the benchmark's own datasets and
//!   buffers. Without a probe (the library called from Rust) phases are measured in-process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::compile::Options;

/// Peak resident memory of one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Peak resident set of the whole process during the phase.
    pub peak_bytes: u64,
    /// That peak minus the resident set when the phase began: what the phase added.
    pub added_bytes: u64,
    /// Whether the high-water mark was reset at the start (else `peak_bytes` may predate it).
    pub exact: bool,
}

fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()
}

/// Current resident set in bytes.
pub fn rss() -> Option<u64> {
    status_kib("VmRSS").map(|k| k * 1024)
}

/// A phase being measured.
#[derive(Debug)]
pub struct Phase {
    start_rss: Option<u64>,
    reset: bool,
}

impl Phase {
    pub fn start() -> Phase {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Phase { start_rss: rss(), reset }
    }

    pub fn finish(self) -> Option<Peak> {
        let peak = status_kib("VmHWM")? * 1024;
        let start = self.start_rss?;
        Some(Peak { peak_bytes: peak, added_bytes: peak.saturating_sub(start), exact: self.reset })
    }
}

/// The program measurements run in: a `triton` binary (`bench-probe` subcommand).
#[derive(Clone, Debug)]
pub struct Probe {
    pub exe: PathBuf,
}

impl Probe {
    /// Peak memory of a new process loading the artifact at `artifact` and running it `calls`
    /// times at batch `batch` on `threads` threads.
    pub fn run(&self, artifact: &Path, batch: usize, threads: usize, calls: usize) -> Result<RunMemory, String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["bench-probe", "run"]).arg(artifact);
        cmd.args(["--batch", &batch.to_string(), "--threads", &threads.to_string(), "--calls", &calls.to_string()]);
        self.output(cmd)
    }

    /// Peak memory of a new process compiling `file` (no cache) with `opts`.
    pub fn compile(&self, file: &Path, opts: &Options) -> Result<Option<Peak>, String> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["bench-probe", "compile"]).arg(file);
        cmd.args(["-O", &opts.opt.name()[1..], "--precision", opts.precision.name(), "--seed", &opts.seed.to_string()]);
        if let Some(w) = &opts.weights {
            cmd.arg("--weights").arg(w);
        }
        if let Some(m) = &opts.model {
            cmd.args(["--model", m]);
        }
        for (name, size) in &opts.shapes {
            cmd.arg("--shape").arg(format!("{name}={size}"));
        }
        self.output(cmd)
    }

    fn output<T: serde::de::DeserializeOwned>(&self, mut cmd: Command) -> Result<T, String> {
        let out =
            cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot start `{}`: {e}", self.exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "the memory probe failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_str(text.trim()).map_err(|e| format!("the memory probe printed `{}`: {e}", text.trim()))
    }
}

/// What loading a model and running it cost in memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMemory {
    /// `None`: not Linux.
    pub peak: Option<Peak>,
    /// Scratch buffers the runtime keeps between calls (`Model::arena_bytes`).
    pub arena_bytes: usize,
}

/// Loads a model with `load` and runs it `calls` times at batch `batch`, measuring the whole
/// phase (loading, inputs, calls).
pub fn run_phase(
    load: impl FnOnce() -> Result<triton_runtime::Model, String>,
    batch: usize,
    calls: usize,
) -> Result<RunMemory, String> {
    let phase = Phase::start();
    let model = load()?;
    let x = super::measure::inputs(&model, batch);
    let views: Vec<_> = x.iter().map(|a| a.view()).collect();
    for _ in 0..calls.max(1) {
        model.run(&views).map_err(|e| e.to_string())?;
    }
    Ok(RunMemory { peak: phase.finish(), arena_bytes: model.arena_bytes() })
}

/// The probe's side of [`Probe::run`].
pub fn probe_run(artifact: &Path, batch: usize, threads: usize, calls: usize) -> Result<RunMemory, String> {
    run_phase(|| triton_runtime::Model::load_with_threads(artifact, threads).map_err(|e| e.to_string()), batch, calls)
}

/// The probe's side of [`Probe::compile`].
pub fn probe_compile(file: &Path, opts: &Options) -> Result<Option<Peak>, String> {
    let phase = Phase::start();
    crate::build_artifact(file, opts, &crate::Cache::disabled()).map_err(|e| e.to_string())?;
    Ok(phase.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_phase_that_touches_memory_adds_to_the_peak() {
        let phase = Phase::start();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = phase.finish().expect("linux reports memory");
        drop(big);
        assert!(peak.added_bytes >= 60 << 20, "{peak:?}");
        assert!(peak.peak_bytes >= peak.added_bytes);
    }
}
