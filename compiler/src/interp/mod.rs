//! The reference interpreter: evaluates any IR graph, at any -O level, on the CPU with ndarray.
//!
//! Rules:
//! - This is the semantic oracle the JIT is tested against: it implements docs/language.md ("Op
//!   semantics", "Numeric semantics") directly and favours clarity over speed.
//! - Two precisions: [`Precision::Fp32`] uses every weight's latent f32 value and treats
//!   `quantize_i8` / `dequantize` as the identity; [`Precision::Ternary`] quantizes weights by
//!   their rule and runs integer paths exactly (sums of int8 by trit/int8 products are computed
//!   in f64, which is exact far beyond any i32 accumulator).
//! - Inputs are validated against the graph's signature before anything runs; a mismatch is an
//!   error naming the expected shape, never a panic.

use std::collections::HashMap;
use std::fmt;

use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn, Zip, s};
use triton_runtime::DType;

use crate::ir::{BinaryOp, ConvAttrs, Dim, Graph, Op, PoolAttrs, TensorType};
// Weights and their quantization are their own module (`crate::weights`), shared by the
// passes, the code generator, the trainer and the interpreter; these paths stay for callers.
pub use crate::weights::{self, Weights, WeightsError, quant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    Fp32,
    Ternary,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Ternary => "ternary",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunError {
    InputCount { expected: usize, got: usize },
    InputShape { name: String, expected: TensorType, got: Vec<usize>, why: String },
    MissingWeight(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::InputCount { expected, got } => write!(f, "the model takes {expected} inputs, got {got}"),
            RunError::InputShape { name, expected, got, why } => {
                write!(f, "input `{name}` must have shape {expected}, got f32{got:?}: {why}")
            }
            RunError::MissingWeight(n) => write!(f, "no value for parameter `{n}`"),
        }
    }
}

impl std::error::Error for RunError {}

/// A value during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F32(ArrayD<f32>),
    /// Integers (i8 or i32 by `dtype`) with a scale that broadcasts to them; value = data * scale.
    Int {
        data: ArrayD<i32>,
        scale: ArrayD<f32>,
        dtype: DType,
    },
    /// Trits with one scale per output channel (row).
    Trit {
        codes: ArrayD<i8>,
        alpha: ndarray::Array1<f32>,
    },
}

impl Value {
    fn f32(&self) -> &ArrayD<f32> {
        match self {
            Value::F32(a) => a,
            _ => unreachable!("the verifier guarantees an f32 operand"),
        }
    }

    /// The f32 value (dequantized when integer).
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Value::F32(a) => a.clone(),
            Value::Int { data, scale, .. } => {
                let f = data.mapv(|v| v as f32);
                &f * scale
            }
            Value::Trit { codes, alpha } => {
                let mut out = codes.mapv(|v| v as f32);
                for (mut row, a) in out.outer_iter_mut().zip(alpha.iter()) {
                    row.mapv_inplace(|v| v * a);
                }
                out
            }
        }
    }
}

/// Weights prepared for a precision: one value per parameter.
#[derive(Clone, Debug)]
pub struct Prepared {
    values: Vec<Value>,
}

/// Turns latent weights into the values the graph's parameters take at `precision`.
pub fn prepare(graph: &Graph, weights: &Weights, precision: Precision) -> Result<Prepared, RunError> {
    prepare_with(graph, weights, precision, None)
}

