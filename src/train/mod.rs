//! `triton train`: quantization-aware training of a `.tri` model on a dataset
//! ([`crate::data`]).
//!
//! Rules:
//! - The trained graph is the lowered, unoptimized one; its parameter names are the weights
//!   file's names. Gradients come from the gradient pass ([`triton_compiler::grad`]); ternary
//!   layers train latent f32 weights through their quantization rule with the straight-through
//!   estimator (at `--precision fp32` the latent weights are used as they are).
//! - The model's one input must take the dataset's examples ([`crate::data::fit`]) and its
//!   output be `[B, K]` logits with K the dataset's class count (at least the largest label
//!   plus one when the format does not fix the count); both are checked before training.
//! - Splits ([`splits`]): `--subset` keeps the first N training examples; then a validation
//!   split is held out of them (`--val-fraction`; by default 10% up to 5,000 examples, none
//!   below 200 examples), chosen by a fixed seeded permutation so every seed validates on the
//!   same examples. The normalization is computed from what is left for training.
//! - Keep-best: with a validation split, the weights returned are those of the epoch with the
//!   best validation accuracy (on ties, the lower validation loss; then the earliest), and `--patience N` stops after N epochs
//!   without improvement; without one, the last epoch's. The test split (when the dataset has
//!   one) is evaluated once, on the weights returned.
//! - Deterministic given the seed: initial weights, shuffling and augmentation come from seeded
//!   ChaCha streams, and the kernels' sums do not depend on thread timing; a run resumed from a
//!   checkpoint ([`checkpoint`]) continues bit for bit.
//! - A model whose output is a softmax over its classes trains on the logits before it
//!   ([`training_graph`]): the loss applies its own softmax, and twice would flatten the
//!   gradients. Its argmax, and so every accuracy, is the same either way.
//! - A loss that is not finite stops training with [`TrainError::Diverged`]; nothing is
//!   returned for the caller to save.
//! - Batch norms train on batch statistics and keep running statistics (momentum 0.1, the
//!   unbiased variance), which evaluation uses.

pub mod checkpoint;
pub mod defaults;
pub mod optim;
pub mod quantize;

use std::time::{Duration, Instant};

use ndarray::ArrayD;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use triton_compiler::grad::{self, Backward, Mode};
use triton_compiler::interp::weights::scale_name;
use triton_compiler::interp::{Precision, Weights};
use triton_compiler::ir::Graph;
use triton_compiler::ir::ParamKind;

use crate::data::{self, Augment, DataError, Dataset, Normalization, Normalize, Split};
pub use checkpoint::Checkpoint;
pub use optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};

/// Everything a run depends on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub optim: OptimConfig,
    pub schedule: Schedule,
    #[serde(serialize_with = "precision_name")]
    pub precision: Precision,
    pub seed: u64,
    pub normalize: Normalize,
    pub augment: Augment,
    /// Label smoothing of the loss's targets (0: none).
    pub label_smoothing: f32,
    /// Train on the first `n` training examples only.
    pub subset: Option<usize>,
    /// The share of the training examples held out for validation (`None`: by size).
    pub val_fraction: Option<f64>,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
    /// Use this normalization instead of computing `normalize` from the training split (to
    /// fine-tune a model trained with it).
    pub fixed_normalization: Option<Normalization>,
}

impl TrainConfig {
    /// A configuration with the command line's defaults for `epochs` and `precision`.
    pub fn new(epochs: usize, precision: Precision) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: 128,
            lr: 2e-3,
            optim: OptimConfig::new(OptimizerKind::Adam, 0.0),
            schedule: Schedule::Cosine,
            precision,
            seed: 0,
            normalize: Normalize::Dataset,
            augment: Augment::default(),
            label_smoothing: 0.0,
            subset: None,
            val_fraction: None,
            patience: None,
            fixed_normalization: None,
        }
    }
}

