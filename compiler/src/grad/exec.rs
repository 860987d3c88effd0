//! Running a graph for training: forward with a tape, then the backward graph.
//!
//! Rules:
//! - [`forward`] keeps every node's value (and what each op's backward needs: convolution
//!   columns, max-pool argmax, batch-norm statistics) in a [`Tape`].
//! - In [`Mode::Train`] batch norm normalises with the batch's statistics and reports them
//!   ([`Tape::bn_updates`]) for the caller to fold into the running buffers; in
//!   [`Mode::Eval`] it uses the buffers, as inference does.
//! - [`backward_pass`] returns one gradient per parameter (`None` for parameters that are not
//!   trained or do not reach the output), with respect to the value the parameter took in the
//!   forward pass; for quantized weights that is also the latent weight's gradient (STE).

use ndarray::{Array2, ArrayD, Axis, IxDyn, Slice, Zip};
use triton_runtime::DType;

use super::backward::{Backward, GradError};
use super::kernels::{self, BnSaved};
use crate::interp::{Precision, RunError, bind_inputs, eval_dim, quantize_i8};
use crate::invariant::{Broken, Invariant};
use crate::ir::{Graph, Op, UnaryOp};
use crate::reference;
use crate::weights::{Weights, quant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

#[derive(Clone, Debug)]
enum Aux {
    None,
    Argmax(Vec<usize>),
    Bn(BnSaved),
}

/// Values of one forward pass.
#[derive(Clone, Debug)]
pub struct Tape {
    pub values: Vec<ArrayD<f32>>,
    aux: Vec<Aux>,
    /// Training-mode batch norms: (mean buffer, var buffer) parameter indices, batch mean and
    /// unbiased batch variance.
    pub bn_updates: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
}

impl Tape {
    /// The graph's (single) output.
    pub fn output<'a>(&'a self, g: &Graph) -> &'a ArrayD<f32> {
        &self.values[g.outputs[0].index()]
    }
}

/// The value each parameter takes at `precision`: latent weights at FP32; quantized weights
/// as `scale * codes` of their rule (fake quantization) in ternary.
pub fn effective_params(g: &Graph, weights: &Weights, precision: Precision) -> Result<Vec<ArrayD<f32>>, RunError> {
    let latent: Vec<&ArrayD<f32>> = g
        .params
        .iter()
        .map(|p| weights.tensors.get(&p.name).ok_or_else(|| RunError::MissingWeight(p.name.clone())))
        .collect::<Result<_, _>>()?;
    Ok(effective_values(g, &latent, precision)?)
}

/// [`effective_params`] from latent values in parameter order.
pub fn effective_values(g: &Graph, latent: &[&ArrayD<f32>], precision: Precision) -> Result<Vec<ArrayD<f32>>, Broken> {
    g.params
        .iter()
        .zip(latent)
        .map(|(p, w)| match (precision, p.dtype, p.quant) {
            (Precision::Ternary, DType::Trit | DType::I8, Some(rule)) => {
                let n = p.shape.first().copied().unwrap_or(1) as usize;
                let m = kernels::rows(w, w.len() / n.max(1))?;
                let q = quant::quantize(m.view(), rule);
                let mut v = q.codes.mapv(f32::from);
                for (mut row, s) in v.outer_iter_mut().zip(q.scale.iter()) {
                    row.mapv_inplace(|c| c * s);
                }
                v.into_shape_with_order(IxDyn(w.shape())).invariant("codes have the weight's size")
            }
            _ => Ok((*w).clone()),
        })
        .collect()
}