/// [`prepare`], taking quantized weights out of `quantized` when it has them.
pub fn prepare_with(
    graph: &Graph,
    weights: &Weights,
    precision: Precision,
    mut quantized: Option<&mut quant::QuantCache>,
) -> Result<Prepared, RunError> {
    let mut values = Vec::with_capacity(graph.params.len());
    for p in &graph.params {
        let w = weights.tensors.get(&p.name).ok_or_else(|| RunError::MissingWeight(p.name.clone()))?;
        let v = match (precision, p.dtype, p.quant) {
            (Precision::Ternary, DType::Trit | DType::I8, Some(rule)) => {
                let rows = p.shape.first().copied().unwrap_or(1) as usize;
                let cols = w.len() / rows.max(1);
                let view =
                    w.view().into_shape_with_order((rows, cols)).unwrap_or_else(|_| unreachable!("row-major weight"));
                let q = match quantized.as_deref_mut().and_then(|c| c.take(&p.name)) {
                    Some(q) => q,
                    None => quant::quantize(view, rule),
                };
                let codes =
                    q.codes.into_shape_with_order(IxDyn(w.shape())).unwrap_or_else(|_| unreachable!("same size"));
                if p.dtype == DType::Trit {
                    Value::Trit { codes, alpha: q.scale }
                } else {
                    let mut sshape = vec![1usize; w.ndim()];
                    sshape[0] = rows;
                    let scale =
                        q.scale.into_shape_with_order(IxDyn(&sshape)).unwrap_or_else(|_| unreachable!("same size"));
                    Value::Int { data: codes.mapv(|v| v as i32), scale, dtype: DType::I8 }
                }
            }
            _ => Value::F32(w.clone()),
        };
        values.push(v);
    }
    Ok(Prepared { values })
}

/// Binds symbolic dimensions from the inputs and checks every input's shape.
pub(crate) fn bind_inputs(graph: &Graph, inputs: &[ArrayD<f32>]) -> Result<HashMap<String, i64>, RunError> {
    if inputs.len() != graph.inputs.len() {
        return Err(RunError::InputCount { expected: graph.inputs.len(), got: inputs.len() });
    }
    let mut syms: HashMap<String, i64> = HashMap::new();
    for ((name, id), x) in graph.inputs.iter().zip(inputs) {
        let ty = &graph.nodes[*id].ty;
        let got = x.shape().to_vec();
        let fail =
            |why: String| RunError::InputShape { name: name.clone(), expected: ty.clone(), got: got.clone(), why };
        if ty.rank() != x.ndim() {
            return Err(fail(format!("expected {} dimensions, got {}", ty.rank(), x.ndim())));
        }
        // Bare symbols bind first; then every dimension is evaluated and compared.
        for (d, &n) in ty.shape.iter().zip(x.shape()) {
            if let [s] = d.symbols().as_slice()
                && *d == Dim::sym(s)
                && !syms.contains_key(s.as_ref())
            {
                if n == 0 {
                    return Err(fail(format!("`{s}` must be at least 1")));
                }
                syms.insert(s.to_string(), n as i64);
            }
        }
        for (i, (d, &n)) in ty.shape.iter().zip(x.shape()).enumerate() {
            let v = eval_dim(d, &syms);
            if v != Some(n as i64) {
                let want = v.map_or(d.to_string(), |v| v.to_string());
                return Err(fail(format!("dimension {i} is {n}, expected {want}")));
            }
        }
    }
    Ok(syms)
}

pub(crate) fn eval_dim(d: &Dim, syms: &HashMap<String, i64>) -> Option<i64> {
    d.substitute(&|s| syms.get(s).map(|&v| Dim::known(v))).ok()?.as_known()
}

impl Prepared {
    /// The value parameter `index` takes.
    pub fn value(&self, index: usize) -> &Value {
        &self.values[index]
    }
}

/// Evaluates every static node (parameters, constants and what is computed from them alone);
/// other nodes are `None`. A backend calls this once, at compile or load time.
pub fn eval_statics(graph: &Graph, prepared: &Prepared, precision: Precision) -> Vec<Option<Value>> {
    let statics = graph.static_mask();
    let mut values: Vec<Option<Value>> = vec![None; graph.nodes.len()];
    let syms = HashMap::new();
    for (id, node) in graph.nodes.iter() {
        if !statics[id.index()] {
            continue;
        }
        let args: Vec<&Value> = node
            .args
            .iter()
            .map(|a| values[a.index()].as_ref().unwrap_or_else(|| unreachable!("static arguments are static")))
            .collect();
        values[id.index()] = Some(eval(&node.op, &args, &node.ty, &syms, &[], prepared, precision));
    }
    values
}