fn precision_name<S: serde::Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    /// Accuracy on the validation split, when there is one.
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    pub seconds: f64,
    /// Whether this epoch's weights are the best so far (always, without validation).
    pub best: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Grad(#[from] grad::GradError),
    #[error("{0}")]
    Data(#[from] DataError),
    #[error("the model must take one input of known size per example ({found}), to be fed the dataset's examples")]
    Inputs { found: String },
    #[error("the model's output must be [B, {classes}] logits for the dataset's {classes} classes{why}; it is {found}")]
    Output { found: String, classes: usize, why: String },
    #[error("{0}")]
    Run(String),
    #[error("--batch-size must be at least 1")]
    Batch,
    #[error(
        "training diverged: the loss is {loss} at epoch {epoch}, batch {batch} (learning rate {lr}); nothing was written. Lower --lr (or check the weights given to --weights)"
    )]
    Diverged { epoch: usize, batch: usize, loss: String, lr: String },
    #[error("{0}")]
    Checkpoint(String),
}

/// The graph training runs: `g` itself, or, when its output is a softmax over the class axis,
/// `g` answering the logits before it (the second value says whether it was stripped).
pub fn training_graph(g: &Graph) -> (std::borrow::Cow<'_, Graph>, bool) {
    let Some(&out) = g.outputs.first() else { return (std::borrow::Cow::Borrowed(g), false) };
    let node = &g.nodes[out];
    match node.op {
        triton_compiler::ir::Op::Softmax { axis } if g.outputs.len() == 1 && axis + 1 == node.ty.rank() => {
            let mut stripped = g.clone();
            stripped.outputs[0] = node.args[0];
            (std::borrow::Cow::Owned(stripped), true)
        }
        _ => (std::borrow::Cow::Borrowed(g), false),
    }
}

/// What a step reports to the caller (a progress bar).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub accuracy: f64,
}

/// A trained model's weights and its history.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The weights kept: the best validation epoch's, else the last epoch's.
    pub weights: Weights,
    /// The epoch (from 1) whose weights these are.
    pub kept_epoch: usize,
    pub epochs: Vec<EpochLog>,
    pub normalization: Normalization,
    /// Examples trained on and held out for validation.
    pub train_size: usize,
    pub val_size: usize,
    /// Accuracy of the kept weights on the validation and test splits, where they exist.
    pub val_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// Whether `--patience` stopped the run before its last epoch.
    pub stopped_early: bool,
    pub wall: Duration,
}

/// The training, validation and test examples of a run.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Split,
    pub val: Option<Split>,
    pub test: Option<Split>,
}

/// How many of `n` training examples are held out for validation by default.
pub fn default_val(n: usize) -> usize {
    if n < 200 { 0 } else { (n / 10).min(5000) }
}