/// Runs `g` forward, keeping what the backward pass needs.
pub fn forward(
    g: &Graph,
    params: &[ArrayD<f32>],
    inputs: &[ArrayD<f32>],
    precision: Precision,
    mode: Mode,
) -> Result<Tape, RunError> {
    let syms = bind_inputs(g, inputs)?;
    let mut values: Vec<ArrayD<f32>> = Vec::with_capacity(g.nodes.len());
    let mut aux = Vec::with_capacity(g.nodes.len());
    let mut bn_updates = Vec::new();
    for (_, node) in g.nodes.iter() {
        let arg = |i: usize| &values[node.args[i].index()];
        let mut extra = Aux::None;
        let v = match &node.op {
            Op::Input { index } => inputs.get(*index).invariant("the graph's inputs were bound")?.clone(),
            Op::Param { index } => params.get(*index).invariant("one value per parameter")?.clone(),
            Op::Const { value } => ArrayD::from_elem(IxDyn(&[]), *value),
            Op::Matmul => kernels::matmul(arg(0), arg(1))?,
            Op::Conv2d(a) => kernels::conv2d(arg(0), arg(1), *a)?,
            Op::BatchNorm { eps } => match mode {
                Mode::Eval => reference::batch_norm(arg(0), arg(1), arg(2), arg(3), arg(4), *eps)?,
                Mode::Train => {
                    let (y, saved, mean, var) = kernels::batch_norm_train(arg(0), arg(1), arg(2), *eps)?;
                    let buffer = |i: usize| match g.nodes[node.args[i]].op {
                        Op::Param { index } => Some(index),
                        _ => None,
                    };
                    if let (Some(m), Some(v)) = (buffer(3), buffer(4)) {
                        bn_updates.push((m, v, mean, var));
                    }
                    extra = Aux::Bn(saved);
                    y
                }
            },
            Op::Unary(u) => triton_runtime::ops::unary_array(*u, arg(0)),
            Op::Binary(b) => {
                let (x, y) = (arg(0), arg(1));
                let shape = node_shape(&node.ty, &syms, x, y);
                match kernels::binary_per_channel(*b, x, y, &shape) {
                    Some(out) => out,
                    None => {
                        let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
                        Zip::from(&mut out).and_broadcast(x).and_broadcast(y).for_each(|o, &p, &q| *o = b.apply(p, q));
                        out
                    }
                }
            }
            Op::Softmax { axis } => triton_runtime::ops::softmax(arg(0), *axis),
            Op::Permute { perm } => crate::reference::permute(arg(0), perm),
            Op::BatchMatmul => kernels::bmm(arg(0), arg(1), false, false)?,
            Op::CausalMask => crate::reference::causal_mask(arg(0)),
            Op::Embedding => crate::reference::embedding(arg(0), arg(1))?,
            Op::Rope { theta } => crate::reference::rope(arg(0), *theta, false),
            Op::Slice { axis, start, end } => crate::reference::slice(arg(0), *axis, *start, *end),
            Op::Reduce { axis, mean } => {
                triton_runtime::ops::reduce_axis(arg(0), *axis, *mean).invariant("a reduced axis exists (checked)")?
            }
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => {
                let beta =
                    matches!(node.op, Op::LayerNorm { .. }).then(|| arg(2).iter().copied().collect::<Vec<f32>>());
                let gamma: Vec<f32> = arg(1).iter().copied().collect();
                triton_runtime::ops::norm_rows(arg(0), &gamma, beta.as_deref(), *eps, beta.is_none())
                    .invariant("a normalization's vectors have the last axis' length (checked)")?
            }
            Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
                let max = matches!(node.op, Op::MaxPool2d(_));
                let (y, argmax) = reference::pool(arg(0), a, max)?;
                extra = Aux::Argmax(argmax);
                y
            }
            Op::GlobalAvgPool => {
                let x = arg(0);
                let (b, c) = (x.shape()[0], x.shape()[1]);
                kernels::rows(x, x.len() / (b * c).max(1))?
                    .mean_axis(Axis(1))
                    .invariant("a pooled image has at least one pixel")?
                    .into_shape_with_order(IxDyn(&[b, c]))
                    .invariant("one mean per sample and channel")?
            }
            Op::Reshape { .. } => {
                let shape: Vec<usize> =
                    node.ty.shape.iter().map(|d| eval_dim(d, &syms).unwrap_or(0) as usize).collect();
                arg(0)
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))
                    .invariant("a reshape keeps the element count")?
            }
            Op::Concat { axis } => {
                let views: Vec<_> = node.args.iter().map(|a| values[a.index()].view()).collect();
                ndarray::concatenate(Axis(*axis), &views).invariant("concatenated shapes agree")?
            }
            Op::QuantizeI8 { scale } => match precision {
                Precision::Fp32 => arg(0).clone(),
                Precision::Ternary => quantize_i8(arg(0), *scale)?.to_f32(),
            },
            Op::Dequantize => arg(0).clone(),
            Op::Fused(_) => return Err(Broken("training runs unoptimized graphs (no fused ops)").into()),
        };
        values.push(v);
        aux.push(extra);
    }
    Ok(Tape { values, aux, bn_updates })
}

/// The output shape of a broadcasting op (the type's dims, evaluated).
fn node_shape(
    ty: &crate::ir::TensorType,
    syms: &std::collections::HashMap<String, i64>,
    x: &ArrayD<f32>,
    y: &ArrayD<f32>,
) -> Vec<usize> {
    let rank = x.ndim().max(y.ndim());
    (0..rank)
        .map(|i| {
            let dim = |a: &ArrayD<f32>| (i + a.ndim()).checked_sub(rank).map_or(1, |j| a.shape()[j]);
            let known = ty.shape.get(i).and_then(|d| eval_dim(d, syms)).map(|v| v as usize);
            known.unwrap_or_else(|| dim(x).max(dim(y)))
        })
        .collect()
}

