//! `triton train`: quantization-aware training of a `.tri` model on MNIST.
//!
//! Rules:
//! - The trained graph is the lowered, unoptimized one; its parameter names are the weights
//!   file's names. Gradients come from the gradient pass ([`triton_compiler::grad`]); ternary
//!   layers train latent f32 weights through their quantization rule with the straight-through
//!   estimator (at `--precision fp32` the latent weights are used as they are).
//! - Deterministic given the seed: initial weights, shuffling and shifts come from seeded
//!   ChaCha streams, and the kernels' sums do not depend on thread timing.
//! - A model whose output is a softmax over its classes trains on the logits before it
//!   ([`training_graph`]): the loss applies its own softmax, and twice would flatten the
//!   gradients. Its argmax, and so every accuracy, is the same either way.
//! - A loss that is not finite stops training with [`TrainError::Diverged`]; nothing is
//!   returned for the caller to save.
//! - Batch norms train on batch statistics and keep running statistics (momentum 0.1, the
//!   unbiased variance), which evaluation uses.

pub mod optim;

use std::time::{Duration, Instant};

use ndarray::ArrayD;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use triton_compiler::grad::{self, Backward, Mode};
use triton_compiler::interp::weights::scale_name;
use triton_compiler::interp::{Precision, Weights};
use triton_compiler::ir::Graph;
use triton_compiler::ir::ParamKind;

use crate::data::{self, CLASSES, Mnist, Normalize, Split};
pub use optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};

/// Everything a run depends on.
#[derive(Clone, Debug, serde::Serialize)]
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
    /// Random shifts of up to this many pixels (0: no augmentation).
    pub shift: usize,
    /// Train on the first `n` training images only.
    pub subset: Option<usize>,
}

fn precision_name<S: serde::Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub lr: f32,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Grad(#[from] grad::GradError),
    #[error(
        "the model's input must take one {rows}x{cols} image per row ([B, {px}], [B, 1, {rows}, {cols}], ...); it is {found}"
    )]
    Input { rows: usize, cols: usize, px: usize, found: String },
    #[error("the model's output must be [B, {CLASSES}] logits for MNIST's {CLASSES} classes; it is {0}")]
    Output(String),
    #[error("{0}")]
    Run(String),
    #[error("--batch-size must be at least 1")]
    Batch,
    #[error(
        "training diverged: the loss is {loss} at epoch {epoch}, batch {batch} (learning rate {lr}); nothing was written. Lower --lr (or check the weights given to --init)"
    )]
    Diverged { epoch: usize, batch: usize, loss: String, lr: String },
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
    pub weights: Weights,
    pub epochs: Vec<EpochLog>,
    pub wall: Duration,
}

/// The per-example input shape (without the batch dimension), checked against the images.
pub fn input_shape(g: &Graph, split: &Split) -> Result<Vec<usize>, TrainError> {
    let (_, id) = &g.inputs[0];
    let ty = &g.nodes[*id].ty;
    let fail = || TrainError::Input { rows: split.rows, cols: split.cols, px: split.pixels(), found: ty.to_string() };
    let dims: Option<Vec<usize>> = ty.shape[1..].iter().map(|d| d.as_known().map(|v| v as usize)).collect();
    let dims = dims.ok_or_else(fail)?;
    if g.inputs.len() != 1 || dims.iter().product::<usize>() != split.pixels() {
        return Err(fail());
    }
    Ok(dims)
}

pub fn check_output(g: &Graph) -> Result<(), TrainError> {
    let ty = &g.nodes[g.outputs[0]].ty;
    if ty.rank() != 2 || ty.shape[1].as_known() != Some(CLASSES as i64) {
        return Err(TrainError::Output(ty.to_string()));
    }
    Ok(())
}