/// Runs the graph on f32 inputs and returns its outputs as f32.
pub fn run(
    graph: &Graph,
    prepared: &Prepared,
    inputs: &[ArrayD<f32>],
    precision: Precision,
) -> Result<Vec<ArrayD<f32>>, RunError> {
    let syms = bind_inputs(graph, inputs)?;
    let mut uses = graph.use_counts();
    let mut values: Vec<Option<Value>> = vec![None; graph.nodes.len()];
    for (id, node) in graph.nodes.iter() {
        let args: Vec<&Value> = node
            .args
            .iter()
            .map(|a| values[a.index()].as_ref().unwrap_or_else(|| unreachable!("arguments are computed first")))
            .collect();
        let v = eval(&node.op, &args, &node.ty, &syms, inputs, prepared, precision);
        values[id.index()] = Some(v);
        for a in &node.args {
            uses[a.index()] -= 1;
            if uses[a.index()] == 0 {
                values[a.index()] = None;
            }
        }
    }
    Ok(graph
        .outputs
        .iter()
        .map(|o| values[o.index()].as_ref().map_or_else(|| unreachable!("outputs are kept"), Value::to_f32))
        .collect())
}

fn eval(
    op: &Op,
    args: &[&Value],
    ty: &TensorType,
    syms: &HashMap<String, i64>,
    inputs: &[ArrayD<f32>],
    prepared: &Prepared,
    precision: Precision,
) -> Value {
    match op {
        Op::Input { index } => Value::F32(inputs[*index].clone()),
        Op::Param { index } => prepared.values[*index].clone(),
        Op::Const { value } => Value::F32(ArrayD::from_elem(IxDyn(&[]), *value)),
        Op::Matmul => matmul(args[0], args[1]),
        Op::Conv2d(a) => conv2d(args[0], args[1], a),
        Op::BatchNorm { eps } => {
            batch_norm(args[0].f32(), args[1].f32(), args[2].f32(), args[3].f32(), args[4].f32(), *eps)
        }
        Op::Unary(u) => Value::F32(args[0].f32().mapv(|x| u.apply(x))),
        Op::Binary(b) => Value::F32(binary(*b, args[0].f32(), args[1].f32())),
        Op::Softmax { axis } => Value::F32(triton_runtime::ops::softmax(args[0].f32(), *axis)),
        Op::MaxPool2d(a) => Value::F32(pool(args[0].f32(), a, true)),
        Op::AvgPool2d(a) => Value::F32(pool(args[0].f32(), a, false)),
        Op::GlobalAvgPool => {
            let x = args[0].f32();
            let (b, c) = (x.shape()[0], x.shape()[1]);
            let flat =
                x.view().into_shape_with_order((b, c, x.len() / (b * c).max(1))).unwrap_or_else(|_| unreachable!());
            // The pixels summed in order, then divided by their count (docs/language.md).
            let n = flat.shape()[2] as f32;
            let mean = flat.map_axis(Axis(2), |lane| lane.iter().fold(0.0f32, |a, v| a + v) / n);
            Value::F32(mean.into_dyn())
        }
        Op::Reshape { .. } => {
            let shape: Vec<usize> = ty.shape.iter().map(|d| eval_dim(d, syms).unwrap_or(0) as usize).collect();
            match args[0] {
                Value::F32(a) => Value::F32(reshape(a, &shape)),
                Value::Int { data, scale, dtype } => {
                    let full = scale
                        .broadcast(data.raw_dim())
                        .map_or_else(|| unreachable!("scale broadcasts"), |f| f.to_owned());
                    Value::Int { data: reshape(data, &shape), scale: reshape(&full, &shape), dtype: *dtype }
                }
                Value::Trit { .. } => unreachable!("trit tensors only feed matmul and conv2d"),
            }
        }
        Op::Concat { axis } => {
            let views: Vec<ArrayViewD<'_, f32>> = args.iter().map(|a| a.f32().view()).collect();
            Value::F32(ndarray::concatenate(Axis(*axis), &views).unwrap_or_else(|_| unreachable!("verified shapes")))
        }
        Op::QuantizeI8 { scale } => {
            let x = args[0].f32();
            match precision {
                Precision::Fp32 => Value::F32(x.clone()),
                Precision::Ternary => quantize_i8(x, *scale),
            }
        }
        Op::Dequantize => Value::F32(args[0].to_f32()),
        Op::Fused(f) => fused(f, args),
    }
}

