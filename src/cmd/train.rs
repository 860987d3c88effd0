//! `triton train`: trains a model on a dataset and writes its weights as safetensors.
//!
//! Rules: the model, the output path and the dataset are all checked before the first step
//! (nothing is trained for a file that cannot be written); the weights written are the kept
//! epoch's ([`triton::train`]), with the normalization, the dataset and the accuracies in the
//! file's metadata; a checkpoint, when asked for, is rewritten atomically after every epoch.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use triton::data;
use triton::train::{self, TrainError, defaults};
use triton_compiler::diagnostics::render::Style;

use super::common::{load_weights, user_error};

#[derive(Debug)]
pub struct Args {
    pub file: PathBuf,
    pub data: Option<String>,
    pub format: Option<data::Format>,
    pub output: Option<PathBuf>,
    pub flags: defaults::Flags,
    /// Where training starts (`--weights`, or its earlier name `--init`); `None`: seeded.
    pub init: Option<PathBuf>,
    /// The shared model options (model, precision, seed and threads apply to training).
    pub m: super::opts::ModelOpts,
    pub checkpoint: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub log_json: Option<PathBuf>,
}

/// Training allocates the same large activations and gradients every step: glibc hands
/// blocks above its mmap threshold back to the kernel on free, so each step page-faults them
/// in again (a fifth of a CNN epoch, measured). Keeping them in the heap makes them reusable.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before training allocates.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit targets (a larger one is
        // refused and leaves the default).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    a.m.init_thread_pool();
    keep_freed_memory();
    let settings = triton::driver::Settings { model: a.m.model.clone(), ..Default::default() };
    let (model, source_hash) = match super::common::load_model_hashed(
        &a.file,
        &settings,
        &mut triton::compiler::passes::Timings::new(),
        style,
    ) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let out = match &a.output {
        Some(o) => o.clone(),
        None => {
            // Beside the model, where every command looks for its weights.
            let default = triton::weights::beside(&a.file);
            if default.exists() && a.resume.is_none() {
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
    if let Some(c) = &a.checkpoint
        && (c == &out || c.is_dir())
    {
        return user_error(format!("--checkpoint `{}` must be a file other than the weights written", c.display()));
    }
    if train::training_graph(&model.graph).1 {
        eprintln!(
            "note: {} ends in softmax; training runs on the logits before it (the loss applies its own softmax)",
            model.name
        );
    }
    let ds = match data::load(a.data.as_deref(), a.format) {
        Ok(d) => d,
        Err(e) => return user_error(e),
    };
    for n in &ds.notes {
        eprintln!("note: {n}");
    }
    if let Err(e) = train::check_model(&train::training_graph(&model.graph).0, &ds) {
        return user_error(format!("{e}\n  dataset: {}", ds.describe()));
    }
    let resolved = match defaults::resolve(&a.flags, &ds.train, a.m.precision(), a.m.seed()) {
        Ok(r) => r,
        Err(e) => return super::common::usage_error(e),
    };
    let c = &resolved.config;
    let state = match &a.resume {
        Some(path) => {
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => return user_error(format!("cannot read `{}`: {e}", path.display())),
            };
            match train::checkpoint::decode(&bytes, &model.graph, c, &path.display().to_string()) {
                Ok(ck) if ck.model != model.name => {
                    return user_error(format!(
                        "`{}` is a checkpoint of model `{}`, not `{}`",
                        path.display(),
                        ck.model,
                        model.name
                    ));
                }
                Ok(ck) => {
                    if ck.source_blake3 != source_hash {
                        eprintln!(
                            "note: {} changed since the checkpoint was written (its parameters still match)",
                            a.file.display()
                        );
                    }
                    eprintln!("resuming after epoch {} of {} from {}", ck.state.epochs_done, c.epochs, path.display());
                    ck.state
                }
                Err(e) => return user_error(e),
            }
        }
        None => {
            let init = match load_weights(a.init.as_deref(), &model.graph.params, c.seed) {
                Ok(w) => w,
                Err(code) => return code,
            };
            match train::State::start(&model.graph, &init, c) {
                Ok(s) => s,
                Err(e) => return user_error(e),
            }
        }
    };
    eprintln!("dataset: {}", ds.describe());
    if !resolved.adapted.is_empty() {
        eprintln!(
            "note: {} training examples (< {}): small-dataset defaults {}",
            c.subset.map_or(ds.train.len(), |s| s.min(ds.train.len())),
            defaults::SMALL,
            resolved.adapted.join(", ")
        );
    }
    eprintln!(
        "training {} ({}): {} epoch{}, batch {}, {:?} lr {} ({:?}), weight decay {}, label smoothing {}, augment {}, {} normalization, {} precision, {} threads",
        model.name,
        a.file.display(),
        c.epochs,
        if c.epochs == 1 { "" } else { "s" },
        c.batch_size,
        c.optim.kind,
        if (1e-4..1e4).contains(&c.lr) { c.lr.to_string() } else { format!("{:e}", c.lr) },
        c.schedule,
        c.optim.weight_decay,
        c.label_smoothing,
        c.augment.describe(),
        c.normalize.name(),
        c.precision.name(),
        rayon::current_num_threads(),
    );
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let result = train::train(
        &model.graph,
        state,
        &ds,
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
        |e, state| {
            bar.finish_and_clear();
            let val = e
                .val_accuracy
                .map_or(String::new(), |v| format!("  val {:.2}%{}", 100.0 * v, if e.best { " *" } else { "" }));
            eprintln!(
                "epoch {:>3}/{}: loss {:.4}  train {:.2}%{val}  lr {:.2e}  {:.1} s",
                e.epoch,
                c.epochs,
                e.loss,
                100.0 * e.train_accuracy,
                e.lr,
                e.seconds
            );
            if let Some(path) = &a.checkpoint {
                let bytes = train::checkpoint::encode(&model.graph, state, c, &model.name, &source_hash)?;
                triton::cache::write_atomic(path, &bytes)
                    .map_err(|err| TrainError::Checkpoint(format!("cannot write `{}`: {err}", path.display())))?;
            }
            Ok(())
        },
    );
    let trained = match result {
        Ok(t) => t,
        Err(e) => return user_error(e),
    };
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}%", 100.0 * v));
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), model.name.clone());
    meta.insert("source_blake3".to_string(), source_hash);
    meta.insert("precision".to_string(), c.precision.name().to_string());
    meta.extend(trained.normalization.to_metadata());
    meta.insert("dataset".to_string(), format!("{} ({})", ds.dir.display(), ds.format.name()));
    meta.insert("example_dims".to_string(), format!("{:?}", ds.train.dims));
    if let Some(t) = trained.test_accuracy {
        meta.insert("test_accuracy".to_string(), format!("{t:.4}"));
    }
    if let Some(v) = trained.val_accuracy {
        meta.insert("val_accuracy".to_string(), format!("{v:.4}"));
    }
    let kept_log = trained.epochs.iter().find(|e| e.epoch == trained.kept_epoch);
    if let Some(k) = kept_log {
        meta.insert("train_accuracy".to_string(), format!("{:.4}", k.train_accuracy));
    }
    meta.insert("epochs".to_string(), trained.epochs.len().to_string());
    meta.insert("kept_epoch".to_string(), trained.kept_epoch.to_string());
    meta.insert("seed".to_string(), c.seed.to_string());
    meta.insert("triton_version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    if !ds.class_names.is_empty() {
        meta.insert("classes".to_string(), serde_json::to_string(&ds.class_names).unwrap_or_default());
    }
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
        let json = serde_json::json!({
            "model": model.name, "config": c, "dataset": ds.describe(), "epochs": trained.epochs,
            "kept_epoch": trained.kept_epoch, "val_accuracy": trained.val_accuracy,
            "test_accuracy": trained.test_accuracy, "train_size": trained.train_size,
            "val_size": trained.val_size, "stopped_early": trained.stopped_early,
            "normalization": trained.normalization, "seconds": trained.wall.as_secs_f64(),
        });
        if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
            return user_error(format!("cannot write `{}`: {e}", path.display()));
        }
    }
    let kept = if trained.val_size > 0 {
        format!("best validation epoch {} of {}", trained.kept_epoch, trained.epochs.len())
    } else {
        format!("last epoch ({}; no validation split)", trained.kept_epoch)
    };
    if trained.stopped_early {
        eprintln!("note: stopped early: no better validation accuracy for {} epochs", c.patience.unwrap_or(0));
    }
    println!(
        "{}: kept the {kept}: val {}, test {} ({} precision; {} training, {} validation examples) in {:.1} s; weights -> {}",
        model.name,
        pct(trained.val_accuracy),
        pct(trained.test_accuracy),
        c.precision.name(),
        trained.train_size,
        trained.val_size,
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
