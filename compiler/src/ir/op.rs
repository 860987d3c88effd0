//! IR operations and their type rules.
//!
//! Rules:
//! - [`Op`] is a closed enum: adding an op makes every `match` that must handle it (verifier,
//!   printer, parser, interpreter, passes, backends) fail to compile until it does.
//! - [`Op::infer`] is the single definition of each op's dtype and shape rule. The checker uses
//!   it to type user programs (mapping [`OpError`] to diagnostics with source spans) and the
//!   verifier uses it to check every node after every pass. The value semantics of each op are
//!   documented in docs/language.md ("Op semantics").
//! - Attributes are fully resolved: no defaults, no negative axes, no `-1` in shapes.

use std::fmt;

use triton_runtime::DType;

use super::dim::{Dim, DimError};
use super::types::TensorType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub stride: [i64; 2],
    pub padding: [i64; 2],
    pub dilation: [i64; 2],
    pub groups: i64,
}

impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolAttrs {
    pub kernel: [i64; 2],
    pub stride: [i64; 2],
    pub padding: [i64; 2],
}

pub use triton_runtime::ops::{BinaryOp, UnaryOp};

/// The linear part of a fused op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedBase {
    Matmul,
    Conv2d(ConvAttrs),
}

/// A matmul or convolution with its epilogue, applied in this order: dequantize (when the
/// product is integer), multiply by a per-output-channel `scale`, add a per-output-channel
/// `bias`, add a `residual` tensor of the output's type, apply `act`. Inputs:
/// `[x, w, scale?, bias?, residual?]`. Produced by the fusion pass (-O2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fused {
    pub base: FusedBase,
    pub scale: bool,
    pub bias: bool,
    pub residual: bool,
    pub act: Option<UnaryOp>,
}