/// Accuracy of `weights` on `split` (evaluation mode, the model's precision).
pub fn evaluate(
    g: &Graph,
    weights: &Weights,
    split: &Split,
    precision: Precision,
    norm: Normalize,
) -> Result<f64, TrainError> {
    let shape = input_shape(g, split)?;
    let params = grad::effective_params(g, weights, precision).map_err(|e| TrainError::Run(e.to_string()))?;
    let mut correct = 0;
    let order: Vec<usize> = (0..split.len()).collect();
    for chunk in order.chunks(500) {
        let (x, labels) =
            data::batch(split, chunk, &shape, norm, 0, None).map_err(|e| TrainError::Run(e.to_string()))?;
        let tape =
            grad::forward(g, &params, &[x], precision, Mode::Eval).map_err(|e| TrainError::Run(e.to_string()))?;
        correct += grad::softmax_cross_entropy(tape.output(g), &labels).map_err(grad::GradError::from)?.2;
    }
    Ok(correct as f64 / split.len().max(1) as f64)
}

/// Trains `g` from `init` on `data`; `progress` is called after every batch, `epoch_done`
/// after every epoch.
pub fn train(
    g: &Graph,
    init: Weights,
    data: &Mnist,
    cfg: &TrainConfig,
    mut progress: impl FnMut(Progress),
    mut epoch_done: impl FnMut(&EpochLog),
) -> Result<Trained, TrainError> {
    let start = Instant::now();
    if cfg.batch_size == 0 {
        return Err(TrainError::Batch);
    }
    let (g, _) = training_graph(g);
    let g = g.as_ref();
    let bw: Backward = grad::differentiate(g)?;
    check_output(g)?;
    let train_split = match cfg.subset {
        Some(n) => data.train.take(n),
        None => data.train.clone(),
    };
    let shape = input_shape(g, &train_split)?;
    // Latent values in parameter order (the optimizer updates them in place).
    let mut latent: Vec<ArrayD<f32>> = g
        .params
        .iter()
        .map(|p| {
            init.tensors
                .get(&p.name)
                .cloned()
                .ok_or_else(|| TrainError::Run(format!("no value for parameter `{}`", p.name)))
        })
        .collect::<Result<_, _>>()?;
    let decay: Vec<bool> = g.params.iter().map(|p| p.kind == ParamKind::Weight).collect();
    let mut opt = Optimizer::new(cfg.optim, g.params.len());
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_da7a);
    let batches = train_split.len().div_ceil(cfg.batch_size);
    let total = batches * cfg.epochs;
    let mut logs = Vec::new();
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train_split.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next_u32() as usize % (i + 1));
        }
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            lr = cfg.schedule.rate(cfg.lr, epoch * batches + b, total);
            let (x, labels) = data::batch(&train_split, chunk, &shape, cfg.normalize, cfg.shift, Some(&mut rng))
                .map_err(|e| TrainError::Run(e.to_string()))?;
            let params = grad::effective_values(g, &latent.iter().collect::<Vec<_>>(), cfg.precision)
                .map_err(grad::GradError::from)?;
            let tape = grad::forward(g, &params, &[x], cfg.precision, Mode::Train)
                .map_err(|e| TrainError::Run(e.to_string()))?;
            let (loss, dlogits, right) =
                grad::softmax_cross_entropy(tape.output(g), &labels).map_err(grad::GradError::from)?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    batch: b + 1,
                    loss: loss.to_string(),
                    lr: format!("{lr:e}"),
                });
            }
            let grads = grad::backward_pass(g, &bw, &tape, dlogits)?;
            update_running_stats(&mut latent, &tape.bn_updates);
            opt.step(&mut latent.iter_mut().collect::<Vec<_>>(), &grads, &decay, lr);
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
        let weights = to_weights(g, &latent);
        let test_accuracy = evaluate(g, &weights, &data.test, cfg.precision, cfg.normalize)?;
        let log = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        epoch_done(&log);
        logs.push(log);
    }
    if let Some(p) = latent.iter().position(|t| t.iter().any(|v| !v.is_finite())) {
        let last = logs.last().map_or(0.0, |l: &EpochLog| l.loss as f32);
        return Err(TrainError::Run(format!(
            "training diverged: parameter `{}` holds values that are not finite (last mean loss {last}); nothing was written. Lower --lr",
            g.params[p].name
        )));
    }
    Ok(Trained { weights: to_weights(g, &latent), epochs: logs, wall: start.elapsed() })
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
