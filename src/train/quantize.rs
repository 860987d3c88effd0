//! Post-training ternarization (`triton quantize`): a model's FP32 weights made ternary per
//! output channel, calibrated, optionally fine-tuned.
//!
//! Rules:
//! - Every quantized (`trit`) weight is ternarized per output channel by a rule: the one its
//!   layer declares (`quant = "absmean"` by default), or another one asked for. The weights
//!   written are latent values that the model's declared rule quantizes to exactly the chosen
//!   rule's codes ([`bake`]: for a channel with nonzero fraction `nz` and scale `a`, `a * code
//!   / nz`, whose absmean is `a` and whose codes round back), so `compile` reproduces them.
//! - Calibration re-estimates batch-norm running statistics on training data with the ternary
//!   weights in place ([`recalibrate`]: a cumulative average over the batches). The engine
//!   quantizes activations per sample at run time (no static activation scales), so there is
//!   nothing else to calibrate.
//! - Every accuracy is measured the way `compile` will run the weights written.

use ndarray::{ArrayD, Axis};
use triton_compiler::grad::{self, Mode};
use triton_compiler::interp::{Precision, Weights};
use triton_compiler::ir::{Graph, QuantRule};

use super::{TrainError, training_graph};
use crate::data::{self, Augment, Normalization, Split};

/// `g` with every quantized weight's rule replaced by `rule`.
pub fn with_rule(g: &Graph, rule: QuantRule) -> Graph {
    let mut out = g.clone();
    for p in &mut out.params {
        if p.quant.is_some() {
            p.quant = Some(rule);
        }
    }
    out
}

/// The layers (weights) whose declared rule is not `rule`.
pub fn declared_otherwise(g: &Graph, rule: QuantRule) -> Vec<String> {
    g.params
        .iter()
        .filter(|p| p.quant.is_some_and(|q| q != rule))
        .map(|p| format!("{} ({})", p.name, p.quant.map_or("", |q| q.name())))
        .collect()
}

/// Latent weights that `g`'s declared rules quantize to `rule`'s ternary values (the weights
/// themselves where the rules agree).
pub fn bake(g: &Graph, weights: &Weights, rule: QuantRule) -> Result<Weights, TrainError> {
    let mut out = weights.clone();
    for p in &g.params {
        let Some(declared) = p.quant else { continue };
        if declared == rule {
            continue;
        }
        let Some(w) = weights.tensors.get(&p.name) else { continue };
        let n = p.shape.first().copied().unwrap_or(1) as usize;
        let m = grad::kernels::rows(w, w.len() / n.max(1)).map_err(grad::GradError::from)?;
        let q = triton_compiler::interp::quant::quantize(m.view(), rule);
        let mut baked = m.clone();
        for (r, mut row) in baked.axis_iter_mut(Axis(0)).enumerate() {
            let codes = q.codes.index_axis(Axis(0), r);
            let nz = codes.iter().filter(|c| **c != 0).count() as f32 / codes.len().max(1) as f32;
            let s = q.scale[r];
            for (v, c) in row.iter_mut().zip(codes.iter()) {
                *v = if nz > 0.0 { s * f32::from(*c) / nz } else { 0.0 };
            }
        }
        let shaped = baked.into_shape_with_order(w.raw_dim()).map_err(|e| TrainError::Run(e.to_string()))?;
        out.tensors.insert(p.name.clone(), shaped);
    }
    Ok(out)
}

/// Re-estimates every batch norm's running statistics on up to `max_examples` of `split`
/// with the model at `precision` (a cumulative average of the batch statistics).
pub fn recalibrate(
    g: &Graph,
    weights: &Weights,
    split: &Split,
    dims: &[usize],
    norm: &Normalization,
    precision: Precision,
    max_examples: usize,
) -> Result<(Weights, usize), TrainError> {
    let (g, _) = training_graph(g);
    let g = g.as_ref();
    let params = grad::effective_params(g, weights, precision).map_err(|e| TrainError::Run(e.to_string()))?;
    let order: Vec<usize> = (0..split.len().min(max_examples)).collect();
    let mut sums: Vec<(usize, usize, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut batches = 0usize;
    for chunk in order.chunks(256) {
        let (x, _) = data::batch(split, chunk, dims, norm, &Augment::default(), None)?;
        let tape =
            grad::forward(g, &params, &[x], precision, Mode::Train).map_err(|e| TrainError::Run(e.to_string()))?;
        if sums.is_empty() {
            sums =
                tape.bn_updates.iter().map(|(m, v, a, b)| (*m, *v, vec![0.0; a.len()], vec![0.0; b.len()])).collect();
        }
        for (acc, (_, _, mean, var)) in sums.iter_mut().zip(&tape.bn_updates) {
            acc.2.iter_mut().zip(mean).for_each(|(s, v)| *s += f64::from(*v));
            acc.3.iter_mut().zip(var).for_each(|(s, v)| *s += f64::from(*v));
        }
        batches += 1;
    }
    let mut out = weights.clone();
    for (mi, vi, mean, var) in &sums {
        for (index, total) in [(*mi, mean), (*vi, var)] {
            let name = &g.params[index].name;
            let shape = out
                .tensors
                .get(name)
                .map(|t| t.raw_dim())
                .ok_or_else(|| TrainError::Run(format!("no value for `{name}`")))?;
            let values: Vec<f32> = total.iter().map(|s| (s / batches.max(1) as f64) as f32).collect();
            let t = ArrayD::from_shape_vec(shape, values).map_err(|e| TrainError::Run(e.to_string()))?;
            out.tensors.insert(name.clone(), t);
        }
    }
    Ok((out, sums.len()))
}