impl Fused {
    pub fn inputs(&self) -> usize {
        2 + self.scale as usize + self.bias as usize + self.residual as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A model input (activation), by position.
    Input {
        index: usize,
    },
    /// A named parameter (weight, param or buffer), by index into the graph's parameter table.
    Param {
        index: usize,
    },
    /// An f32 scalar constant.
    Const {
        value: f32,
    },
    /// `x [..., K] . w [N, K]^T`
    Matmul,
    Conv2d(ConvAttrs),
    BatchNorm {
        eps: f32,
    },
    Unary(UnaryOp),
    /// Elementwise with broadcasting.
    Binary(BinaryOp),
    Softmax {
        axis: usize,
    },
    /// Layer normalization over the last axis: `(x, gamma, beta)`, `gamma` and `beta` of the
    /// last axis' length (`runtime::ops::layer_norm_row`).
    LayerNorm {
        eps: f32,
    },
    /// RMS normalization over the last axis: `(x, gamma)` (`runtime::ops::rms_norm_row`).
    RmsNorm {
        eps: f32,
    },
    /// The axes reordered: result axis `i` is input axis `perm[i]`.
    Permute {
        perm: Vec<usize>,
    },
    /// Causal masking of attention scores `[..., T, S]`: entry `(i, j)` kept where
    /// `j <= i + S - T`, else `-inf` (`runtime::ops::causal_mask`).
    CausalMask,
    /// Positions `start .. end` along `axis` (a known dimension).
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Rotary position embeddings over `[..., T, D]` (`D` even; `runtime::ops::rope`).
    Rope {
        theta: f32,
    },
    /// Embedding lookup `(ids, table)`: the rows of `table` (`f32[V, D]`) named by the i32
    /// `ids`, `[...ids, D]` (`runtime::ops::embedding`; an id outside `0 .. V` is a run-time
    /// error).
    Embedding,
    /// The sum (or mean) along `axis`, which is removed (`runtime::ops::reduce_axis`).
    Reduce {
        axis: usize,
        mean: bool,
    },
    /// The batched product of two f32 activations, `[..., M, K] x [..., K, N] -> [..., M, N]`
    /// (the same leading dimensions), sums in f32.
    BatchMatmul,
    MaxPool2d(PoolAttrs),
    AvgPool2d(PoolAttrs),
    GlobalAvgPool,
    Reshape {
        shape: Vec<Dim>,
    },
    Concat {
        axis: usize,
    },
    QuantizeI8 {
        scale: Option<f32>,
    },
    Dequantize,
    Fused(Fused),
}

/// Why an op does not accept its inputs. `arg` indexes the op's inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum OpError {
    Arity {
        expected: usize,
        got: usize,
    },
    Leaf,
    Dtype {
        arg: usize,
        allowed: &'static [DType],
        got: TensorType,
    },
    /// Integer activations need an integer-friendly weight.
    MixedInteger {
        weight: DType,
    },
    Rank {
        arg: usize,
        expected: usize,
        got: TensorType,
        layout: &'static str,
    },
    MinRank {
        arg: usize,
        min: usize,
        got: TensorType,
        layout: &'static str,
    },
    Features {
        expected: Dim,
        got: Dim,
    },
    Channels {
        expected: Dim,
        got: Dim,
        groups: i64,
    },
    NotDivisible {
        what: &'static str,
        value: i64,
        groups: i64,
    },
    Attr {
        name: &'static str,
        value: i64,
        requirement: &'static str,
    },
    PoolPadding {
        padding: i64,
        kernel: i64,
    },
    EmptyOutput {
        what: &'static str,
        size: i64,
        detail: String,
    },
    ChannelVector {
        arg: usize,
        name: &'static str,
        channels: Dim,
        got: TensorType,
    },
    Broadcast {
        a: TensorType,
        b: TensorType,
        dim: usize,
        x: Dim,
        y: Dim,
    },
    Axis {
        axis: i64,
        rank: usize,
    },
    Elements {
        from: TensorType,
        from_count: Dim,
        to_count: Dim,
    },
    ConcatDtype {
        item: usize,
        first: DType,
        got: DType,
    },
    ConcatRank {
        item: usize,
        first: TensorType,
        got: TensorType,
    },
    ConcatDim {
        item: usize,
        axis: usize,
        dim: usize,
        first: TensorType,
        got: TensorType,
    },
    EmptyConcat,
    Scale {
        value: f32,
    },
    Overflow(&'static str),
    DivisionByZero(&'static str),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Arity { expected, got } => write!(f, "takes {expected} inputs, got {got}"),
            OpError::Leaf => write!(f, "a leaf op has no inputs to infer from"),
            OpError::Dtype { arg, allowed, got } => {
                let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
                write!(f, "input {arg} must be {}, got {got}", names.join(" or "))
            }
            OpError::MixedInteger { weight } => {
                write!(f, "i8 activations need a trit or i8 weight, got {weight}")
            }
            OpError::Rank { arg, expected, got, .. } => write!(f, "input {arg} must have rank {expected}, got {got}"),
            OpError::MinRank { arg, min, got, .. } => {
                write!(f, "input {arg} must have rank at least {min}, got {got}")
            }
            OpError::Features { expected, got } => {
                write!(f, "expects {expected} input features, got {got}")
            }
            OpError::Channels { expected, got, .. } => {
                write!(f, "expects {expected} input channels, got {got}")
            }
            OpError::NotDivisible { what, value, groups } => {
                write!(f, "{what} ({value}) not divisible by groups ({groups})")
            }
            OpError::Attr { name, value, requirement } => write!(f, "`{name}` must be {requirement}, got {value}"),
            OpError::PoolPadding { padding, kernel } => {
                write!(f, "padding {padding} exceeds half the kernel {kernel}")
            }
            OpError::EmptyOutput { what, size, .. } => write!(f, "output {what} would be {size}"),
            OpError::ChannelVector { name, channels, got, .. } => write!(f, "`{name}` must be [{channels}], got {got}"),
            OpError::Broadcast { a, b, .. } => write!(f, "cannot broadcast {a} with {b}"),
            OpError::Axis { axis, rank } => write!(f, "axis {axis} out of range for rank {rank}"),
            OpError::Elements { from_count, to_count, .. } => write!(f, "element count {from_count} != {to_count}"),
            OpError::ConcatDtype { item, .. } => write!(f, "concat item {item} has another dtype"),
            OpError::ConcatRank { item, .. } => write!(f, "concat item {item} has another rank"),
            OpError::ConcatDim { item, dim, .. } => {
                write!(f, "concat item {item} differs in dimension {dim}")
            }
            OpError::EmptyConcat => write!(f, "concat of nothing"),
            OpError::Scale { value } => write!(f, "scale must be positive and finite, got {value}"),
            OpError::Overflow(what) => write!(f, "{what} overflows"),
            OpError::DivisionByZero(what) => write!(f, "{what} divides by zero"),
        }
    }
}

