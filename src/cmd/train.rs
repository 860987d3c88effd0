//! `triton train`: trains a model on MNIST and writes its weights as safetensors.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use triton::data;
use triton::train::{self, TrainConfig};
use triton_compiler::diagnostics::render::{self, Style};

use super::common::{load_weights, user_error};

#[derive(Debug)]
pub struct Args {
    pub file: PathBuf,
    pub data: Option<String>,
    pub output: Option<PathBuf>,
    pub config: TrainConfig,
    /// Where training starts (`--weights`, or its earlier name `--init`); `None`: seeded.
    pub init: Option<PathBuf>,
    /// The shared model options (model, precision, seed and threads apply to training).
    pub m: super::opts::ModelOpts,
    pub log_json: Option<PathBuf>,
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    a.m.init_thread_pool();
    if let Some(why) = triton::files::misplaced(&a.file, "a .tri model", &[]) {
        return user_error(why);
    }
    let checked = triton::driver::check(&a.file, &mut triton::compiler::passes::Timings::new());
    eprint!("{}", render::render_all(checked.diags().iter(), &checked.program.sources, style));
    if checked.has_errors() {
        eprintln!("error: {} has errors", a.file.display());
        return ExitCode::from(1);
    }
    let source_hash = triton::sources_blake3(&checked.program.sources);
    let settings = triton::driver::Settings { model: a.m.model.clone(), ..Default::default() };
    let model = match triton::driver::select(&a.file, checked, &settings) {
        Ok(m) => m,
        Err(e) => return user_error(e),
    };
    let out = match &a.output {
        Some(o) => o.clone(),
        None => {
            // Beside the model, where every command looks for its weights.
            let default = triton::weights::beside(&a.file);
            if default.exists() {
                return user_error(format!(
                    "`{}` exists: give -o to replace it (`-o {}`) or to write elsewhere; without -o, `triton train` never replaces a weights file",
                    default.display(),
                    default.display()
                ));
            }
            default
        }
    };
    if let Err(e) = check_output(&out) {
        return user_error(e);
    }
    if train::training_graph(&model.graph).1 {
        eprintln!(
            "note: {} ends in softmax; training runs on the logits before it (the loss applies its own softmax)",
            model.name
        );
    }
    let dir = match data::find_mnist(a.data.as_deref()) {
        Ok(d) => d,
        Err(e) => return user_error(e),
    };
    let mnist = match data::load_mnist(&dir) {
        Ok(m) => m,
        Err(e) => return user_error(e),
    };
    let init = match load_weights(a.init.as_deref(), &model.graph.params, a.config.seed) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let c = &a.config;
    let used = c.subset.map_or(mnist.train.len(), |n| n.min(mnist.train.len()));
    eprintln!(
        "training {} ({}) on MNIST from {}: {used} images, {} epoch{}, batch {}, {:?} lr {} ({:?}), {} precision, {} threads",
        model.name,
        a.file.display(),
        dir.display(),
        c.epochs,
        if c.epochs == 1 { "" } else { "s" },
        c.batch_size,
        c.optim.kind,
        if (1e-4..1e4).contains(&c.lr) { c.lr.to_string() } else { format!("{:e}", c.lr) },
        c.schedule,
        c.precision.name(),
        rayon::current_num_threads(),
    );
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut log = Vec::new();
    let result = train::train(
        &model.graph,
        init,
        &mnist,
        c,
        |p| {
            if p.batch == 1 {
                bar.reset();
                bar.set_length(p.batches as u64);
                bar.set_prefix(format!("{}/{}", p.epoch + 1, c.epochs));
            }
            bar.set_position(p.batch as u64);
            if p.batch % 10 == 0 || p.batch == p.batches {
                bar.set_message(format!("loss {:.4} acc {:.2}%", p.loss, 100.0 * p.accuracy));
            }
        },
        |e| {
            bar.finish_and_clear();
            eprintln!(
                "epoch {:>3}/{}: loss {:.4}  train {:.2}%  test {:.2}%  lr {:.2e}  {:.1} s",
                e.epoch,
                c.epochs,
                e.loss,
                100.0 * e.train_accuracy,
                100.0 * e.test_accuracy,
                e.lr,
                e.seconds
            );
            log.push(e.clone());
        },
    );
    let trained = match result {
        Ok(t) => t,
        Err(e) => return user_error(e),
    };
    let last = trained.epochs.last();
    let test = last.map_or(0.0, |e| e.test_accuracy);
    let train_acc = match train::evaluate(&model.graph, &trained.weights, &mnist.train, c.precision, c.normalize) {
        Ok(v) => v,
        Err(e) => return user_error(e),
    };
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.name.clone());
    meta.insert("source_blake3".to_string(), source_hash);
    meta.insert("precision".to_string(), c.precision.name().to_string());
    meta.insert("normalize".to_string(), c.normalize.name().to_string());
    meta.insert("test_accuracy".to_string(), format!("{test:.4}"));
    meta.insert("train_accuracy".to_string(), format!("{train_acc:.4}"));
    meta.insert("epochs".to_string(), c.epochs.to_string());
    meta.insert("seed".to_string(), c.seed.to_string());
    meta.insert("triton_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let mut saved = trained.weights.clone();
    let scales = match train::scales(&model.graph, &trained.weights) {
        Ok(s) => s,
        Err(e) => return user_error(e),
    };
    for (name, s) in scales {
        saved.tensors.insert(name, s);
    }
    let bytes = match saved.to_safetensors(Some(meta)) {
        Ok(b) => b,
        Err(e) => return user_error(e),
    };
    if let Err(e) = triton::cache::write_atomic(&out, &bytes) {
        return user_error(format!("cannot write `{}`: {e}", out.display()));
    }
    if let Some(path) = &a.log_json {
        let json = serde_json::json!({ "model": model.name, "config": c, "epochs": log, "train_accuracy": train_acc, "test_accuracy": test, "seconds": trained.wall.as_secs_f64() });
        if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
            return user_error(format!("cannot write `{}`: {e}", path.display()));
        }
    }
    println!(
        "{}: train {:.2}%, test {:.2}% ({} precision) in {:.1} s; weights -> {}",
        model.name,
        100.0 * train_acc,
        100.0 * test,
        c.precision.name(),
        trained.wall.as_secs_f64(),
        out.display()
    );
    ExitCode::SUCCESS
}

/// The weights file may be replaced when missing or a safetensors file; anything else is kept.
fn check_output(out: &Path) -> Result<(), String> {
    if out.is_dir() {
        return Err(format!("`{}` is a folder; give the weights file's name", out.display()));
    }
    match std::fs::read(out) {
        Ok(bytes) if !bytes.is_empty() && safetensors::SafeTensors::deserialize(&bytes).is_err() => {
            Err(format!("refusing to overwrite `{}`: it exists and is not a safetensors file", out.display()))
        }
        _ => Ok(()),
    }
}