/// The run's splits ([module docs](self)).
pub fn splits(ds: &Dataset, cfg: &TrainConfig) -> Result<Splits, TrainError> {
    let train = match cfg.subset {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let n = train.len();
    let n_val = match cfg.val_fraction {
        Some(f) => ((n as f64 * f).round() as usize).min(n.saturating_sub(1)),
        None => default_val(n),
    };
    if n_val == 0 {
        return Ok(Splits { train, val: None, test: ds.test.clone() });
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x7a11_da7a);
    for i in (1..n).rev() {
        order.swap(i, rng.next_u32() as usize % (i + 1));
    }
    let mut val: Vec<usize> = order[..n_val].to_vec();
    let mut keep: Vec<usize> = order[n_val..].to_vec();
    val.sort_unstable();
    keep.sort_unstable();
    Ok(Splits { train: train.select(&keep), val: Some(train.select(&val)), test: ds.test.clone() })
}

/// The model's per-example input dims and its input's name and type (for messages).
pub fn input_dims(g: &Graph) -> Result<(Vec<usize>, String), TrainError> {
    let describe = || g.inputs.iter().map(|(n, id)| format!("{n}: {}", g.nodes[*id].ty)).collect::<Vec<_>>().join(", ");
    let [(name, id)] = &g.inputs[..] else { return Err(TrainError::Inputs { found: describe() }) };
    let ty = &g.nodes[*id].ty;
    let dims: Option<Vec<usize>> = ty.shape.iter().skip(1).map(|d| d.as_known().map(|v| v as usize)).collect();
    let dims = dims.ok_or_else(|| TrainError::Inputs { found: describe() })?;
    Ok((dims, format!("{name}: {ty}")))
}

/// Checks the model against the dataset: its input takes the examples, its output has the
/// classes. Returns the per-example input dims.
pub fn check_model(g: &Graph, ds: &Dataset) -> Result<Vec<usize>, TrainError> {
    let (dims, input) = input_dims(g)?;
    data::fit(&dims, ds.train.dims, &input)?;
    let ty = &g.nodes[g.outputs[0]].ty;
    let k = ty.shape.get(1).and_then(|d| d.as_known()).map(|k| k as usize);
    let fits = match k {
        Some(k) if ty.rank() == 2 && g.outputs.len() == 1 => {
            if ds.classes_known {
                k == ds.classes
            } else {
                k >= ds.classes
            }
        }
        _ => false,
    };
    if !fits {
        let why = if ds.classes_known {
            format!(" ({})", ds.format.name())
        } else {
            format!(" (its labels run from 0 to {})", ds.classes.saturating_sub(1))
        };
        return Err(TrainError::Output { found: ty.to_string(), classes: ds.classes, why });
    }
    Ok(dims)
}

/// Accuracy of `weights` on `split` (evaluation mode, the model's precision); `dims` are the
/// model's per-example input dims.
pub fn evaluate(
    g: &Graph,
    weights: &Weights,
    split: &Split,
    dims: &[usize],
    precision: Precision,
    norm: &Normalization,
) -> Result<f64, TrainError> {
    let params = grad::effective_params(g, weights, precision).map_err(|e| TrainError::Run(e.to_string()))?;
    Ok(evaluate_params(g, &params, split, dims, precision, norm)?.0)
}

fn evaluate_params(
    g: &Graph,
    params: &[ArrayD<f32>],
    split: &Split,
    dims: &[usize],
    precision: Precision,
    norm: &Normalization,
) -> Result<(f64, f64), TrainError> {
    let (mut correct, mut loss) = (0, 0.0f64);
    let order: Vec<usize> = (0..split.len()).collect();
    for chunk in order.chunks(500) {
        let (x, labels) = data::batch(split, chunk, dims, norm, &Augment::default(), None)?;
        let tape = grad::forward(g, params, &[x], precision, Mode::Eval).map_err(|e| TrainError::Run(e.to_string()))?;
        let (l, _, right) = grad::softmax_cross_entropy(tape.output(g), &labels).map_err(grad::GradError::from)?;
        correct += right;
        loss += f64::from(l) * chunk.len() as f64;
    }
    let n = split.len().max(1) as f64;
    Ok((correct as f64 / n, loss / n))
}

/// The state of a run between epochs: everything a checkpoint holds ([`checkpoint`]).
#[derive(Clone, Debug)]
pub struct State {
    /// Latent values in parameter order (the optimizer updates them in place).
    pub latent: Vec<ArrayD<f32>>,
    pub opt: Optimizer,
    /// Position of the shuffling and augmentation stream.
    pub rng_word_pos: u128,
    /// Epochs completed.
    pub epochs_done: usize,
    /// The best validation epoch so far (from 1), its accuracy and loss, and its latent values.
    pub best: Option<(usize, f64, f64, Vec<ArrayD<f32>>)>,
    /// Epochs since the best one.
    pub since_best: usize,
    pub logs: Vec<EpochLog>,
}

impl State {
    /// A fresh run from `init`.
    pub fn start(g: &Graph, init: &Weights, cfg: &TrainConfig) -> Result<State, TrainError> {
        let (g, _) = training_graph(g);
        let latent = g
            .params
            .iter()
            .map(|p| {
                init.tensors
                    .get(&p.name)
                    .cloned()
                    .ok_or_else(|| TrainError::Run(format!("no value for parameter `{}`", p.name)))
            })
            .collect::<Result<_, _>>()?;
        Ok(State {
            latent,
            opt: Optimizer::new(cfg.optim, g.params.len()),
            rng_word_pos: 0,
            epochs_done: 0,
            best: None,
            since_best: 0,
            logs: Vec::new(),
        })
    }
}

fn rng_of(cfg: &TrainConfig, word_pos: u128) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_da7a);
    rng.set_word_pos(word_pos);
    rng
}