fn dim_err(e: DimError, what: &'static str) -> OpError {
    match e {
        DimError::Overflow => OpError::Overflow(what),
        DimError::DivisionByZero => OpError::DivisionByZero(what),
    }
}

const F32: &[DType] = &[DType::F32];
const ACTIVATION: &[DType] = &[DType::F32, DType::I8];
const WEIGHT: &[DType] = &[DType::F32, DType::Trit, DType::I8];
const DATA: &[DType] = &[DType::F32, DType::I8, DType::I32];
const INTEGER: &[DType] = &[DType::I8, DType::I32];

fn need_dtype(inputs: &[&TensorType], arg: usize, allowed: &'static [DType]) -> Result<(), OpError> {
    if allowed.contains(&inputs[arg].dtype) {
        Ok(())
    } else {
        Err(OpError::Dtype { arg, allowed, got: inputs[arg].clone() })
    }
}

fn need_rank(inputs: &[&TensorType], arg: usize, expected: usize, layout: &'static str) -> Result<(), OpError> {
    if inputs[arg].rank() == expected {
        Ok(())
    } else {
        Err(OpError::Rank { arg, expected, got: inputs[arg].clone(), layout })
    }
}

fn at_least(name: &'static str, values: &[i64], min: i64) -> Result<(), OpError> {
    for &v in values {
        if v < min {
            let requirement = if min == 0 { "zero or more" } else { "at least 1" };
            return Err(OpError::Attr { name, value: v, requirement });
        }
    }
    Ok(())
}

/// `floor((input + 2p - d(k-1) - 1) / s) + 1`
pub fn conv_out(input: &Dim, k: &Dim, s: i64, p: i64, d: i64) -> Result<Dim, DimError> {
    let reach = k.sub(&Dim::known(1))?.mul(&Dim::known(d))?;
    let span = input.add(&Dim::known(2 * p))?.sub(&reach)?.sub(&Dim::known(1))?;
    span.div(&Dim::known(s))?.add(&Dim::known(1))
}

pub fn product(dims: &[Dim]) -> Result<Dim, DimError> {
    dims.iter().try_fold(Dim::known(1), |acc, d| acc.mul(d))
}

fn nonempty(d: Dim, what: &'static str, detail: impl FnOnce() -> String) -> Result<Dim, OpError> {
    match d.as_known() {
        Some(v) if v < 1 => Err(OpError::EmptyOutput { what, size: v, detail: detail() }),
        _ => Ok(d),
    }
}

/// Numpy broadcasting of two f32 shapes.
pub fn broadcast(a: &TensorType, b: &TensorType) -> Result<TensorType, OpError> {
    let rank = a.rank().max(b.rank());
    let mut shape = Vec::with_capacity(rank);
    let one = Dim::known(1);
    for i in 0..rank {
        let x = (i + a.rank()).checked_sub(rank).map_or(&one, |j| &a.shape[j]);
        let y = (i + b.rank()).checked_sub(rank).map_or(&one, |j| &b.shape[j]);
        let d = if x == y || y.as_known() == Some(1) {
            x.clone()
        } else if x.as_known() == Some(1) {
            y.clone()
        } else {
            return Err(OpError::Broadcast { a: a.clone(), b: b.clone(), dim: i, x: x.clone(), y: y.clone() });
        };
        shape.push(d);
    }
    Ok(TensorType::new(DType::F32, shape))
}

