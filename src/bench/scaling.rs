//! Scaling tables: how size, compile time and latency grow with the network (`--scaling`).
//!
//! Rules:
//! - Two tables: MNIST MLPs 784-W-W-10 for W in [`WIDTHS`] (two ternary hidden layers, an f32
//!   head, like examples/mnist_mlp.tri), and every `.tri` model in the benchmarked model's
//!   folder (the zoo, in name order). A zoo file that does not check or compile is listed as
//!   skipped with its error; it does not stop the benchmark.
//! - Every row is measured the same way: seeded weights (size and speed do not depend on the
//!   values), compiled at the run's -O level through a fresh cache, median latency on one thread
//!   at batch 1 and [`BATCH`] within a quarter of the run's per-case budget.
//! - The batch-[`BATCH`] case of a row is skipped, and the row says so, when a call at batch 1
//!   times [`BATCH`] exceeds ten of this table's case budgets, each at least 0.25 s
//!   (EfficientNet-B0 at 224x224 by default): a case always takes at least four calls, and the
//!   zoo must not dominate the run.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triton_compiler::ModelStats;
use triton_runtime::Model;

use super::{BenchError, Config, Progress, Side, measure, user};
use crate::compile::Options;

/// Hidden widths of the MLP table.
pub const WIDTHS: [usize; 6] = [64, 128, 256, 512, 1024, 2048];
/// The larger batch size of the scaling rows.
pub const BATCH: usize = 16;

/// One network of a scaling table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub parameters: u64,
    pub fp32_bytes: u64,
    pub ternary_artifact_bytes: usize,
    pub compression: f64,
    /// Cold compile of the ternary model, ms.
    pub compile_ms: f64,
    pub fp32_b1_ms: f64,
    pub ternary_b1_ms: f64,
    pub batch: usize,
    /// `None`: skipped (see the module rules and `skipped`).
    pub fp32_batch_ms: Option<f64>,
    pub ternary_batch_ms: Option<f64>,
    /// Why the batch case was skipped.
    pub skipped: Option<String>,
}

impl Row {
    pub fn speedup_b1(&self) -> f64 {
        self.fp32_b1_ms / self.ternary_b1_ms
    }

    pub fn speedup_batch(&self) -> Option<f64> {
        Some(self.fp32_batch_ms? / self.ternary_batch_ms?)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub mlp: Vec<Row>,
    pub zoo: Vec<Row>,
    /// Zoo files that could not be measured (name, why): a folder may hold unfinished models.
    #[serde(default)]
    pub zoo_skipped: Vec<(String, String)>,
}

/// The largest model the zoo table compiles and times beside the model benched (a full-depth
/// language model would take minutes and gigabytes there).
pub const ZOO_MAX_PARAMETERS: u64 = 30_000_000;

/// The zoo: `.tri` files in the model's folder, sorted.
pub fn zoo(file: &Path) -> Vec<PathBuf> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "tri")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Progress steps [`measure`] takes.
pub fn steps(file: &Path) -> usize {
    WIDTHS.len() + zoo(file).len()
}

/// The source of the MLP of hidden width `w`.
pub fn mlp_source(w: usize) -> String {
    format!(
        "use std::nn::{{TernaryLinear, Linear}}\n\nmodel Mlp{w} {{\n    fc1 = TernaryLinear(784, {w})\n    fc2 = TernaryLinear({w}, {w})\n    head = Linear({w}, 10)\n\n    fn forward(x: f32[B, 784]) -> f32[B, 10] {{\n        let h = relu(fc1(x))\n        let h = relu(fc2(h))\n        return head(h)\n    }}\n}}\n"
    )
}