/// A fused op: exactly the unfused ops it replaces, in order.
fn fused(f: &crate::ir::Fused, args: &[&Value]) -> Value {
    use crate::ir::FusedBase;
    let base = match f.base {
        FusedBase::Matmul => matmul(args[0], args[1]),
        FusedBase::Conv2d(a) => conv2d(args[0], args[1], &a),
    };
    let mut y = base.to_f32();
    let channel_shape = |v: &ArrayD<f32>| -> ArrayD<f32> {
        match f.base {
            FusedBase::Matmul => v.clone(),
            FusedBase::Conv2d(_) => reshape(v, &[v.len(), 1, 1]),
        }
    };
    let mut i = 2;
    if f.scale {
        y = &y * &channel_shape(args[i].f32());
        i += 1;
    }
    if f.bias {
        y = &y + &channel_shape(args[i].f32());
        i += 1;
    }
    if f.residual {
        y = &y + args[i].f32();
    }
    if let Some(act) = f.act {
        y.mapv_inplace(|v| act.apply(v));
    }
    Value::F32(y)
}

fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    a.as_standard_layout()
        .to_owned()
        .into_shape_with_order(IxDyn(shape))
        .unwrap_or_else(|_| unreachable!("verified element count"))
}

fn binary(b: BinaryOp, x: &ArrayD<f32>, y: &ArrayD<f32>) -> ArrayD<f32> {
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
    }
}

/// Per-sample (dimension 0) or per-tensor int8 quantization, as documented
/// (`triton_runtime::ops::{absmax_scale, quantize}`).
pub fn quantize_i8(x: &ArrayD<f32>, fixed: Option<f32>) -> Value {
    use triton_runtime::ops::{absmax_scale, quantize};
    let q = |v: f32, factor: f32| quantize(v, factor) as i32;
    if let Some(s) = fixed {
        let factor = 1.0 / s;
        return Value::Int {
            data: x.mapv(|v| q(v, factor)),
            scale: ArrayD::from_elem(IxDyn(&[]), s),
            dtype: DType::I8,
        };
    }
    let x = x.as_standard_layout();
    let all = x.as_slice().unwrap_or_else(|| unreachable!("standard layout"));
    if x.ndim() <= 1 {
        let (s, factor) = absmax_scale(all);
        return Value::Int {
            data: x.mapv(|v| q(v, factor)),
            scale: ArrayD::from_elem(IxDyn(&[]), s),
            dtype: DType::I8,
        };
    }
    let b = x.shape()[0];
    let per = all.len() / b.max(1);
    let mut data = ArrayD::<i32>::zeros(x.raw_dim());
    let mut sshape = vec![1usize; x.ndim()];
    sshape[0] = b;
    let mut scale = ArrayD::<f32>::zeros(IxDyn(&sshape));
    let out = data.as_slice_mut().unwrap_or_else(|| unreachable!("fresh array"));
    let scales = scale.as_slice_mut().unwrap_or_else(|| unreachable!("fresh array"));
    for i in 0..b {
        let row = &all[i * per..(i + 1) * per];
        let (s, factor) = absmax_scale(row);
        for (d, v) in out[i * per..(i + 1) * per].iter_mut().zip(row) {
            *d = q(*v, factor);
        }
        scales[i] = s;
    }
    Value::Int { data, scale, dtype: DType::I8 }
}

/// Any tensor viewed as `[len / k, k]` rows of f64 (exact for every i32, i8 and f32 value).
fn rows_f64<T: Copy + Into<f64>>(a: &ArrayD<T>, k: usize) -> Array2<f64> {
    let rows = a.len() / k.max(1);
    a.as_standard_layout()
        .mapv(|v| v.into())
        .into_shape_with_order((rows, k))
        .unwrap_or_else(|_| unreachable!("row-major"))
}

/// The weight as an f64 matrix [N, K] (codes for quantized weights) and its per-row scale.
fn weight_matrix(w: &Value) -> (Array2<f64>, Option<ndarray::Array1<f32>>) {
    let rows = |len: usize, shape: &[usize]| len / shape[0].max(1);
    match w {
        Value::F32(a) => (rows_f64(a, rows(a.len(), a.shape())), None),
        Value::Trit { codes, alpha } => (rows_f64(codes, rows(codes.len(), codes.shape())), Some(alpha.clone())),
        Value::Int { data, scale, .. } => {
            (rows_f64(data, rows(data.len(), data.shape())), Some(scale.iter().copied().collect()))
        }
    }
}