impl Op {
    /// The op's name in the IR text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::Matmul => "matmul",
            Op::Conv2d(_) => "conv2d",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Softmax { .. } => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Permute { .. } => "permute",
            Op::BatchMatmul => "bmm",
            Op::CausalMask => "causal_mask",
            Op::Embedding => "embedding",
            Op::Rope { .. } => "rope",
            Op::Slice { .. } => "slice",
            Op::Reduce { mean: true, .. } => "mean",
            Op::Reduce { mean: false, .. } => "sum",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Reshape { .. } => "reshape",
            Op::Concat { .. } => "concat",
            Op::QuantizeI8 { .. } => "quantize_i8",
            Op::Dequantize => "dequantize",
            Op::Fused(Fused { base: FusedBase::Matmul, .. }) => "fused_matmul",
            Op::Fused(Fused { base: FusedBase::Conv2d(_), .. }) => "fused_conv2d",
        }
    }

    /// Number of inputs, or `None` when variadic (at least one).
    pub fn arity(&self) -> Option<usize> {
        Some(match self {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => 0,
            Op::Matmul | Op::Conv2d(_) | Op::Binary(_) | Op::BatchMatmul | Op::Embedding => 2,
            Op::BatchNorm { .. } => 5,
            Op::LayerNorm { .. } => 3,
            Op::RmsNorm { .. } => 2,
            Op::Concat { .. } => return None,
            Op::Fused(f) => f.inputs(),
            Op::Unary(_)
            | Op::Permute { .. }
            | Op::CausalMask
            | Op::Rope { .. }
            | Op::Slice { .. }
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::MaxPool2d(_)
            | Op::AvgPool2d(_)
            | Op::GlobalAvgPool
            | Op::Reshape { .. }
            | Op::QuantizeI8 { .. }
            | Op::Dequantize => 1,
        })
    }

    /// The result type for these input types, or why there is none.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, OpError> {
        match self.arity() {
            Some(n) if n != inputs.len() => {
                return Err(OpError::Arity { expected: n, got: inputs.len() });
            }
            None if inputs.is_empty() => return Err(OpError::EmptyConcat),
            _ => {}
        }
        match self {
            Op::Input { .. } | Op::Param { .. } => Err(OpError::Leaf),
            Op::Const { .. } => Ok(TensorType::new(DType::F32, Vec::new())),
            Op::Matmul => {
                need_dtype(inputs, 0, ACTIVATION)?;
                need_dtype(inputs, 1, WEIGHT)?;
                let (x, w) = (inputs[0], inputs[1]);
                if x.rank() == 0 {
                    return Err(OpError::MinRank { arg: 0, min: 1, got: x.clone(), layout: "[..., features]" });
                }
                need_rank(inputs, 1, 2, "weight [out_features, in_features]")?;
                let k = &x.shape[x.rank() - 1];
                if *k != w.shape[1] {
                    return Err(OpError::Features { expected: w.shape[1].clone(), got: k.clone() });
                }
                let mut shape = x.shape[..x.rank() - 1].to_vec();
                shape.push(w.shape[0].clone());
                Ok(TensorType::new(integer_result(x.dtype, w.dtype)?, shape))
            }
            Op::Conv2d(a) => {
                need_dtype(inputs, 0, ACTIVATION)?;
                need_dtype(inputs, 1, WEIGHT)?;
                need_rank(inputs, 0, 4, "input [batch, channels, height, width]")?;
                need_rank(inputs, 1, 4, "weight [out_channels, in_channels / groups, kernel_h, kernel_w]")?;
                let (x, w) = (inputs[0], inputs[1]);
                at_least("stride", &a.stride, 1)?;
                at_least("padding", &a.padding, 0)?;
                at_least("dilation", &a.dilation, 1)?;
                at_least("groups", &[a.groups], 1)?;
                let c = &x.shape[1];
                if let Some(cv) = c.as_known()
                    && cv % a.groups != 0
                {
                    return Err(OpError::NotDivisible { what: "input channels", value: cv, groups: a.groups });
                }
                let g = Dim::known(a.groups);
                let per_group = c.div(&g).map_err(|e| dim_err(e, "channels / groups"))?;
                if per_group != w.shape[1] {
                    let expected = w.shape[1].mul(&g).map_err(|e| dim_err(e, "channels"))?;
                    return Err(OpError::Channels { expected, got: c.clone(), groups: a.groups });
                }
                if let Some(o) = w.shape[0].as_known()
                    && o % a.groups != 0
                {
                    return Err(OpError::NotDivisible { what: "output channels", value: o, groups: a.groups });
                }
                let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
                for axis in 0..2 {
                    let input = &x.shape[2 + axis];
                    let k = &w.shape[2 + axis];
                    let (s, p, d) = (a.stride[axis], a.padding[axis], a.dilation[axis]);
                    let out = conv_out(input, k, s, p, d).map_err(|e| dim_err(e, "the output size"))?;
                    let what = if axis == 0 { "height" } else { "width" };
                    shape.push(nonempty(out, what, || {
                        format!("input {what} {input}, kernel {k}, stride {s}, padding {p}, dilation {d}: the kernel does not fit")
                    })?);
                }
                Ok(TensorType::new(integer_result(x.dtype, w.dtype)?, shape))
            }
            Op::BatchNorm { .. } => {
                for i in 0..5 {
                    need_dtype(inputs, i, F32)?;
                }
                let x = inputs[0];
                if x.rank() < 2 {
                    return Err(OpError::MinRank { arg: 0, min: 2, got: x.clone(), layout: "[batch, channels, ...]" });
                }
                let c = &x.shape[1];
                for (i, name) in [(1, "gamma"), (2, "beta"), (3, "mean"), (4, "var")] {
                    let v = inputs[i];
                    if v.rank() != 1 || v.shape[0] != *c {
                        return Err(OpError::ChannelVector { arg: i, name, channels: c.clone(), got: v.clone() });
                    }
                }
                Ok(x.clone())
            }
            Op::Permute { perm } => {
                need_dtype(inputs, 0, F32)?;
                let x = inputs[0];
                let mut seen = vec![false; x.rank()];
                for &a in perm {
                    if a >= x.rank() || std::mem::replace(&mut seen[a], true) {
                        return Err(OpError::Axis { axis: a as i64, rank: x.rank() });
                    }
                }
                if perm.len() != x.rank() {
                    return Err(OpError::Rank {
                        arg: 0,
                        expected: perm.len(),
                        got: x.clone(),
                        layout: "one axis per entry of `dims`",
                    });
                }
                Ok(TensorType::new(DType::F32, perm.iter().map(|a| x.shape[*a].clone()).collect()))
            }
            Op::CausalMask => {
                need_dtype(inputs, 0, F32)?;
                if inputs[0].rank() < 2 {
                    return Err(OpError::MinRank {
                        arg: 0,
                        min: 2,
                        got: inputs[0].clone(),
                        layout: "[..., T, S] scores",
                    });
                }
                Ok(inputs[0].clone())
            }
            Op::Reduce { axis, .. } => {
                need_dtype(inputs, 0, F32)?;
                let x = inputs[0];
                if *axis >= x.rank() {
                    return Err(OpError::Axis { axis: *axis as i64, rank: x.rank() });
                }
                let mut shape = x.shape.clone();
                shape.remove(*axis);
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::Slice { axis, start, end } => {
                need_dtype(inputs, 0, F32)?;
                let x = inputs[0];
                if *axis >= x.rank() {
                    return Err(OpError::Axis { axis: *axis as i64, rank: x.rank() });
                }
                let Some(len) = x.shape[*axis].as_known() else {
                    return Err(OpError::Attr {
                        name: "axis",
                        value: *axis as i64,
                        requirement: "an axis of known length (a symbolic one cannot be sliced)",
                    });
                };
                if *start >= *end || *end as i64 > len {
                    return Err(OpError::Attr {
                        name: "end",
                        value: *end as i64,
                        requirement: "after `start` and within the axis' length",
                    });
                }
                let mut shape = x.shape.clone();
                shape[*axis] = Dim::known((end - start) as i64);
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::Rope { theta } => {
                need_dtype(inputs, 0, F32)?;
                let x = inputs[0];
                if x.rank() < 2 {
                    return Err(OpError::MinRank {
                        arg: 0,
                        min: 2,
                        got: x.clone(),
                        layout: "[..., T, D] (positions, features)",
                    });
                }
                if let Some(d) = x.shape[x.rank() - 1].as_known().filter(|d| d % 2 != 0) {
                    return Err(OpError::Attr {
                        name: "D (the last dimension)",
                        value: d,
                        requirement: "even (rotated in pairs)",
                    });
                }
                if !(theta.is_finite() && *theta > 1.0) {
                    return Err(OpError::Attr {
                        name: "theta",
                        value: *theta as i64,
                        requirement: "a finite number above 1",
                    });
                }
                Ok(x.clone())
            }
            Op::Embedding => {
                need_dtype(inputs, 0, &[DType::I32])?;
                need_dtype(inputs, 1, F32)?;
                need_rank(inputs, 1, 2, "[vocab, dim]")?;
                let mut shape = inputs[0].shape.clone();
                shape.push(inputs[1].shape[1].clone());
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::BatchMatmul => {
                need_dtype(inputs, 0, F32)?;
                need_dtype(inputs, 1, F32)?;
                let (a, b) = (inputs[0], inputs[1]);
                if a.rank() < 2 {
                    return Err(OpError::MinRank { arg: 0, min: 2, got: a.clone(), layout: "[..., M, K]" });
                }
                need_rank(inputs, 1, a.rank(), "[..., K, N] with the same leading dimensions")?;
                let r = a.rank();
                if let Some(dim) = (0..r - 2).find(|&i| a.shape[i] != b.shape[i]) {
                    return Err(OpError::Broadcast {
                        a: a.clone(),
                        b: b.clone(),
                        dim,
                        x: a.shape[dim].clone(),
                        y: b.shape[dim].clone(),
                    });
                }
                if a.shape[r - 1] != b.shape[r - 2] {
                    return Err(OpError::Features { expected: a.shape[r - 1].clone(), got: b.shape[r - 2].clone() });
                }
                let mut shape = a.shape[..r - 1].to_vec();
                shape.push(b.shape[r - 1].clone());
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
                for i in 0..inputs.len() {
                    need_dtype(inputs, i, F32)?;
                }
                let x = inputs[0];
                let Some(d) = x.shape.last() else {
                    return Err(OpError::MinRank { arg: 0, min: 1, got: x.clone(), layout: "[..., features]" });
                };
                for (i, name) in [(1, "gamma"), (2, "beta")].into_iter().take(inputs.len() - 1) {
                    let v = inputs[i];
                    if v.rank() != 1 || v.shape[0] != *d {
                        return Err(OpError::ChannelVector { arg: i, name, channels: d.clone(), got: v.clone() });
                    }
                }
                Ok(x.clone())
            }
            Op::Unary(_) => {
                need_dtype(inputs, 0, F32)?;
                Ok(inputs[0].clone())
            }
            Op::Softmax { axis } => {
                need_dtype(inputs, 0, F32)?;
                if *axis >= inputs[0].rank() {
                    return Err(OpError::Axis { axis: *axis as i64, rank: inputs[0].rank() });
                }
                Ok(inputs[0].clone())
            }
            Op::Binary(_) => {
                need_dtype(inputs, 0, F32)?;
                need_dtype(inputs, 1, F32)?;
                broadcast(inputs[0], inputs[1])
            }
            Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
                need_dtype(inputs, 0, F32)?;
                need_rank(inputs, 0, 4, "input [batch, channels, height, width]")?;
                at_least("kernel", &a.kernel, 1)?;
                at_least("stride", &a.stride, 1)?;
                at_least("padding", &a.padding, 0)?;
                for axis in 0..2 {
                    if a.padding[axis] * 2 > a.kernel[axis] {
                        return Err(OpError::PoolPadding { padding: a.padding[axis], kernel: a.kernel[axis] });
                    }
                }
                let x = inputs[0];
                let mut shape = vec![x.shape[0].clone(), x.shape[1].clone()];
                for axis in 0..2 {
                    let input = &x.shape[2 + axis];
                    let k = a.kernel[axis];
                    let out = conv_out(input, &Dim::known(k), a.stride[axis], a.padding[axis], 1)
                        .map_err(|e| dim_err(e, "the output size"))?;
                    let what = if axis == 0 { "height" } else { "width" };
                    shape.push(nonempty(out, what, || format!("input {what} {input} is smaller than the window {k}"))?);
                }
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::GlobalAvgPool => {
                need_dtype(inputs, 0, F32)?;
                let x = inputs[0];
                if x.rank() < 3 {
                    return Err(OpError::MinRank {
                        arg: 0,
                        min: 3,
                        got: x.clone(),
                        layout: "[batch, channels, spatial...]",
                    });
                }
                Ok(TensorType::new(DType::F32, x.shape[..2].to_vec()))
            }
            Op::Reshape { shape } => {
                need_dtype(inputs, 0, DATA)?;
                let x = inputs[0];
                for d in shape {
                    if let Some(v) = d.as_known()
                        && v < 1
                    {
                        return Err(OpError::Attr { name: "shape", value: v, requirement: "at least 1" });
                    }
                }
                let from = product(&x.shape).map_err(|e| dim_err(e, "the element count"))?;
                let to = product(shape).map_err(|e| dim_err(e, "the element count"))?;
                if from != to {
                    return Err(OpError::Elements { from: x.clone(), from_count: from, to_count: to });
                }
                Ok(TensorType::new(x.dtype, shape.clone()))
            }
            Op::Concat { axis } => {
                // Integer parts would carry different scales: concatenate f32 only.
                for i in 0..inputs.len() {
                    need_dtype(inputs, i, F32)?;
                }
                let first = inputs[0];
                let rank = first.rank();
                if *axis >= rank {
                    return Err(OpError::Axis { axis: *axis as i64, rank });
                }
                let mut sum = first.shape[*axis].clone();
                for (item, t) in inputs.iter().enumerate().skip(1) {
                    if t.dtype != first.dtype {
                        return Err(OpError::ConcatDtype { item, first: first.dtype, got: t.dtype });
                    }
                    if t.rank() != rank {
                        return Err(OpError::ConcatRank { item, first: first.clone(), got: (*t).clone() });
                    }
                    for dim in 0..rank {
                        if dim != *axis && t.shape[dim] != first.shape[dim] {
                            return Err(OpError::ConcatDim {
                                item,
                                axis: *axis,
                                dim,
                                first: first.clone(),
                                got: (*t).clone(),
                            });
                        }
                    }
                    sum = sum.add(&t.shape[*axis]).map_err(|e| dim_err(e, "the concatenated size"))?;
                }
                let mut shape = first.shape.clone();
                shape[*axis] = sum;
                Ok(TensorType::new(first.dtype, shape))
            }
            Op::QuantizeI8 { scale } => {
                need_dtype(inputs, 0, F32)?;
                if let Some(s) = scale
                    && !(*s > 0.0 && s.is_finite())
                {
                    return Err(OpError::Scale { value: *s });
                }
                Ok(TensorType::new(DType::I8, inputs[0].shape.clone()))
            }
            Op::Dequantize => {
                need_dtype(inputs, 0, INTEGER)?;
                Ok(TensorType::new(DType::F32, inputs[0].shape.clone()))
            }
            Op::Fused(f) => {
                let base = match f.base {
                    FusedBase::Matmul => Op::Matmul,
                    FusedBase::Conv2d(a) => Op::Conv2d(a),
                };
                let y = base.infer(&inputs[..2])?;
                let y = TensorType::new(DType::F32, y.shape);
                let channel = match f.base {
                    FusedBase::Matmul => y.rank() - 1,
                    FusedBase::Conv2d(_) => 1,
                };
                let mut i = 2;
                for (present, name) in [(f.scale, "scale"), (f.bias, "bias")] {
                    if present {
                        need_dtype(inputs, i, F32)?;
                        if inputs[i].rank() != 1 || inputs[i].shape[0] != y.shape[channel] {
                            return Err(OpError::ChannelVector {
                                arg: i,
                                name,
                                channels: y.shape[channel].clone(),
                                got: inputs[i].clone(),
                            });
                        }
                        i += 1;
                    }
                }
                if f.residual {
                    need_dtype(inputs, i, F32)?;
                    if *inputs[i] != y {
                        return Err(OpError::Broadcast {
                            a: y.clone(),
                            b: inputs[i].clone(),
                            dim: 0,
                            x: Dim::known(0),
                            y: Dim::known(0),
                        });
                    }
                }
                if let Some(act) = f.act
                    && !act.is_activation()
                {
                    return Err(OpError::Attr { name: "act", value: 0, requirement: "an activation" });
                }
                Ok(y)
            }
        }
    }
}

/// Result dtype of matmul / conv from activation and weight dtypes.
fn integer_result(x: DType, w: DType) -> Result<DType, OpError> {
    match (x, w) {
        (DType::F32, _) => Ok(DType::F32),
        (DType::I8, DType::Trit | DType::I8) => Ok(DType::I32),
        _ => Err(OpError::MixedInteger { weight: w }),
    }
}