fn row(cfg: &Config, name: String, file: &Path, scratch: &Path) -> Result<Row, BenchError> {
    let checked = crate::check_file(file);
    if checked.has_errors() {
        return Err(user(format!("{} has errors; run `triton check` on it", file.display())));
    }
    let Some(model) = checked.models.first() else {
        return Err(user(format!("{} defines no model", file.display())));
    };
    let stats = ModelStats::of(model);
    if stats.parameters > ZOO_MAX_PARAMETERS {
        return Err(user(format!(
            "{} parameters, above the {} the zoo table measures beside another model (bench it on its own)",
            crate::compiler::diagnostics::group_digits(stats.parameters),
            crate::compiler::diagnostics::group_digits(ZOO_MAX_PARAMETERS)
        )));
    }
    let budget = cfg.budget.scaled(0.25);
    let mut artifact = 0;
    let mut compile_ms = 0.0;
    let mut models = Vec::new();
    for side in Side::BOTH {
        let opts = Options {
            opt: cfg.opt,
            precision: side.precision(),
            seed: cfg.seed,
            model: Some(model.name.clone()),
            ..Options::default()
        };
        let times = measure::compile_times(file, &opts, scratch, 1, 0).map_err(user)?;
        if side == Side::Ternary {
            artifact = times.build.summary.artifact_bytes;
            compile_ms = measure::median_of(&times.cold_ms);
        }
        models.push(Model::from_artifact(times.build.bytes.as_ref(), 1).map_err(user)?);
    }
    let refs: Vec<&Model> = models.iter().collect();
    let time = |b: usize| -> Result<[f64; 2], BenchError> {
        let t = measure::time_models(&refs, b, budget).map_err(user)?;
        Ok([t[0].stats.median_ms, t[1].stats.median_ms])
    };
    let b1 = time(1)?;
    // Ten of this table's case budgets, each at least 0.25 s.
    let limit_ms = super::LONGEST_CALL * budget.max.as_secs_f64().max(0.25) * 1e3;
    let (batch_ms, skipped) = match super::too_long(Some(b1[0].max(b1[1])), BATCH, limit_ms) {
        Some(why) => ([None, None], Some(format!("batch {BATCH} skipped: {why}"))),
        None => (time(BATCH)?.map(Some), None),
    };
    Ok(Row {
        name,
        parameters: stats.parameters,
        fp32_bytes: stats.fp32_bytes,
        ternary_artifact_bytes: artifact,
        compression: stats.fp32_bytes as f64 / artifact.max(1) as f64,
        compile_ms,
        fp32_b1_ms: b1[0],
        ternary_b1_ms: b1[1],
        batch: BATCH,
        fp32_batch_ms: batch_ms[0],
        ternary_batch_ms: batch_ms[1],
        skipped,
    })
}

/// Measures both tables.
pub fn measure(cfg: &Config, scratch: &Path, progress: &mut dyn Progress) -> Result<Scaling, BenchError> {
    let mut mlp = Vec::new();
    for w in WIDTHS {
        progress.step(&format!("scaling: MLP width {w}"));
        let path = scratch.join(format!("mlp_{w}.tri"));
        std::fs::write(&path, mlp_source(w)).map_err(|e| user(format!("cannot write `{}`: {e}", path.display())))?;
        mlp.push(row(cfg, format!("MLP 784-{w}-{w}-10"), &path, scratch)?);
    }
    let mut zoo_rows = Vec::new();
    let mut zoo_skipped = Vec::new();
    for file in zoo(&cfg.file) {
        let name = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        progress.step(&format!("scaling: {name}"));
        match row(cfg, name.clone(), &file, scratch) {
            Ok(r) => zoo_rows.push(r),
            Err(e) => zoo_skipped.push((name, e.to_string())),
        }
    }
    Ok(Scaling { mlp, zoo: zoo_rows, zoo_skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_mlps_check_and_grow_with_width() {
        let mut last = 0;
        for w in [64, 256] {
            let checked = crate::check_source("mlp.tri", &mlp_source(w), None);
            assert!(!checked.has_errors(), "width {w}");
            let p = ModelStats::of(&checked.models[0]).parameters;
            assert_eq!(p as usize, 784 * w + w + w * w + w + w * 10 + 10);
            assert!(p > last);
            last = p;
        }
    }
}