fn matmul(x: &Value, w: &Value) -> Value {
    let (wm, wscale) = weight_matrix(w);
    let (n, k) = wm.dim();
    match x {
        Value::F32(xa) => {
            let mut y = rows_f64(xa, k).dot(&wm.t()).mapv(|v| v as f32).as_standard_layout().into_owned();
            if let Some(s) = &wscale {
                for mut row in y.outer_iter_mut() {
                    row.zip_mut_with(s, |v, a| *v *= a);
                }
            }
            let mut shape = xa.shape().to_vec();
            *shape.last_mut().unwrap_or_else(|| unreachable!("rank >= 1")) = n;
            Value::F32(y.into_shape_with_order(IxDyn(&shape)).unwrap_or_else(|_| unreachable!()))
        }
        Value::Int { data, scale, .. } => {
            let rows = data.len() / k.max(1);
            let acc = rows_f64(data, k).dot(&wm.t()).mapv(|v| v as i32).as_standard_layout().into_owned();
            // Row scales: the activation's scale per row (broadcast over features).
            let xs = scale.broadcast(data.raw_dim()).map_or_else(|| unreachable!(), |b| b.to_owned());
            let xs2 =
                xs.as_standard_layout().to_owned().into_shape_with_order((rows, k)).unwrap_or_else(|_| unreachable!());
            let ws = wscale.unwrap_or_else(|| unreachable!("an integer matmul has a quantized weight"));
            let mut out_scale = Array2::<f32>::zeros((rows, n));
            for r in 0..rows {
                let sx = if k > 0 { xs2[[r, 0]] } else { 1.0 };
                for c in 0..n {
                    out_scale[[r, c]] = sx * ws[c];
                }
            }
            let mut shape = data.shape().to_vec();
            *shape.last_mut().unwrap_or_else(|| unreachable!("rank >= 1")) = n;
            Value::Int {
                data: acc.into_shape_with_order(IxDyn(&shape)).unwrap_or_else(|_| unreachable!()),
                scale: out_scale.into_shape_with_order(IxDyn(&shape)).unwrap_or_else(|_| unreachable!()),
                dtype: DType::I32,
            }
        }
        Value::Trit { .. } => unreachable!("trits are never activations"),
    }
}

#[allow(clippy::too_many_arguments)]
/// im2col for one sample and one group: [C/g * KH * KW, OH * OW], zero padded.
fn im2col(
    x: &ArrayViewD<'_, f64>,
    c0: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    a: &ConvAttrs,
    oh: usize,
    ow: usize,
) -> Array2<f64> {
    let (h, w) = (x.shape()[1], x.shape()[2]);
    let mut cols = Array2::<f64>::zeros((cg * kh * kw, oh * ow));
    for c in 0..cg {
        for u in 0..kh {
            for v in 0..kw {
                let row = (c * kh + u) * kw + v;
                for i in 0..oh {
                    let y = (i * a.stride[0] as usize + u * a.dilation[0] as usize) as isize - a.padding[0] as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for j in 0..ow {
                        let xx =
                            (j * a.stride[1] as usize + v * a.dilation[1] as usize) as isize - a.padding[1] as isize;
                        if xx >= 0 && xx < w as isize {
                            cols[[row, i * ow + j]] = x[[c0 + c, y as usize, xx as usize]];
                        }
                    }
                }
            }
        }
    }
    cols
}