fn add_into(slot: &mut Option<ArrayD<f32>>, g: ArrayD<f32>) {
    match slot {
        Some(acc) => *acc += &g,
        None => *slot = Some(g),
    }
}

/// Runs the backward graph from the output gradient `dy`; returns each parameter's gradient.
pub fn backward_pass(
    g: &Graph,
    bw: &Backward,
    tape: &Tape,
    dy: ArrayD<f32>,
) -> Result<Vec<Option<ArrayD<f32>>>, GradError> {
    let mut grads: Vec<Option<ArrayD<f32>>> = vec![None; g.nodes.len()];
    grads[g.outputs[0].index()] = Some(dy);
    for step in &bw.steps {
        let node = &g.nodes[step.node];
        let Some(dy) = grads[step.node.index()].take() else { continue };
        let val = |i: usize| &tape.values[node.args[i].index()];
        let wants = |i: usize| step.wrt.contains(&i);
        let mut out: Vec<(usize, ArrayD<f32>)> = Vec::new();
        match &node.op {
            Op::Matmul => {
                let (dx, dw) = kernels::matmul_grad(val(0), val(1), &dy, [wants(0), wants(1)])?;
                out.extend(dx.map(|d| (0, d)));
                out.extend(dw.map(|d| (1, d)));
            }
            Op::Conv2d(a) => {
                let (dx, dw) = kernels::conv2d_grad(val(0), val(1), &dy, *a, wants(0))?;
                out.extend(dx.map(|d| (0, d)));
                out.push((1, dw));
            }
            Op::BatchNorm { .. } => {
                let Aux::Bn(saved) = &tape.aux[step.node.index()] else {
                    return Err(Broken("backward runs on a training-mode tape").into());
                };
                let (dx, dgamma, dbeta) = kernels::batch_norm_grad(saved, val(1), &dy)?;
                out.extend([(0, dx), (1, dgamma), (2, dbeta)]);
            }
            Op::Unary(u) => {
                let y = &tape.values[step.node.index()];
                let mut dx = dy;
                match u {
                    // The op chosen outside the loop (relu's derivative needs only x).
                    UnaryOp::Relu => Zip::from(&mut dx)
                        .and(val(0))
                        .for_each(|d, &x| *d *= kernels::unary_grad(UnaryOp::Relu, x, 0.0)),
                    _ => {
                        Zip::from(&mut dx).and(val(0)).and(y).for_each(|d, &x, &y| *d *= kernels::unary_grad(*u, x, y))
                    }
                }
                out.push((0, dx));
            }
            Op::Binary(b) => {
                let (da, db) = kernels::binary_grad(*b, val(0), val(1), dy);
                out.extend([(0, da), (1, db)]);
            }
            Op::Softmax { axis } => {
                out.push((0, kernels::softmax_grad(&tape.values[step.node.index()], &dy, *axis)));
            }
            Op::Permute { perm } => {
                out.push((0, crate::reference::permute(&dy, &crate::reference::inverse_permutation(perm))));
            }
            // Masked entries are constants: their gradient is zero (the mask of the gradient,
            // with 0 where the value became -inf).
            Op::CausalMask => {
                let masked = crate::reference::causal_mask(&ArrayD::zeros(dy.raw_dim()));
                let mut d = dy.as_standard_layout().into_owned();
                Zip::from(&mut d).and(&masked).for_each(|g, m| {
                    if *m == f32::NEG_INFINITY {
                        *g = 0.0;
                    }
                });
                out.push((0, d));
            }
            // Every input along the axis receives the output's gradient (divided by the count
            // for the mean).
            Op::Reduce { axis, mean } => {
                let x = val(0);
                let n = if *mean { x.shape()[*axis].max(1) as f32 } else { 1.0 };
                let d = dy.insert_axis(Axis(*axis));
                let full = d.broadcast(x.raw_dim()).invariant("the reduced axis broadcasts back")?.mapv(|v| v / n);
                out.push((0, full));
            }
            // The slice's positions receive the output's gradient, the others zero.
            Op::Slice { axis, start, end } => {
                let mut dx = ArrayD::<f32>::zeros(val(0).raw_dim());
                dx.slice_axis_mut(Axis(*axis), (*start..*end).into()).assign(&dy);
                out.push((0, dx));
            }
            // A rotation per pair: its gradient is the transposed rotation.
            Op::Rope { theta } => out.push((0, crate::reference::rope(&dy, *theta, true))),
            // The ids are integers (no gradient); each table row gathers the gradients of the
            // positions that read it.
            Op::Embedding => {
                if wants(1) {
                    out.push((1, kernels::embedding_grad(val(0), val(1).shape(), &dy)?));
                }
            }
            // da = dy b^T, db = a^T dy, batched.
            Op::BatchMatmul => {
                if wants(0) {
                    out.push((0, kernels::bmm(&dy, val(1), false, true)?));
                }
                if wants(1) {
                    out.push((1, kernels::bmm(val(0), &dy, true, false)?));
                }
            }
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => {
                let rms = matches!(node.op, Op::RmsNorm { .. });
                let (dx, dgamma, dbeta) = kernels::norm_grad(val(0), val(1), &dy, *eps, rms)?;
                out.extend([(0, dx), (1, dgamma)]);
                if !rms {
                    out.push((2, dbeta));
                }
            }
            Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
                let Aux::Argmax(arg) = &tape.aux[step.node.index()] else {
                    return Err(Broken("pooling keeps its indices on the tape").into());
                };
                out.push((0, kernels::pool_grad(val(0).shape(), a, arg, &dy)?));
            }
            Op::GlobalAvgPool => {
                let x = val(0);
                let spatial = (x.len() / (x.shape()[0] * x.shape()[1]).max(1)) as f32;
                let mut shape = dy.shape().to_vec();
                shape.resize(x.ndim(), 1);
                let d = dy.into_shape_with_order(IxDyn(&shape)).invariant("[B, C] is [B, C, 1, 1]")?;
                let full = d.broadcast(x.raw_dim()).invariant("[B, C, 1, 1] broadcasts")?.mapv(|v| v / spatial);
                out.push((0, full));
            }
            Op::Reshape { .. } => {
                let shape = val(0).shape().to_vec();
                let d = dy.as_standard_layout().into_owned();
                out.push((0, d.into_shape_with_order(IxDyn(&shape)).invariant("a reshape keeps the element count")?));
            }
            Op::Concat { axis } => {
                let mut at = 0;
                for i in 0..node.args.len() {
                    let len = val(i).shape()[*axis];
                    out.push((i, dy.slice_axis(Axis(*axis), Slice::from(at..at + len)).to_owned()));
                    at += len;
                }
            }
            Op::QuantizeI8 { .. } | Op::Dequantize => out.push((0, dy)),
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Fused(_) => {}
        }
        for (i, d) in out {
            if wants(i) {
                add_into(&mut grads[node.args[i].index()], d);
            }
        }
    }
    let mut params: Vec<Option<ArrayD<f32>>> = vec![None; g.params.len()];
    for (id, node) in g.nodes.iter() {
        if let Op::Param { index } = node.op
            && bw.trained[index]
            && let Some(d) = grads[id.index()].take()
        {
            add_into(&mut params[index], d);
        }
    }
    Ok(params)
}

