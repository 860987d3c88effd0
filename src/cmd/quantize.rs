//! `triton quantize`: post-training ternarization of a model's FP32 weights, with the
//! accuracy before and after each step ([`triton::train::quantize`]).
//!
//! Rules: the output is checked before any work and never replaces a file `triton` did not
//! write (as `train`); every accuracy printed is that of the weights as `compile` will run
//! them (the model's declared quantization rules over the written latent values).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use triton::data::{self, Normalization};
use triton::train::{self, defaults, quantize};
use triton_compiler::diagnostics::render::Style;
use triton_compiler::interp::Precision;
use triton_compiler::ir::QuantRule;

use super::common::{load_weights, usage_error, user_error};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleArg {
    /// BitNet b1.58: codes round(w / mean|w|), scale mean|w|.
    Absmean,
    /// BitNet b1.58 with one scale per tensor: codes round(w / mean|w|) over the whole weight.
    AbsmeanTensor,
    /// Ternary weight networks: threshold 0.7 mean|w|, scale the mean of the kept |w|.
    Twn,
}

#[derive(Debug)]
pub struct Args {
    pub file: PathBuf,
    pub m: super::opts::ModelOpts,
    pub data: Option<String>,
    pub format: Option<data::Format>,
    pub quant: Option<RuleArg>,
    pub flags: defaults::Flags,
    pub output: Option<PathBuf>,
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

pub fn run(a: &Args, style: Style) -> ExitCode {
    a.m.init_thread_pool();
    let Some(fp32_path) = a.m.weights.clone() else {
        return usage_error("triton quantize needs the FP32 weights to ternarize: give --weights FP32.safetensors");
    };
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
    let g = &model.graph;
    let out = match &a.output {
        Some(o) => o.clone(),
        None => {
            let default = triton::weights::beside(&a.file);
            if default.exists() {
                return user_error(format!(
                    "`{}` exists: give -o to write the ternary weights elsewhere or to replace it",
                    default.display()
                ));
            }
            default
        }
    };
    if out == fp32_path {
        return user_error(format!(
            "-o `{}` is the FP32 weights file being ternarized: write elsewhere",
            out.display()
        ));
    }
    let is_safetensors =
        |p: &std::path::Path| std::fs::read(p).is_ok_and(|b| safetensors::SafeTensors::deserialize(&b).is_ok());
    if let Err(e) = triton::files::may_replace(&out, a.output.is_some(), is_safetensors, "triton quantize", "-o") {
        return user_error(e);
    }
    let quantized: Vec<_> = g.params.iter().filter(|p| p.quant.is_some()).collect();
    if quantized.is_empty() {
        return user_error(format!(
            "{} has no ternary layers to quantize (use TernaryLinear/TernaryConv2d, or `triton import --ternary auto`)",
            model.name
        ));
    }
    let rule = match a.quant {
        Some(RuleArg::Absmean) => QuantRule::Absmean,
        Some(RuleArg::AbsmeanTensor) => QuantRule::AbsmeanTensor,
        Some(RuleArg::Twn) => QuantRule::Twn,
        None => quantized[0].quant.unwrap_or(QuantRule::Absmean),
    };
    let fp32 = match load_weights(Some(&fp32_path), &g.params, 0) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let ds = match data::load(a.data.as_deref(), a.format) {
        Ok(d) => d,
        Err(e) => return user_error(e),
    };
    let (tg, _) = train::training_graph(g);
    let dims = match train::check_model(&tg, &ds) {
        Ok(d) => d,
        Err(e) => return user_error(format!("{e}\n  dataset: {}", ds.describe())),
    };
    let meta = std::fs::read(&fp32_path)
        .ok()
        .and_then(|b| {
            safetensors::SafeTensors::read_metadata(&b).ok().map(|(_, m)| m.metadata().clone().unwrap_or_default())
        })
        .unwrap_or_default();
    let norm = match a.flags.normalize {
        Some(kind) => Normalization::of(kind, &ds.train),
        None => match Normalization::from_metadata(&meta) {
            Ok(Some(n)) => n,
            Ok(None) => {
                eprintln!(
                    "note: {} records no normalization: inputs are scaled as `unit` (give --normalize otherwise)",
                    fp32_path.display()
                );
                Normalization::of(data::Normalize::Unit, &ds.train)
            }
            Err(e) => return user_error(format!("`{}`: {e}", fp32_path.display())),
        },
    };
    let (held, held_name) = match &ds.test {
        Some(t) => (t.clone(), "test split"),
        None => (ds.train.clone(), "training split (the dataset has no test split)"),
    };
    eprintln!("dataset: {}", ds.describe());
    let eval = |w: &triton_compiler::interp::Weights, p: Precision| train::evaluate(g, w, &held, &dims, p, &norm);
    let mut rows: Vec<(String, f64)> = Vec::new();
    let before = match eval(&fp32, Precision::Fp32) {
        Ok(v) => v,
        Err(e) => return user_error(e),
    };
    rows.push(("FP32 (the weights given)".into(), before));
    let differs = quantize::declared_otherwise(g, rule);
    if !differs.is_empty() {
        eprintln!(
            "note: --quant {} differs from the rule declared by {}: the weights written are latent values the declared rule quantizes to {} codes and scales",
            rule.name(),
            differs.join(", "),
            rule.name()
        );
    }
    let step =
        |w: &triton_compiler::interp::Weights| -> Result<(triton_compiler::interp::Weights, f64), train::TrainError> {
            let baked = quantize::bake(g, w, rule)?;
            let acc = eval(&baked, Precision::Ternary)?;
            Ok((baked, acc))
        };
    let (mut written, acc) = match step(&fp32) {
        Ok(x) => x,
        Err(e) => return user_error(e),
    };
    rows.push((format!("ternary ({} per output channel)", rule.name()), acc));
    // Batch-norm statistics re-estimated with the ternary weights in place.
    match quantize::recalibrate(g, &written, &ds.train, &dims, &norm, Precision::Ternary, 10_000) {
        Ok((_, 0)) => {}
        Ok((w, n)) => {
            let acc = match eval(&w, Precision::Ternary) {
                Ok(v) => v,
                Err(e) => return user_error(e),
            };
            rows.push((format!("+ {n} batch norms recalibrated"), acc));
            written = w;
        }
        Err(e) => return user_error(e),
    }
    let epochs = a.flags.epochs.unwrap_or(0);
    if epochs > 0 {
        let mut flags = a.flags.clone();
        flags.lr = flags.lr.or(Some(5e-4));
        let mut resolved = match defaults::resolve(&flags, &ds.train, Precision::Ternary, a.m.seed()) {
            Ok(r) => r,
            Err(e) => return usage_error(e),
        };
        resolved.config.fixed_normalization = Some(norm.clone());
        let c = &resolved.config;
        eprintln!(
            "fine-tuning {} epoch{} (QAT, {} rule, lr {}, augment {}, weight decay {})",
            c.epochs,
            if c.epochs == 1 { "" } else { "s" },
            rule.name(),
            c.lr,
            c.augment.describe(),
            c.optim.weight_decay
        );
        let qg = quantize::with_rule(g, rule);
        // QAT starts from the FP32 latent values (with the recalibrated statistics).
        let mut start = written.clone();
        for p in g.params.iter().filter(|p| p.quant.is_some()) {
            if let Some(t) = fp32.tensors.get(&p.name) {
                start.tensors.insert(p.name.clone(), t.clone());
            }
        }
        let state = match train::State::start(&qg, &start, c) {
            Ok(s) => s,
            Err(e) => return user_error(e),
        };
        let trained = train::train(
            &qg,
            state,
            &ds,
            c,
            |_| {},
            |e, _| {
                let val = e
                    .val_accuracy
                    .map_or(String::new(), |v| format!("  val {}{}", pct(v), if e.best { " *" } else { "" }));
                eprintln!(
                    "epoch {:>3}/{}: loss {:.4}  train {}{val}  {:.1} s",
                    e.epoch,
                    c.epochs,
                    e.loss,
                    pct(e.train_accuracy),
                    e.seconds
                );
                Ok(())
            },
        );
        let trained = match trained {
            Ok(t) => t,
            Err(e) => return user_error(e),
        };
        let (w, acc) = match step(&trained.weights) {
            Ok(x) => x,
            Err(e) => return user_error(e),
        };
        rows.push((format!("+ fine-tuned {} epochs (kept epoch {})", trained.epochs.len(), trained.kept_epoch), acc));
        written = w;
    }
    println!("{}: accuracy on the {held_name} ({} examples) of {}", model.name, held.len(), ds.dir.display());
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (what, acc) in &rows {
        println!("  {what:<width$}  {}", pct(*acc));
    }
    let mut md: HashMap<String, String> = HashMap::new();
    md.insert("model".into(), model.name.clone());
    md.insert("source_blake3".into(), source_hash);
    md.insert("precision".into(), "ternary".into());
    md.insert("quantized_from".into(), fp32_path.display().to_string());
    md.insert("quant_rule".into(), rule.name().into());
    md.insert("fp32_accuracy".into(), format!("{before:.4}"));
    md.insert("test_accuracy".into(), format!("{:.4}", rows.last().map_or(0.0, |r| r.1)));
    md.insert("triton_version".into(), env!("CARGO_PKG_VERSION").into());
    md.extend(norm.to_metadata());
    let mut saved = written.clone();
    match train::scales(g, &written) {
        Ok(s) => saved.tensors.extend(s),
        Err(e) => return user_error(e),
    }
    let bytes = match saved.to_safetensors(Some(md)) {
        Ok(b) => b,
        Err(e) => return user_error(e),
    };
    if let Err(e) = triton::cache::write_atomic(&out, &bytes) {
        return user_error(format!("cannot write `{}`: {e}", out.display()));
    }
    println!("ternary weights -> {}", out.display());
    ExitCode::SUCCESS
}
