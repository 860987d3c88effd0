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

use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn, s};
use triton_runtime::DType;

use crate::invariant::{Broken, Invariant};
use crate::ir::{BinaryOp, ConvAttrs, Dim, Graph, Op, TensorType};
use crate::reference;
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
    InputCount {
        expected: usize,
        got: usize,
    },
    InputShape {
        name: String,
        expected: TensorType,
        got: Vec<usize>,
        why: String,
    },
    MissingWeight(String),
    /// An embedding's id names no row of its table.
    TokenId(triton_runtime::ops::TokenIdError),
    /// A fact the verifier guarantees did not hold: a bug in Triton, not in the input.
    Internal(Broken),
}

impl From<Broken> for RunError {
    fn from(b: Broken) -> Self {
        RunError::Internal(b)
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::InputCount { expected, got } => write!(f, "the model takes {expected} inputs, got {got}"),
            RunError::InputShape { name, expected, got, why } => {
                write!(f, "input `{name}` must have shape {expected}, got f32{got:?}: {why}")
            }
            RunError::MissingWeight(n) => write!(f, "no value for parameter `{n}`"),
            RunError::TokenId(e) => write!(f, "{e}"),
            RunError::Internal(b) => write!(f, "{b}"),
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
    fn f32(&self) -> Result<&ArrayD<f32>, Broken> {
        match self {
            Value::F32(a) => Ok(a),
            _ => Err(Broken("the operand is f32 (the verifier checks dtypes)")),
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
                let view = w.view().into_shape_with_order((rows, cols)).invariant("a weight is [rows, K]")?;
                let q = match quantized.as_deref_mut().and_then(|c| c.take(&p.name)) {
                    Some(q) => q,
                    None => quant::quantize(view, rule),
                };
                let codes =
                    q.codes.into_shape_with_order(IxDyn(w.shape())).invariant("codes have the weight's size")?;
                if p.dtype == DType::Trit {
                    Value::Trit { codes, alpha: q.scale }
                } else {
                    let mut sshape = vec![1usize; w.ndim()];
                    sshape[0] = rows;
                    let scale = q.scale.into_shape_with_order(IxDyn(&sshape)).invariant("one scale per row")?;
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
/// other nodes are `None`. A backend calls this once, at compile or load time. Each
/// parameter's value moves into the node that reads it last instead of being copied (a
/// compile's weights are large and the code generator consumes them).
pub fn eval_statics(graph: &Graph, prepared: Prepared, precision: Precision) -> Result<Vec<Option<Value>>, Broken> {
    let mut left = vec![0usize; prepared.values.len()];
    for (_, node) in graph.nodes.iter() {
        if let Op::Param { index } = node.op
            && let Some(n) = left.get_mut(index)
        {
            *n += 1;
        }
    }
    let mut params: Vec<Option<Value>> = prepared.values.into_iter().map(Some).collect();
    let no_params = Prepared { values: Vec::new() };
    let statics = graph.static_mask();
    let mut values: Vec<Option<Value>> = vec![None; graph.nodes.len()];
    let syms = HashMap::new();
    for (id, node) in graph.nodes.iter() {
        if !statics[id.index()] {
            continue;
        }
        if let Op::Param { index } = node.op {
            let n = left.get_mut(index).invariant("a parameter index is in range")?;
            *n -= 1;
            let slot = params.get_mut(index).invariant("a parameter index is in range")?;
            let value = if *n == 0 { slot.take() } else { slot.clone() };
            values[id.index()] = Some(value.invariant("a parameter is read once per reference")?);
            continue;
        }
        let args: Vec<&Value> = node
            .args
            .iter()
            .map(|a| values[a.index()].as_ref().invariant("the arguments of a static node are static"))
            .collect::<Result<_, _>>()?;
        // Only inputs carry ids, so no static node fails on one.
        let v = eval(&node.op, &args, &node.ty, &syms, &[], &no_params, precision).map_err(|e| match e {
            RunError::Internal(b) => b,
            _ => Broken("a static node evaluates"),
        })?;
        values[id.index()] = Some(v);
    }
    Ok(values)
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
            .map(|a| values[a.index()].as_ref().invariant("arguments are computed before their node"))
            .collect::<Result<_, _>>()?;
        let v = eval(&node.op, &args, &node.ty, &syms, inputs, prepared, precision)?;
        values[id.index()] = Some(v);
        for a in &node.args {
            uses[a.index()] -= 1;
            if uses[a.index()] == 0 {
                values[a.index()] = None;
            }
        }
    }
    let outputs = graph.outputs.iter().map(|o| values[o.index()].as_ref().invariant("outputs are kept"));
    Ok(outputs.map(|v| v.map(Value::to_f32)).collect::<Result<_, _>>()?)
}

fn eval(
    op: &Op,
    args: &[&Value],
    ty: &TensorType,
    syms: &HashMap<String, i64>,
    inputs: &[ArrayD<f32>],
    prepared: &Prepared,
    precision: Precision,
) -> Result<Value, RunError> {
    Ok(match op {
        Op::Input { index } => Value::F32(inputs.get(*index).invariant("the graph's inputs were bound")?.clone()),
        Op::Param { index } => prepared.values.get(*index).invariant("a parameter index is in range")?.clone(),
        Op::Const { value } => Value::F32(ArrayD::from_elem(IxDyn(&[]), *value)),
        Op::Matmul => matmul(args[0], args[1])?,
        Op::Conv2d(a) => conv2d(args[0], args[1], a)?,
        Op::BatchNorm { eps } => {
            let f = |i: usize| args[i].f32();
            Value::F32(reference::batch_norm(f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, *eps)?)
        }
        Op::Unary(u) => Value::F32(triton_runtime::ops::unary_array(*u, args[0].f32()?)),
        Op::Binary(b) => Value::F32(binary(*b, args[0].f32()?, args[1].f32()?)?),
        Op::Softmax { axis } => Value::F32(triton_runtime::ops::softmax(args[0].f32()?, *axis)),
        Op::LayerNorm { eps } | Op::RmsNorm { eps } => Value::F32(norm(op, args, *eps)?),
        Op::Permute { perm } => Value::F32(reference::permute(args[0].f32()?, perm)),
        Op::BatchMatmul => Value::F32(reference::bmm(args[0].f32()?, args[1].f32()?)?),
        Op::CausalMask => Value::F32(reference::causal_mask(args[0].f32()?)),
        Op::Slice { axis, start, end } => Value::F32(reference::slice(args[0].f32()?, *axis, *start, *end)),
        Op::Rope { theta } => Value::F32(reference::rope(args[0].f32()?, *theta, false)),
        Op::Embedding => Value::F32(reference::embedding(args[0].f32()?, args[1].f32()?)?),
        Op::Reduce { axis, mean } => Value::F32(
            triton_runtime::ops::reduce_axis(args[0].f32()?, *axis, *mean)
                .invariant("a reduced axis exists (checked)")?,
        ),
        Op::MaxPool2d(a) => Value::F32(reference::pool(args[0].f32()?, a, true)?.0),
        Op::AvgPool2d(a) => Value::F32(reference::pool(args[0].f32()?, a, false)?.0),
        Op::GlobalAvgPool => {
            let x = args[0].f32()?;
            let (b, c) = (x.shape()[0], x.shape()[1]);
            let flat = x
                .view()
                .into_shape_with_order((b, c, x.len() / (b * c).max(1)))
                .invariant("[B, C, H, W] is [B, C, H * W]")?;
            // The pixels summed in order, then divided by their count (docs/language.md).
            let n = flat.shape()[2] as f32;
            let mean = flat.map_axis(Axis(2), |lane| lane.iter().fold(0.0f32, |a, v| a + v) / n);
            Value::F32(mean.into_dyn())
        }
        Op::Reshape { .. } => {
            let shape: Vec<usize> = ty.shape.iter().map(|d| eval_dim(d, syms).unwrap_or(0) as usize).collect();
            match args[0] {
                Value::F32(a) => Value::F32(reshape(a, &shape)?),
                Value::Int { data, scale, dtype } => {
                    let full =
                        scale.broadcast(data.raw_dim()).invariant("an int tensor's scale broadcasts")?.to_owned();
                    Value::Int { data: reshape(data, &shape)?, scale: reshape(&full, &shape)?, dtype: *dtype }
                }
                Value::Trit { .. } => return Err(Broken("trit tensors only feed matmul and conv2d").into()),
            }
        }
        Op::Concat { axis } => {
            let views: Vec<ArrayViewD<'_, f32>> =
                args.iter().map(|a| a.f32().map(|a| a.view())).collect::<Result<_, _>>()?;
            Value::F32(ndarray::concatenate(Axis(*axis), &views).invariant("concatenated shapes agree")?)
        }
        Op::QuantizeI8 { scale } => {
            let x = args[0].f32()?;
            match precision {
                Precision::Fp32 => Value::F32(x.clone()),
                Precision::Ternary => quantize_i8(x, *scale)?,
            }
        }
        Op::Dequantize => Value::F32(args[0].to_f32()),
        Op::Fused(f) => fused(f, args)?,
    })
}

/// A fused op: exactly the unfused ops it replaces, in order.
fn fused(f: &crate::ir::Fused, args: &[&Value]) -> Result<Value, Broken> {
    use crate::ir::FusedBase;
    let base = match f.base {
        FusedBase::Matmul => matmul(args[0], args[1])?,
        FusedBase::Conv2d(a) => conv2d(args[0], args[1], &a)?,
    };
    let mut y = base.to_f32();
    let channel_shape = |v: &ArrayD<f32>| -> Result<ArrayD<f32>, Broken> {
        match f.base {
            FusedBase::Matmul => Ok(v.clone()),
            FusedBase::Conv2d(_) => reshape(v, &[v.len(), 1, 1]),
        }
    };
    let mut i = 2;
    if f.scale {
        y = binary(BinaryOp::Mul, &y, &channel_shape(args[i].f32()?)?)?;
        i += 1;
    }
    if f.bias {
        y = binary(BinaryOp::Add, &y, &channel_shape(args[i].f32()?)?)?;
        i += 1;
    }
    if f.residual {
        y = binary(BinaryOp::Add, &y, args[i].f32()?)?;
    }
    if let Some(act) = f.act {
        y.mapv_inplace(|v| act.apply(v));
    }
    Ok(Value::F32(y))
}

fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>, Broken> {
    a.as_standard_layout().to_owned().into_shape_with_order(IxDyn(shape)).invariant("a reshape keeps the element count")
}

/// An elementwise op with numpy broadcasting (the verifier checked that the shapes broadcast).
fn binary(b: BinaryOp, x: &ArrayD<f32>, y: &ArrayD<f32>) -> Result<ArrayD<f32>, Broken> {
    let ndim = x.ndim().max(y.ndim());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, ndim - s.len()).chain(s.iter().copied()).collect() };
    let (xs, ys) = (pad(x.shape()), pad(y.shape()));
    let mut shape = Vec::with_capacity(ndim);
    for (p, q) in xs.iter().zip(&ys) {
        shape.push(match (*p, *q) {
            (p, q) if p == q || q == 1 => p,
            (1, q) => q,
            _ => return Err(Broken("elementwise operands broadcast")),
        });
    }
    let xb = x.broadcast(IxDyn(&shape)).invariant("elementwise operands broadcast")?;
    let yb = y.broadcast(IxDyn(&shape)).invariant("elementwise operands broadcast")?;
    Ok(ndarray::Zip::from(&xb).and(&yb).map_collect(|&p, &q| b.apply(p, q)))
}

/// Per-sample (dimension 0) or per-tensor int8 quantization, as documented
/// (`triton_runtime::ops::{absmax_scale, quantize}`).
pub fn quantize_i8(x: &ArrayD<f32>, fixed: Option<f32>) -> Result<Value, Broken> {
    use triton_runtime::ops::{absmax_scale, quantize};
    let q = |v: f32, factor: f32| quantize(v, factor) as i32;
    if let Some(s) = fixed {
        let factor = 1.0 / s;
        return Ok(Value::Int {
            data: x.mapv(|v| q(v, factor)),
            scale: ArrayD::from_elem(IxDyn(&[]), s),
            dtype: DType::I8,
        });
    }
    let x = x.as_standard_layout();
    let all = x.as_slice().invariant("a standard-layout array is contiguous")?;
    if x.ndim() <= 1 {
        let (s, factor) = absmax_scale(all);
        return Ok(Value::Int {
            data: x.mapv(|v| q(v, factor)),
            scale: ArrayD::from_elem(IxDyn(&[]), s),
            dtype: DType::I8,
        });
    }
    let b = x.shape()[0];
    let per = all.len() / b.max(1);
    let mut data = ArrayD::<i32>::zeros(x.raw_dim());
    let mut sshape = vec![1usize; x.ndim()];
    sshape[0] = b;
    let mut scale = ArrayD::<f32>::zeros(IxDyn(&sshape));
    let out = data.as_slice_mut().invariant("a fresh array is contiguous")?;
    let scales = scale.as_slice_mut().invariant("a fresh array is contiguous")?;
    for i in 0..b {
        let row = &all[i * per..(i + 1) * per];
        let (s, factor) = absmax_scale(row);
        for (d, v) in out[i * per..(i + 1) * per].iter_mut().zip(row) {
            *d = q(*v, factor);
        }
        scales[i] = s;
    }
    Ok(Value::Int { data, scale, dtype: DType::I8 })
}

/// Any tensor viewed as `[len / k, k]` rows of f64 (exact for every i32, i8 and f32 value).
fn rows_f64<T: Copy + Into<f64>>(a: &ArrayD<T>, k: usize) -> Result<Array2<f64>, Broken> {
    let rows = a.len() / k.max(1);
    a.as_standard_layout().mapv(|v| v.into()).into_shape_with_order((rows, k)).invariant("a tensor is rows of K")
}

/// The weight as an f64 matrix [N, K] (codes for quantized weights) and its per-row scale.
fn weight_matrix(w: &Value) -> Result<(Array2<f64>, Option<ndarray::Array1<f32>>), Broken> {
    let rows = |len: usize, shape: &[usize]| len / shape.first().copied().unwrap_or(1).max(1);
    Ok(match w {
        Value::F32(a) => (rows_f64(a, rows(a.len(), a.shape()))?, None),
        Value::Trit { codes, alpha } => (rows_f64(codes, rows(codes.len(), codes.shape()))?, Some(alpha.clone())),
        Value::Int { data, scale, .. } => {
            (rows_f64(data, rows(data.len(), data.shape()))?, Some(scale.iter().copied().collect()))
        }
    })
}

/// `shape` with its last dimension replaced by `n`.
fn last_is(shape: &[usize], n: usize) -> Vec<usize> {
    let mut shape = shape.to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    shape
}

fn matmul(x: &Value, w: &Value) -> Result<Value, Broken> {
    let (wm, wscale) = weight_matrix(w)?;
    let (n, k) = wm.dim();
    Ok(match x {
        Value::F32(xa) => {
            let mut y = rows_f64(xa, k)?.dot(&wm.t()).mapv(|v| v as f32).as_standard_layout().into_owned();
            if let Some(s) = &wscale {
                for mut row in y.outer_iter_mut() {
                    row.zip_mut_with(s, |v, a| *v *= a);
                }
            }
            let shape = last_is(xa.shape(), n);
            Value::F32(y.into_shape_with_order(IxDyn(&shape)).invariant("a product has [.., N] values")?)
        }
        Value::Int { data, scale, .. } => {
            let rows = data.len() / k.max(1);
            let acc = rows_f64(data, k)?.dot(&wm.t()).mapv(|v| v as i32).as_standard_layout().into_owned();
            // Row scales: the activation's scale per row (broadcast over features).
            let xs = scale.broadcast(data.raw_dim()).invariant("an int tensor's scale broadcasts")?.to_owned();
            let xs2 = xs.as_standard_layout().to_owned().into_shape_with_order((rows, k)).invariant("rows of K")?;
            let ws = wscale.invariant("an integer matmul has a quantized weight")?;
            let mut out_scale = Array2::<f32>::zeros((rows, n));
            for r in 0..rows {
                let sx = if k > 0 { xs2[[r, 0]] } else { 1.0 };
                for c in 0..n {
                    out_scale[[r, c]] = sx * ws[c];
                }
            }
            let shape = last_is(data.shape(), n);
            Value::Int {
                data: acc.into_shape_with_order(IxDyn(&shape)).invariant("a product has [.., N] values")?,
                scale: out_scale.into_shape_with_order(IxDyn(&shape)).invariant("a product has [.., N] scales")?,
                dtype: DType::I32,
            }
        }
        Value::Trit { .. } => return Err(Broken("trits are never activations")),
    })
}

/// A convolution (NCHW) on the reference columns ([`reference::im2col`]), in f64: exact for
/// integer operands, and the f32 result rounded once.
fn conv2d(x: &Value, w: &Value, a: &ConvAttrs) -> Result<Value, Broken> {
    let (wm, wscale) = weight_matrix(w)?;
    let wshape = match w {
        Value::F32(t) => t.shape().to_vec(),
        Value::Int { data, .. } => data.shape().to_vec(),
        Value::Trit { codes, .. } => codes.shape().to_vec(),
    };
    let (xf, xscale) = match x {
        Value::F32(t) => (t.mapv(|v| v as f64), None),
        Value::Int { data, scale, .. } => (data.mapv(|v| v as f64), Some(scale.clone())),
        Value::Trit { .. } => return Err(Broken("trits are never activations")),
    };
    if xf.ndim() != 4 || wshape.len() != 4 {
        return Err(Broken("a convolution's input and weight have rank 4"));
    }
    let g = reference::conv_geom(xf.shape(), &wshape, a);
    let (b, o, og, k, p) = (xf.shape()[0], g.o, g.og(), g.k(), g.pixels());
    let xs = xf.as_slice().invariant("a fresh array is contiguous")?;
    let cols = reference::im2col(xs, b, &g)?;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, o, g.oh, g.ow]));
    for n in 0..b {
        for gi in 0..g.groups {
            let xc = cols.slice(s![n * p..(n + 1) * p, gi * k..(gi + 1) * k]);
            let y = wm.slice(s![gi * og..(gi + 1) * og, ..]).dot(&xc.t());
            let y3 = y.into_shape_with_order((og, g.oh, g.ow)).invariant("a group's output is [O / g, OH, OW]")?;
            out.slice_mut(s![n, gi * og..(gi + 1) * og, .., ..]).assign(&y3);
        }
    }
    if let Some(xscale) = xscale {
        let ws = wscale.invariant("an integer conv has a quantized weight")?;
        let mut scale = ArrayD::<f32>::zeros(IxDyn(&[b, o, 1, 1]));
        for n in 0..b {
            // One scale per sample (or per tensor): read it at the sample's first element.
            let sx = xscale.broadcast(IxDyn(&[b, 1, 1, 1])).map_or(1.0, |f| f[[n, 0, 0, 0]]);
            for c in 0..o {
                scale[[n, c, 0, 0]] = sx * ws[c];
            }
        }
        return Ok(Value::Int { data: out.mapv(|v| v as i32), scale, dtype: DType::I32 });
    }
    let mut y = out.mapv(|v| v as f32);
    if let Some(s) = wscale {
        for mut sample in y.outer_iter_mut() {
            for (mut ch, a) in sample.outer_iter_mut().zip(s.iter()) {
                ch.mapv_inplace(|v| v * a);
            }
        }
    }
    Ok(Value::F32(y))
}

/// Layer or RMS normalization over the last axis (the shared definition in `runtime::ops`).
pub(crate) fn norm(op: &Op, args: &[&Value], eps: f32) -> Result<ArrayD<f32>, Broken> {
    let vector = |i: usize| -> Result<Vec<f32>, Broken> { Ok(args[i].f32()?.iter().copied().collect()) };
    let gamma = vector(1)?;
    let beta = match op {
        Op::LayerNorm { .. } => Some(vector(2)?),
        _ => None,
    };
    triton_runtime::ops::norm_rows(args[0].f32()?, &gamma, beta.as_deref(), eps, beta.is_none())
        .invariant("a normalization's vectors have the last axis' length (checked)")
}