/// Mean softmax cross-entropy of `logits [B, C]` against `labels`; returns the loss, its
/// gradient with respect to the logits and how many rows were classified right.
pub fn softmax_cross_entropy(logits: &ArrayD<f32>, labels: &[usize]) -> Result<(f32, ArrayD<f32>, usize), Broken> {
    softmax_cross_entropy_smoothed(logits, labels, 0.0)
}

/// [`softmax_cross_entropy`] against label-smoothed targets: the true class gets
/// `1 - smoothing + smoothing / C`, every other class `smoothing / C` (0: the plain loss).
pub fn softmax_cross_entropy_smoothed(
    logits: &ArrayD<f32>,
    labels: &[usize],
    smoothing: f32,
) -> Result<(f32, ArrayD<f32>, usize), Broken> {
    let b = logits.shape().first().copied().invariant("logits have a batch dimension")?;
    let c = logits.len() / b.max(1);
    let m = kernels::rows(logits, c)?;
    let mut grad = Array2::<f32>::zeros((b, c));
    let (mut loss, mut correct) = (0.0f64, 0);
    for (i, row) in m.outer_iter().enumerate() {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
        let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let label = *labels.get(i).invariant("one label per row")?;
        if label >= c {
            return Err(Broken("labels are below the class count (the data loader checks them)"));
        }
        let best = row.iter().enumerate().fold(0, |bi, (j, v)| if *v > row[bi] { j } else { bi });
        correct += usize::from(best == label);
        if smoothing == 0.0 {
            loss += f64::from(sum.ln() - (row[label] - max));
            for j in 0..c {
                grad[[i, j]] = (exps[j] / sum - f32::from(j == label)) / b as f32;
            }
        } else {
            let other = smoothing / c as f32;
            let target = |j: usize| if j == label { 1.0 - smoothing + other } else { other };
            let expected: f64 = (0..c).map(|j| f64::from(target(j)) * f64::from(row[j] - max)).sum();
            loss += f64::from(sum.ln()) - expected;
            for j in 0..c {
                grad[[i, j]] = (exps[j] / sum - target(j)) / b as f32;
            }
        }
    }
    let grad = grad.into_shape_with_order(IxDyn(logits.shape())).invariant("the gradient has the logits' size")?;
    Ok(((loss / b as f64) as f32, grad, correct))
}