/// Trains `g` from `state` ([`State::start`], or a checkpoint's) on `ds`; `progress` is called
/// after every batch, `epoch_done` after every epoch with the state to checkpoint (an error
/// it returns stops the run).
pub fn train(
    g: &Graph,
    mut state: State,
    ds: &Dataset,
    cfg: &TrainConfig,
    mut progress: impl FnMut(Progress),
    mut epoch_done: impl FnMut(&EpochLog, &State) -> Result<(), TrainError>,
) -> Result<Trained, TrainError> {
    let start = Instant::now();
    if cfg.batch_size == 0 {
        return Err(TrainError::Batch);
    }
    let (g, _) = training_graph(g);
    let g = g.as_ref();
    let bw: Backward = grad::differentiate(g)?;
    let dims = check_model(g, ds)?;
    let sp = splits(ds, cfg)?;
    if cfg.augment.pad > 0 || cfg.augment.flip {
        let [_, h, w] = sp.train.dims;
        if h == 1 && w == 1 {
            return Err(TrainError::Data(DataError::Usage(format!(
                "--augment {} moves pixels, but the dataset's examples are {} (not images)",
                cfg.augment.describe(),
                sp.train.describe_dims()
            ))));
        }
    }
    let norm = cfg.fixed_normalization.clone().unwrap_or_else(|| Normalization::of(cfg.normalize, &sp.train));
    if !norm.fits(sp.train.dims[0]) {
        return Err(TrainError::Run(format!(
            "the normalization has {} channels; the dataset's examples have {}",
            norm.channels(),
            sp.train.dims[0]
        )));
    }
    if state.latent.len() != g.params.len() {
        return Err(TrainError::Checkpoint(format!(
            "the state holds {} parameters; the model has {}",
            state.latent.len(),
            g.params.len()
        )));
    }
    let decay: Vec<bool> = g.params.iter().map(|p| p.kind == ParamKind::Weight).collect();
    let mut rng = rng_of(cfg, state.rng_word_pos);
    let batches = sp.train.len().div_ceil(cfg.batch_size);
    let total = batches * cfg.epochs;
    let mut stopped_early = false;
    while state.epochs_done < cfg.epochs {
        let epoch = state.epochs_done;
        if let (Some(p), Some(_)) = (cfg.patience, &sp.val)
            && state.since_best >= p
            && state.best.is_some()
        {
            stopped_early = true;
            break;
        }
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..sp.train.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next_u32() as usize % (i + 1));
        }
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            lr = cfg.schedule.rate(cfg.lr, epoch * batches + b, total);
            let (x, labels) = data::batch(&sp.train, chunk, &dims, &norm, &cfg.augment, Some(&mut rng))?;
            let params = grad::effective_values(g, &state.latent.iter().collect::<Vec<_>>(), cfg.precision)
                .map_err(grad::GradError::from)?;
            let tape = grad::forward(g, &params, &[x], cfg.precision, Mode::Train)
                .map_err(|e| TrainError::Run(e.to_string()))?;
            let (loss, dlogits, right) =
                grad::softmax_cross_entropy_smoothed(tape.output(g), &labels, cfg.label_smoothing)
                    .map_err(grad::GradError::from)?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    batch: b + 1,
                    loss: loss.to_string(),
                    lr: format!("{lr:e}"),
                });
            }
            let grads = grad::backward_pass(g, &bw, &tape, dlogits)?;
            update_running_stats(&mut state.latent, &tape.bn_updates);
            state.opt.step(&mut state.latent.iter_mut().collect::<Vec<_>>(), &grads, &decay, lr);
            loss_sum += f64::from(loss) * chunk.len() as f64;
            correct += right;
            seen += chunk.len();
            progress(Progress {
                epoch,
                batch: b + 1,
                batches,
                loss: loss_sum / seen as f64,
                accuracy: correct as f64 / seen as f64,
            });
        }
        if let Some(p) = state.latent.iter().position(|t| t.iter().any(|v| !v.is_finite())) {
            return Err(TrainError::Run(format!(
                "training diverged: parameter `{}` holds values that are not finite after epoch {} (mean loss {}); nothing was written. Lower --lr",
                g.params[p].name,
                epoch + 1,
                loss_sum / seen.max(1) as f64
            )));
        }
        let val = match &sp.val {
            Some(v) => {
                let params = grad::effective_values(g, &state.latent.iter().collect::<Vec<_>>(), cfg.precision)
                    .map_err(grad::GradError::from)?;
                Some(evaluate_params(g, &params, v, &dims, cfg.precision, &norm)?)
            }
            None => None,
        };
        let val_accuracy = val.map(|v| v.0);
        let best = match (val, &state.best) {
            (None, _) => true,
            (Some((a, l)), Some((_, b, bl, _))) => a > *b || (a == *b && l < *bl),
            (Some(_), None) => true,
        };
        state.epochs_done += 1;
        if best {
            state.best = val.map(|(a, l)| (epoch + 1, a, l, state.latent.clone()));
            state.since_best = 0;
        } else {
            state.since_best += 1;
        }
        state.rng_word_pos = rng.get_word_pos();
        let log = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_accuracy,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
            best,
        };
        state.logs.push(log.clone());
        epoch_done(&log, &state)?;
    }
    let (kept_epoch, val_accuracy, kept) = match &state.best {
        Some((e, a, _, latent)) => (*e, Some(*a), latent.as_slice()),
        None => (state.epochs_done, None, state.latent.as_slice()),
    };
    let weights = to_weights(g, kept);
    let test_accuracy = match &sp.test {
        Some(t) => Some(evaluate(g, &weights, t, &dims, cfg.precision, &norm)?),
        None => None,
    };
    Ok(Trained {
        weights,
        kept_epoch,
        epochs: state.logs.clone(),
        normalization: norm,
        train_size: sp.train.len(),
        val_size: sp.val.as_ref().map_or(0, Split::len),
        val_accuracy,
        test_accuracy,
        stopped_early,
        wall: start.elapsed(),
    })
}