fn conv2d(x: &Value, w: &Value, a: &ConvAttrs) -> Value {
    let (wm, wscale) = weight_matrix(w);
    let wshape = match w {
        Value::F32(t) => t.shape().to_vec(),
        Value::Int { data, .. } => data.shape().to_vec(),
        Value::Trit { codes, .. } => codes.shape().to_vec(),
    };
    let (o, cg, kh, kw) = (wshape[0], wshape[1], wshape[2], wshape[3]);
    let (xf, xscale, integer) = match x {
        Value::F32(t) => (t.mapv(|v| v as f64), None, false),
        Value::Int { data, scale, .. } => (data.mapv(|v| v as f64), Some(scale.clone()), true),
        Value::Trit { .. } => unreachable!("trits are never activations"),
    };
    let (b, h, wd) = (xf.shape()[0], xf.shape()[2], xf.shape()[3]);
    let g = a.groups as usize;
    let og = o / g;
    let oh = (h + 2 * a.padding[0] as usize - a.dilation[0] as usize * (kh - 1) - 1) / a.stride[0] as usize + 1;
    let ow = (wd + 2 * a.padding[1] as usize - a.dilation[1] as usize * (kw - 1) - 1) / a.stride[1] as usize + 1;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, o, oh, ow]));
    for n in 0..b {
        let xs = xf.index_axis(Axis(0), n);
        for gi in 0..g {
            let cols = im2col(&xs, gi * cg, cg, kh, kw, a, oh, ow);
            let wg = wm.slice(s![gi * og..(gi + 1) * og, ..]);
            let y = wg.dot(&cols);
            let mut dst = out.slice_mut(s![n, gi * og..(gi + 1) * og, .., ..]);
            let y3 = y.into_shape_with_order((og, oh, ow)).unwrap_or_else(|_| unreachable!());
            dst.assign(&y3);
        }
    }
    if integer {
        let xscale = xscale.unwrap_or_else(|| unreachable!());
        let ws = wscale.unwrap_or_else(|| unreachable!("an integer conv has a quantized weight"));
        let mut scale = ArrayD::<f32>::zeros(IxDyn(&[b, o, 1, 1]));
        for n in 0..b {
            // One scale per sample (or per tensor): read it at the sample's first element.
            let sx = xscale.broadcast(IxDyn(&[b, 1, 1, 1])).map_or(1.0, |f| f[[n, 0, 0, 0]]);
            for c in 0..o {
                scale[[n, c, 0, 0]] = sx * ws[c];
            }
        }
        return Value::Int { data: out.mapv(|v| v as i32), scale, dtype: DType::I32 };
    }
    let mut y = out.mapv(|v| v as f32);
    if let Some(s) = wscale {
        for mut sample in y.outer_iter_mut() {
            for (mut ch, a) in sample.outer_iter_mut().zip(s.iter()) {
                ch.mapv_inplace(|v| v * a);
            }
        }
    }
    Value::F32(y)
}

fn batch_norm(
    x: &ArrayD<f32>,
    gamma: &ArrayD<f32>,
    beta: &ArrayD<f32>,
    mean: &ArrayD<f32>,
    var: &ArrayD<f32>,
    eps: f32,
) -> Value {
    let mut y = x.clone();
    for mut sample in y.outer_iter_mut() {
        for (c, mut ch) in sample.outer_iter_mut().enumerate() {
            let (g, b, m, v) = (gamma[[c]], beta[[c]], mean[[c]], var[[c]]);
            let inv = 1.0 / (v + eps).sqrt();
            ch.mapv_inplace(|t| (t - m) * inv * g + b);
        }
    }
    Value::F32(y)
}

fn pool(x: &ArrayD<f32>, a: &PoolAttrs, max: bool) -> ArrayD<f32> {
    let (b, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let [kh, kw] = [a.kernel[0] as usize, a.kernel[1] as usize];
    let [sh, sw] = [a.stride[0] as usize, a.stride[1] as usize];
    let [ph, pw] = [a.padding[0] as usize, a.padding[1] as usize];
    let oh = (h + 2 * ph - kh) / sh + 1;
    let ow = (w + 2 * pw - kw) / sw + 1;
    let x4 = x.view().into_dimensionality::<ndarray::Ix4>().unwrap_or_else(|_| unreachable!("rank 4"));
    let mut out = ndarray::Array4::<f32>::zeros((b, c, oh, ow));
    Zip::indexed(&mut out).for_each(|(n, ch, i, j), o| {
        let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
        for u in 0..kh {
            for v in 0..kw {
                let y = (i * sh + u) as isize - ph as isize;
                let z = (j * sw + v) as isize - pw as isize;
                let inside = y >= 0 && y < h as isize && z >= 0 && z < w as isize;
                let val = if inside {
                    x4[[n, ch, y as usize, z as usize]]
                } else if max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                };
                if max {
                    acc = triton_runtime::ops::pool_max(acc, val);
                } else {
                    acc += val;
                }
            }
        }
        *o = if max { acc } else { acc / (kh * kw) as f32 };
    });
    out.into_dyn()
}