fn to_weights(g: &Graph, latent: &[ArrayD<f32>]) -> Weights {
    Weights { tensors: g.params.iter().zip(latent).map(|(p, t)| (p.name.clone(), t.clone())).collect() }
}

/// Folds batch statistics into the running buffers (momentum 0.1).
fn update_running_stats(latent: &mut [ArrayD<f32>], updates: &[(usize, usize, Vec<f32>, Vec<f32>)]) {
    const MOMENTUM: f32 = 0.1;
    for (mi, vi, mean, var) in updates {
        for (index, batch) in [(*mi, mean), (*vi, var)] {
            for (r, b) in latent[index].iter_mut().zip(batch) {
                *r = (1.0 - MOMENTUM) * *r + MOMENTUM * b;
            }
        }
    }
}

/// The per-output-channel scales of every quantized weight, under their [`scale_name`]s.
pub fn scales(g: &Graph, weights: &Weights) -> Result<Vec<(String, ArrayD<f32>)>, TrainError> {
    let mut out = Vec::new();
    for p in &g.params {
        let (Some(rule), Some(w)) = (p.quant, weights.tensors.get(&p.name)) else { continue };
        let n = p.shape.first().copied().unwrap_or(1) as usize;
        let m = triton_compiler::grad::kernels::rows(w, w.len() / n.max(1)).map_err(grad::GradError::from)?;
        let q = triton_compiler::interp::quant::quantize(m.view(), rule);
        out.push((scale_name(&g.params, &p.name), q.scale.into_dyn()));
    }
    Ok(out)
}
