//! Built-in ops as the user calls them: signatures, argument binding, and lowering to IR ops.
//!
//! Rules:
//! - [`Op`] names the source-level ops (`ternary_matmul`, `flatten`, ...); each lowers to one
//!   [`ir::Op`] with resolved attributes (defaults filled in, axes normalised, `-1` inferred).
//! - The dtype and shape rules are not here: they are [`ir::Op::infer`], shared with the IR
//!   verifier. This module maps their [`OpError`]s to diagnostics pointing at the argument at
//!   fault, in the user's words.
//! - Arguments are bound by position or keyword against [`OpSpec::params`]; every mismatch is a
//!   diagnostic that names the op, the parameter and what was expected.

use triton_runtime::DType;

use super::args::Misfit;
use super::value::{TensorType, Value};
use crate::diagnostics::{Code, Diag};
use crate::ir::dim::{Dim, DimError};
use crate::ir::{self, BinaryOp, ConvAttrs, NodeId, OpError, PoolAttrs, UnaryOp};
use crate::source::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Matmul,
    TernaryMatmul,
    Conv2d,
    TernaryConv2d,
    BatchNorm,
    Relu,
    Relu6,
    Sigmoid,
    Silu,
    Tanh,
    Gelu,
    GeluTanh,
    Exp,
    Sqrt,
    LayerNorm,
    RmsNorm,
    Permute,
    Transpose,
    Bmm,
    Mean,
    Sum,
    CausalMask,
    Embedding,
    Rope,
    Slice,
    Softmax,
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    MaxPool2d,
    AvgPool2d,
    GlobalAvgPool,
    Flatten,
    Reshape,
    Concat,
    QuantizeI8,
    Dequantize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tensor,
    /// A tensor or a compile-time number (promoted to an f32 scalar tensor).
    TensorOrScalar,
    /// A known int.
    Int,
    /// A known int, or a list of two (height, width).
    IntPair,
    Float,
    /// A list of ints, possibly symbolic (`[B, C, 1, 1]`).
    Dims,
    /// A list of tensors.
    Tensors,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Tensor => "a tensor",
            Kind::TensorOrScalar => "a tensor or a number",
            Kind::Int => "an int",
            Kind::IntPair => "an int or a list of two ints",
            Kind::Float => "a number",
            Kind::Dims => "a list of dimensions",
            Kind::Tensors => "a list of tensors",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum ArgDefault {
    Required,
    /// Optional with no value (the rule decides, e.g. pooling stride = kernel).
    Absent,
    Int(i64),
    Float(f64),
}

#[derive(Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub default: ArgDefault,
}

#[derive(Debug)]
pub struct OpSpec {
    pub op: Op,
    pub name: &'static str,
    pub params: &'static [ParamSpec],
}

const fn p(name: &'static str, kind: Kind, default: ArgDefault) -> ParamSpec {
    ParamSpec { name, kind, default }
}

use ArgDefault::{Absent, Required};
use Kind::*;

const X: ParamSpec = p("x", Tensor, Required);
const UNARY: &[ParamSpec] = &[X];
const BINARY: &[ParamSpec] = &[p("a", TensorOrScalar, Required), p("b", TensorOrScalar, Required)];
const MATMUL: &[ParamSpec] = &[X, p("w", Tensor, Required)];
const CONV: &[ParamSpec] = &[
    X,
    p("w", Tensor, Required),
    p("stride", IntPair, ArgDefault::Int(1)),
    p("padding", IntPair, ArgDefault::Int(0)),
    p("dilation", IntPair, ArgDefault::Int(1)),
    p("groups", Int, ArgDefault::Int(1)),
];
const POOL: &[ParamSpec] =
    &[X, p("kernel", IntPair, Required), p("stride", IntPair, Absent), p("padding", IntPair, ArgDefault::Int(0))];

pub const OPS: &[OpSpec] = &[
    OpSpec { op: Op::Matmul, name: "matmul", params: MATMUL },
    OpSpec { op: Op::TernaryMatmul, name: "ternary_matmul", params: MATMUL },
    OpSpec { op: Op::Conv2d, name: "conv2d", params: CONV },
    OpSpec { op: Op::TernaryConv2d, name: "ternary_conv2d", params: CONV },
    OpSpec {
        op: Op::BatchNorm,
        name: "batch_norm",
        params: &[
            X,
            p("gamma", Tensor, Required),
            p("beta", Tensor, Required),
            p("mean", Tensor, Required),
            p("var", Tensor, Required),
            p("eps", Float, ArgDefault::Float(1e-5)),
        ],
    },
    OpSpec { op: Op::Relu, name: "relu", params: UNARY },
    OpSpec { op: Op::Relu6, name: "relu6", params: UNARY },
    OpSpec { op: Op::Sigmoid, name: "sigmoid", params: UNARY },
    OpSpec { op: Op::Silu, name: "silu", params: UNARY },
    OpSpec { op: Op::Tanh, name: "tanh", params: UNARY },
    OpSpec { op: Op::Gelu, name: "gelu", params: UNARY },
    OpSpec { op: Op::GeluTanh, name: "gelu_tanh", params: UNARY },
    OpSpec { op: Op::Exp, name: "exp", params: UNARY },
    OpSpec { op: Op::Sqrt, name: "sqrt", params: UNARY },
    OpSpec {
        op: Op::LayerNorm,
        name: "layer_norm",
        params: &[
            X,
            p("gamma", Tensor, Required),
            p("beta", Tensor, Required),
            p("eps", Float, ArgDefault::Float(1e-5)),
        ],
    },
    OpSpec {
        op: Op::RmsNorm,
        name: "rms_norm",
        params: &[X, p("gamma", Tensor, Required), p("eps", Float, ArgDefault::Float(1e-5))],
    },
    OpSpec { op: Op::Permute, name: "permute", params: &[X, p("dims", Dims, Required)] },
    OpSpec { op: Op::Transpose, name: "transpose", params: &[X, p("dim0", Int, Required), p("dim1", Int, Required)] },
    OpSpec { op: Op::CausalMask, name: "causal_mask", params: UNARY },
    OpSpec {
        op: Op::Slice,
        name: "slice",
        params: &[X, p("axis", Int, Required), p("start", Int, Required), p("end", Int, Required)],
    },
    OpSpec { op: Op::Rope, name: "rope", params: &[X, p("theta", Float, ArgDefault::Float(10000.0))] },
    OpSpec {
        op: Op::Embedding,
        name: "embedding",
        params: &[p("ids", Tensor, Required), p("table", Tensor, Required)],
    },
    OpSpec { op: Op::Mean, name: "mean", params: &[X, p("axis", Int, Required)] },
    OpSpec { op: Op::Sum, name: "sum", params: &[X, p("axis", Int, Required)] },
    OpSpec { op: Op::Bmm, name: "bmm", params: &[p("a", Tensor, Required), p("b", Tensor, Required)] },
    OpSpec { op: Op::Softmax, name: "softmax", params: &[X, p("axis", Int, ArgDefault::Int(-1))] },
    OpSpec { op: Op::Add, name: "add", params: BINARY },
    OpSpec { op: Op::Sub, name: "sub", params: BINARY },
    OpSpec { op: Op::Mul, name: "mul", params: BINARY },
    OpSpec { op: Op::Div, name: "div", params: BINARY },
    OpSpec { op: Op::MaxPool2d, name: "max_pool2d", params: POOL },
    OpSpec { op: Op::AvgPool2d, name: "avg_pool2d", params: POOL },
    OpSpec { op: Op::GlobalAvgPool, name: "global_avg_pool", params: UNARY },
    OpSpec { op: Op::Flatten, name: "flatten", params: &[X, p("start", Int, ArgDefault::Int(1))] },
    OpSpec { op: Op::Reshape, name: "reshape", params: &[X, p("shape", Dims, Required)] },
    OpSpec {
        op: Op::Concat,
        name: "concat",
        params: &[p("xs", Tensors, Required), p("axis", Int, ArgDefault::Int(1))],
    },
    OpSpec { op: Op::QuantizeI8, name: "quantize_i8", params: &[X, p("scale", Float, Absent)] },
    OpSpec { op: Op::Dequantize, name: "dequantize", params: UNARY },
];

/// Compile-time functions on numbers.
pub const SCALAR_FNS: &[&str] = &["min", "max"];

pub fn spec(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == name)
}

pub fn is_builtin(name: &str) -> bool {
    spec(name).is_some() || SCALAR_FNS.contains(&name)
}

/// Well-known ops of other frameworks that Triton does not have yet: a near-miss suggestion
/// (`mish` -> `min`) would mislead, so the diagnostic says what they are instead.
pub fn not_yet(name: &str) -> Option<&'static str> {
    const KNOWN: [(&str, &str); 3] = [("elu", "ELU"), ("selu", "SELU"), ("mish", "Mish")];
    KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, what)| *what)
}

pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|s| s.name).chain(SCALAR_FNS.iter().copied())
}

/// One argument as evaluated at the call site.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgVal {
    pub name: Option<(String, Span)>,
    pub value: Value,
    pub span: Span,
}

/// Arguments bound to an op's parameters (by index into `OpSpec::params`).
#[derive(Debug)]
pub struct Bound {
    pub values: Vec<Option<(Value, Span)>>,
    pub call: Span,
    pub name: &'static str,
}

impl Bound {
    fn span(&self, i: usize) -> Span {
        self.values[i].as_ref().map_or(self.call, |(_, s)| *s)
    }

    fn int(&self, i: usize) -> Option<i64> {
        match &self.values[i] {
            Some((Value::Int(d), _)) => d.as_known(),
            _ => None,
        }
    }

    fn float(&self, i: usize) -> Option<f64> {
        match &self.values[i] {
            Some((Value::Float(v), _)) => Some(*v),
            Some((Value::Int(d), _)) => d.as_known().map(|v| v as f64),
            _ => None,
        }
    }

    fn pair(&self, i: usize) -> Option<[i64; 2]> {
        match &self.values[i] {
            Some((Value::Int(d), _)) => d.as_known().map(|v| [v, v]),
            Some((Value::List(v), _)) => match v.as_slice() {
                [Value::Int(a), Value::Int(b)] => Some([a.as_known()?, b.as_known()?]),
                _ => None,
            },
            _ => None,
        }
    }
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Poison) => true,
        (Tensor, Value::Tensor(_)) => true,
        (TensorOrScalar, Value::Tensor(_) | Value::Int(_) | Value::Float(_)) => true,
        (Int, Value::Int(d)) => d.is_known(),
        (IntPair, Value::Int(d)) => d.is_known(),
        (IntPair, Value::List(v)) => v.len() == 2 && v.iter().all(|x| matches!(x, Value::Int(d) if d.is_known())),
        (Float, Value::Float(_)) => true,
        (Float, Value::Int(d)) => d.is_known(),
        (Dims, Value::List(v)) => v.iter().all(|x| matches!(x, Value::Int(_))),
        (Tensors, Value::List(v)) => v.iter().all(|x| matches!(x, Value::Tensor(_) | Value::Poison)),
        _ => false,
    }
}

/// Binds call arguments to an op's parameters. `Ok(None)` means an argument was poison: the
/// caller returns poison without a new diagnostic.
pub fn bind(spec: &'static OpSpec, args: &[ArgVal], call: Span) -> Result<Option<Bound>, Diag> {
    let params = spec.params;
    let names: Vec<&str> = params.iter().map(|p| p.name).collect();
    let slots = super::args::assign(&names, args).map_err(|m| match m {
        Misfit::Extra { arg } => Diag::error(
            Code::ArgumentCount,
            format!("`{}` takes at most {} arguments, got {}", spec.name, params.len(), args.len()),
        )
        .at(arg.span, "extra argument")
        .help(signature_help(spec)),
        Misfit::Unknown { name, span } => {
            Diag::error(Code::UnknownArgument, format!("`{}` has no parameter `{name}`", spec.name))
                .at(span, "unknown keyword argument")
                .help(signature_help(spec))
        }
        Misfit::Twice { index, arg } => Diag::error(
            Code::DuplicateArgument,
            format!("argument `{}` of `{}` is given twice", params[index].name, spec.name),
        )
        .at(arg.span, "given again here"),
    })?;
    let mut values: Vec<Option<(Value, Span)>> = vec![None; params.len()];
    for (index, a) in slots.iter().enumerate() {
        let Some(a) = a else { continue };
        if !kind_ok(params[index].kind, &a.value) {
            let symbolic = matches!(&a.value, Value::Int(d) if !d.is_known());
            let mut d = Diag::error(
                Code::ArgumentKind,
                format!(
                    "argument `{}` of `{}` must be {}, found {}",
                    params[index].name,
                    spec.name,
                    params[index].kind.describe(),
                    a.value.describe()
                ),
            )
            .at(a.span, format!("expected {}", params[index].kind.describe()));
            if symbolic {
                d = d.help("this value depends on a symbolic dimension; it must be known at compile time");
            }
            return Err(d);
        }
        values[index] = Some((a.value.clone(), a.span));
    }
    for (i, p) in params.iter().enumerate() {
        if values[i].is_none() {
            match p.default {
                ArgDefault::Required => {
                    return Err(Diag::error(
                        Code::ArgumentCount,
                        format!("`{}` is missing its argument `{}`", spec.name, p.name),
                    )
                    .at(call, format!("`{}` not given", p.name))
                    .help(signature_help(spec)));
                }
                ArgDefault::Int(v) => values[i] = Some((Value::Int(Dim::known(v)), call)),
                ArgDefault::Float(v) => values[i] = Some((Value::Float(v), call)),
                ArgDefault::Absent => {}
            }
        }
    }
    let poisoned = values.iter().flatten().any(|(v, _)| match v {
        Value::Poison => true,
        Value::List(items) => items.contains(&Value::Poison),
        _ => false,
    });
    if poisoned {
        return Ok(None);
    }
    Ok(Some(Bound { values, call, name: spec.name }))
}

pub fn signature_help(spec: &OpSpec) -> String {
    let ps: Vec<String> = spec
        .params
        .iter()
        .map(|p| match p.default {
            ArgDefault::Required => p.name.to_string(),
            ArgDefault::Absent => format!("{}=none", p.name),
            ArgDefault::Int(v) => format!("{}={v}", p.name),
            ArgDefault::Float(v) => format!("{}={v:e}", p.name),
        })
        .collect();
    format!("signature: {}({})", spec.name, ps.join(", "))
}

/// An input of a lowered op: a tensor node, or a scalar the caller turns into a `Const` node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Node(NodeId),
    Scalar(f32),
}

/// An op call ready to become an IR node.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub op: ir::Op,
    pub args: Vec<Operand>,
    pub ty: TensorType,
}

/// One input of the IR op, with where it came from (for messages).
struct Input {
    ty: TensorType,
    span: Span,
    decl: Option<Span>,
    operand: Operand,
    /// Index of the source-level parameter it was bound to.
    param: usize,
}

impl Bound {
    /// A diagnostic for argument `i` not being `what` ([`bind`] checks kinds first, so this is
    /// a second line of defence, worded for the user all the same).
    fn not_a(&self, i: usize, what: &str) -> Diag {
        let span = self.span(i);
        Diag::error(Code::ArgumentKind, format!("argument {} of `{}` must be {what}", i + 1, self.name))
            .at(span, format!("expected {what}"))
    }

    /// The items of list argument `i`, each a tensor.
    fn tensor_list(&self, i: usize) -> Result<(Vec<&super::value::Tensor>, Span), Diag> {
        let Some((Value::List(items), span)) = &self.values[i] else {
            return Err(self.not_a(i, "a list of tensors"));
        };
        let tensors = items.iter().map(|v| match v {
            Value::Tensor(t) => Ok(t),
            _ => Err(self.not_a(i, "a list of tensors")),
        });
        Ok((tensors.collect::<Result<_, _>>()?, *span))
    }

    fn input(&self, i: usize) -> Result<Input, Diag> {
        Ok(match &self.values[i] {
            Some((Value::Tensor(t), span)) => {
                Input { ty: t.ty.clone(), span: *span, decl: t.decl, operand: Operand::Node(t.node), param: i }
            }
            Some((v, span)) => Input {
                ty: TensorType::new(DType::F32, Vec::new()),
                span: *span,
                decl: None,
                operand: Operand::Scalar(match v {
                    Value::Int(d) => d.as_known().unwrap_or(0) as f32,
                    Value::Float(f) => *f as f32,
                    _ => 0.0,
                }),
                param: i,
            },
            None => return Err(self.not_a(i, "given")),
        })
    }
}

fn dim_err(e: DimError, span: Span, what: &str) -> Diag {
    match e {
        DimError::Overflow => {
            Diag::error(Code::SizeOverflow, format!("{what} overflows a 64-bit integer")).at(span, "too large")
        }
        DimError::DivisionByZero => {
            Diag::error(Code::DivisionByZero, format!("{what} divides by zero")).at(span, "division by zero")
        }
    }
}

fn normalize_axis(b: &Bound, i: usize, rank: usize) -> Result<usize, Diag> {
    let axis = b.int(i).unwrap_or(0);
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if rank == 0 || a < 0 || a >= r {
        return Err(Diag::error(
            Code::InvalidArgument,
            format!("`{}` axis {axis} is out of range for a tensor with {rank} dimensions", b.name),
        )
        .at(b.span(i), format!("valid axes: {} to {}", -r, r - 1)));
    }
    Ok(a as usize)
}

/// Lowers a bound call to an IR op and types it.
pub fn lower(op: Op, b: &Bound) -> Result<Lowered, Diag> {
    let inputs: Vec<Input> = match op {
        Op::Concat => {
            let (items, list_span) = b.tensor_list(0)?;
            items
                .into_iter()
                .map(|t| Input {
                    ty: t.ty.clone(),
                    span: list_span,
                    decl: t.decl,
                    operand: Operand::Node(t.node),
                    param: 0,
                })
                .collect()
        }
        Op::Matmul | Op::TernaryMatmul | Op::Conv2d | Op::TernaryConv2d | Op::Add | Op::Sub | Op::Mul | Op::Div => {
            vec![b.input(0)?, b.input(1)?]
        }
        Op::BatchNorm => (0..5).map(|i| b.input(i)).collect::<Result<_, _>>()?,
        Op::LayerNorm => (0..3).map(|i| b.input(i)).collect::<Result<_, _>>()?,
        Op::Bmm | Op::Embedding => vec![b.input(0)?, b.input(1)?],
        Op::RmsNorm => (0..2).map(|i| b.input(i)).collect::<Result<_, _>>()?,
        _ => vec![b.input(0)?],
    };
    if matches!(op, Op::TernaryMatmul | Op::TernaryConv2d) && inputs[1].ty.dtype != DType::Trit {
        return Err(dtype_diag(b, &inputs[1], &[DType::Trit]));
    }
    let ir_op = match op {
        Op::Matmul | Op::TernaryMatmul => ir::Op::Matmul,
        Op::Conv2d | Op::TernaryConv2d => ir::Op::Conv2d(ConvAttrs {
            stride: b.pair(2).unwrap_or([1, 1]),
            padding: b.pair(3).unwrap_or([0, 0]),
            dilation: b.pair(4).unwrap_or([1, 1]),
            groups: b.int(5).unwrap_or(1),
        }),
        Op::BatchNorm => ir::Op::BatchNorm { eps: b.float(5).unwrap_or(1e-5) as f32 },
        Op::LayerNorm => ir::Op::LayerNorm { eps: b.float(3).unwrap_or(1e-5) as f32 },
        Op::RmsNorm => ir::Op::RmsNorm { eps: b.float(2).unwrap_or(1e-5) as f32 },
        Op::Relu => ir::Op::Unary(UnaryOp::Relu),
        Op::Relu6 => ir::Op::Unary(UnaryOp::Relu6),
        Op::Sigmoid => ir::Op::Unary(UnaryOp::Sigmoid),
        Op::Silu => ir::Op::Unary(UnaryOp::Silu),
        Op::Tanh => ir::Op::Unary(UnaryOp::Tanh),
        Op::Gelu => ir::Op::Unary(UnaryOp::Gelu),
        Op::GeluTanh => ir::Op::Unary(UnaryOp::GeluTanh),
        Op::Exp => ir::Op::Unary(UnaryOp::Exp),
        Op::Sqrt => ir::Op::Unary(UnaryOp::Sqrt),
        Op::Neg => ir::Op::Unary(UnaryOp::Neg),
        Op::Softmax => {
            // Axis errors name the op; the IR rule only sees a resolved axis.
            if inputs[0].ty.dtype != DType::F32 {
                return Err(dtype_diag(b, &inputs[0], &[DType::F32]));
            }
            ir::Op::Softmax { axis: normalize_axis(b, 1, inputs[0].ty.rank())? }
        }
        Op::Add => ir::Op::Binary(BinaryOp::Add),
        Op::Sub => ir::Op::Binary(BinaryOp::Sub),
        Op::Mul => ir::Op::Binary(BinaryOp::Mul),
        Op::Div => ir::Op::Binary(BinaryOp::Div),
        Op::MaxPool2d | Op::AvgPool2d => {
            let kernel = b.pair(1).unwrap_or([1, 1]);
            let attrs = PoolAttrs { kernel, stride: b.pair(2).unwrap_or(kernel), padding: b.pair(3).unwrap_or([0, 0]) };
            if op == Op::MaxPool2d { ir::Op::MaxPool2d(attrs) } else { ir::Op::AvgPool2d(attrs) }
        }
        Op::GlobalAvgPool => ir::Op::GlobalAvgPool,
        Op::Flatten => {
            let x = &inputs[0].ty;
            if !matches!(x.dtype, DType::F32 | DType::I8 | DType::I32) {
                return Err(dtype_diag(b, &inputs[0], &[DType::F32, DType::I8, DType::I32]));
            }
            let start = normalize_axis(b, 1, x.rank())?;
            let prod = ir::op::product(&x.shape[start..]).map_err(|e| dim_err(e, b.call, "the flattened size"))?;
            let mut shape = x.shape[..start].to_vec();
            shape.push(prod);
            ir::Op::Reshape { shape }
        }
        Op::Reshape => ir::Op::Reshape { shape: reshape_target(b, &inputs[0].ty)? },
        Op::Permute => ir::Op::Permute { perm: permutation(b, inputs[0].ty.rank())? },
        Op::Transpose => {
            let rank = inputs[0].ty.rank();
            let mut perm: Vec<usize> = (0..rank).collect();
            let (i, j) = (normalize_axis(b, 1, rank)?, normalize_axis(b, 2, rank)?);
            perm.swap(i, j);
            ir::Op::Permute { perm }
        }
        Op::Bmm => ir::Op::BatchMatmul,
        Op::CausalMask => ir::Op::CausalMask,
        Op::Embedding => ir::Op::Embedding,
        Op::Slice => {
            let x = &inputs[0].ty;
            let axis = normalize_axis(b, 1, x.rank())?;
            let len = x.shape[axis].as_known();
            // Python's bounds: negative ones count from the end (of a known length).
            let bound = |i: usize| -> Result<usize, Diag> {
                let v = b.int(i).unwrap_or(0);
                let v = match (v < 0, len) {
                    (false, _) => Some(v),
                    (true, Some(l)) => Some(v + l),
                    (true, None) => None,
                };
                match (v, len) {
                    (Some(v), Some(l)) if (0..=l).contains(&v) => Ok(v as usize),
                    _ => Err(Diag::error(
                        Code::InvalidArgument,
                        format!("`slice` bound {} is outside axis {axis} of {}", b.int(i).unwrap_or(0), x),
                    )
                    .at(
                        b.span(i),
                        match len {
                            Some(l) => format!("valid: {} to {l}", -l),
                            None => "the axis' length is not known".to_string(),
                        },
                    )),
                }
            };
            let (start, end) = (bound(2)?, bound(3)?);
            if start >= end {
                return Err(Diag::error(Code::InvalidArgument, format!("`slice` from {start} to {end} is empty"))
                    .at(b.span(3), "must be after `start`"));
            }
            ir::Op::Slice { axis, start, end }
        }
        Op::Rope => ir::Op::Rope { theta: b.float(1).unwrap_or(10000.0) as f32 },
        Op::Mean | Op::Sum => ir::Op::Reduce { axis: normalize_axis(b, 1, inputs[0].ty.rank())?, mean: op == Op::Mean },
        Op::Concat => {
            let list_span = b.span(0);
            let Some(first) = inputs.first() else {
                return Err(Diag::error(Code::InvalidArgument, "`concat` needs at least one tensor")
                    .at(list_span, "empty list"));
            };
            ir::Op::Concat { axis: normalize_axis(b, 1, first.ty.rank())? }
        }
        Op::QuantizeI8 => ir::Op::QuantizeI8 { scale: b.float(1).map(|s| s as f32) },
        Op::Dequantize => ir::Op::Dequantize,
    };
    let types: Vec<&TensorType> = inputs.iter().map(|i| &i.ty).collect();
    match ir_op.infer(&types) {
        Ok(ty) => Ok(Lowered { op: ir_op, args: inputs.iter().map(|i| i.operand).collect(), ty }),
        Err(e) => Err(op_diag(b, &inputs, e)),
    }
}

/// The axes of `permute` (negative ones counted from the end): each axis of a rank-`rank`
/// tensor exactly once.
fn permutation(b: &Bound, rank: usize) -> Result<Vec<usize>, Diag> {
    let Some((Value::List(items), _)) = &b.values[1] else { return Err(b.not_a(1, "a list of axes")) };
    let r = rank as i64;
    let mut perm = Vec::with_capacity(items.len());
    let shown: Vec<String> = items
        .iter()
        .map(|v| match v {
            Value::Int(d) => d.to_string(),
            _ => "?".into(),
        })
        .collect();
    for v in items {
        let Some(a) = (match v {
            Value::Int(d) => d.as_known(),
            _ => None,
        }) else {
            return Err(b.not_a(1, "a list of axes"));
        };
        let a = if a < 0 { a + r } else { a };
        if !(0..r).contains(&a) || perm.contains(&(a as usize)) {
            return Err(Diag::error(
                Code::InvalidArgument,
                format!("`permute` dims must name each of the {rank} axes once, got [{}]", shown.join(", ")),
            )
            .at(b.span(1), format!("valid axes: {} to {}, each once", -r, r - 1)));
        }
        perm.push(a as usize);
    }
    if perm.len() != rank {
        return Err(Diag::error(
            Code::InvalidArgument,
            format!("`permute` of a tensor with {rank} dimensions needs {rank} axes, got {}", perm.len()),
        )
        .at(b.span(1), "one entry per axis"));
    }
    Ok(perm)
}

/// The full target shape of `reshape`, with `-1` inferred.
fn reshape_target(b: &Bound, x: &TensorType) -> Result<Vec<Dim>, Diag> {
    if !matches!(x.dtype, DType::F32 | DType::I8 | DType::I32) {
        return Err(dtype_diag(b, &b.input(0)?, &[DType::F32, DType::I8, DType::I32]));
    }
    let Some((Value::List(items), _)) = &b.values[1] else { return Err(b.not_a(1, "a list of integers")) };
    let mut dims: Vec<Dim> = items
        .iter()
        .map(|v| match v {
            Value::Int(d) => Ok(d.clone()),
            _ => Err(b.not_a(1, "a list of integers")),
        })
        .collect::<Result<_, _>>()?;
    let infer_at: Vec<usize> =
        dims.iter().enumerate().filter(|(_, d)| d.as_known() == Some(-1)).map(|(i, _)| i).collect();
    if infer_at.len() > 1 {
        return Err(Diag::error(Code::InvalidArgument, "`reshape` can infer at most one dimension (-1)")
            .at(b.span(1), "more than one -1"));
    }
    for d in &dims {
        if let Some(v) = d.as_known()
            && (v == 0 || v < -1)
        {
            return Err(Diag::error(Code::InvalidDimension, format!("`reshape` dimension {v} is not allowed"))
                .at(b.span(1), "dimensions must be at least 1 (or -1 to infer one)"));
        }
    }
    if let Some(&i) = infer_at.first() {
        let total = ir::op::product(&x.shape).map_err(|e| dim_err(e, b.call, "the element count"))?;
        let rest: Vec<Dim> = dims.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, d)| d.clone()).collect();
        let known = ir::op::product(&rest).map_err(|e| dim_err(e, b.call, "the element count"))?;
        let inferred = total.div(&known).map_err(|e| dim_err(e, b.call, "the inferred dimension"))?;
        if inferred.mul(&known).ok().as_ref() != Some(&total) {
            return Err(Diag::error(
                Code::ShapeMismatch,
                format!("`reshape` cannot infer -1: {total} elements are not divisible by {known}"),
            )
            .at(b.span(1), "no whole dimension fits"));
        }
        dims[i] = inferred;
    }
    Ok(dims)
}

fn dtype_diag(b: &Bound, input: &Input, allowed: &[DType]) -> Diag {
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    let t = &input.ty;
    let mut d = Diag::error(
        Code::DtypeMismatch,
        format!("`{}` expects {} for `{}`, got {}", b.name, names.join(" or "), param_name(b, input.param), t),
    )
    .at(input.span, format!("this is {}", t.dtype));
    d = match t.dtype {
        DType::I32 | DType::I8 if allowed.contains(&DType::F32) => {
            d.help("convert integer results back with `dequantize(...)` first")
        }
        DType::Trit => d.help("trit tensors can only be the weight operand of matmul or conv2d"),
        _ => d,
    };
    if let Some(decl) = input.decl {
        d = d.also(decl, "declared here");
    }
    d
}

fn param_name(b: &Bound, i: usize) -> &'static str {
    spec(b.name).map_or("x", |s| s.params[i].name)
}

/// Maps a type-rule failure to a diagnostic at the argument at fault.
fn op_diag(b: &Bound, inputs: &[Input], e: OpError) -> Diag {
    let at = |i: usize| inputs.get(i).map_or(b.call, |x| x.span);
    match e {
        OpError::Dtype { arg, allowed, .. } => dtype_diag(b, &inputs[arg], allowed),
        OpError::MixedInteger { weight } => Diag::error(
            Code::DtypeMismatch,
            format!("`{}` with i8 activations needs a trit or i8 weight, got {weight}", b.name),
        )
        .at(at(0), "i8 activations")
        .also(at(1), format!("{weight} weight"))
        .help("dequantize the activations first, or quantize the weight"),
        OpError::Rank { arg, expected, got, layout } => {
            let mut d = Diag::error(
                Code::RankMismatch,
                format!("`{}` expects a {expected}-d `{}` {layout}, got {got}", b.name, param_name(b, inputs[arg].param)),
            )
            .at(at(arg), format!("this has {} dimensions", got.rank()));
            if let Some(decl) = inputs[arg].decl {
                d = d.also(decl, "declared here");
            }
            d
        }
        OpError::MinRank { arg, got, layout, .. } => {
            let msg = if b.name == "matmul" || b.name == "ternary_matmul" {
                format!("`{}` needs a tensor with a feature dimension, got {got}", b.name)
            } else {
                format!("`{}` expects {layout}, got {got}", b.name)
            };
            Diag::error(Code::RankMismatch, msg).at(at(arg), "too few dimensions")
        }
        OpError::Features { expected, got } => {
            let (x, w) = (&inputs[0], &inputs[1]);
            let d = Diag::error(Code::ShapeMismatch, format!("`{}` expects {expected} input features, got {got}", b.name))
                .at(x.span, format!("this has {got} features: {}", x.ty));
            match w.decl {
                Some(decl) => d.also(decl, format!("the weight is {}: [out_features, in_features]", w.ty)),
                None => d.also(w.span, format!("the weight is {}", w.ty)),
            }
        }
        OpError::Channels { expected, got, groups } => {
            let (x, w) = (&inputs[0], &inputs[1]);
            let what = if groups > 1 {
                format!("the weight is {} with groups = {groups}: [out, in / groups, kh, kw]", w.ty)
            } else {
                format!("the weight is {}: [out_channels, in_channels, kh, kw]", w.ty)
            };
            Diag::error(Code::ShapeMismatch, format!("`{}` expects {expected} input channels, got {got}", b.name))
                .at(x.span, format!("this has {got} channels: {}", x.ty))
                .also(w.decl.unwrap_or(w.span), what)
        }
        OpError::NotDivisible { what, value, groups } => {
            let label = format!("groups must divide the {what}");
            Diag::error(Code::InvalidArgument, format!("`{}` {what} ({value}) are not divisible by groups ({groups})", b.name))
                .at(kwarg_span(b, "groups"), label)
        }
        OpError::Attr { name, value, requirement } => Diag::error(
            Code::InvalidArgument,
            format!("`{name}` of `{}` must be {requirement}, got {value}", b.name),
        )
        .at(kwarg_span(b, name), "invalid value"),
        OpError::PoolPadding { padding, kernel } => Diag::error(
            Code::InvalidArgument,
            format!("`{}` padding ({padding}) must be at most half the kernel ({kernel})", b.name),
        )
        .at(kwarg_span(b, "padding"), "padding too large"),
        OpError::EmptyOutput { what, size, detail } => {
            Diag::error(Code::InvalidDimension, format!("`{}` would produce an output {what} of {size}", b.name))
                .at(b.call, "output would be empty")
                .help(detail)
        }
        OpError::ChannelVector { arg, name, channels, got } => {
            let (per, label) = match b.name {
                "layer_norm" | "rms_norm" => ("feature", format!("the last axis has {channels} features")),
                _ => ("channel", format!("the input has {channels} channels")),
            };
            let mut d = Diag::error(
                Code::ShapeMismatch,
                format!("`{}` expects `{name}` of shape [{channels}] (one per {per}), got {got}", b.name),
            )
            .at(at(arg), label);
            if let Some(decl) = inputs[arg].decl {
                d = d.also(decl, "declared here");
            }
            d
        }
        OpError::Broadcast { a, b: c, dim, x, y } => broadcast_diag(&a, &c, dim, &x, &y, b.call, at(0), at(1)),
        OpError::Axis { axis, rank } => Diag::error(
            Code::InvalidArgument,
            format!("`{}` axis {axis} is out of range for a tensor with {rank} dimensions", b.name),
        )
        .at(b.call, "invalid axis"),
        OpError::Elements { from, from_count, to_count } => Diag::error(
            Code::ShapeMismatch,
            format!("`reshape` cannot change the number of elements: {from} has {from_count}, the new shape has {to_count}"),
        )
        .at(b.span(1), format!("{to_count} elements"))
        .also(at(0), format!("{from_count} elements")),
        OpError::ConcatDtype { item, first, got } => Diag::error(
            Code::DtypeMismatch,
            format!("`concat` needs tensors of one dtype: item 0 is {first}, item {item} is {got}"),
        )
        .at(at(0), "mixed dtypes"),
        OpError::ConcatRank { item, first, got } => Diag::error(
            Code::RankMismatch,
            format!("`concat` needs tensors of one rank: item 0 is {first}, item {item} is {got}"),
        )
        .at(at(0), "mixed ranks"),
        OpError::ConcatDim { item, axis, dim, first, got } => Diag::error(
            Code::ShapeMismatch,
            format!("`concat` along axis {axis} needs equal sizes in dimension {dim}: item 0 is {first}, item {item} is {got}"),
        )
        .at(at(0), format!("dimension {dim} differs")),
        OpError::EmptyConcat => Diag::error(Code::InvalidArgument, "`concat` needs at least one tensor").at(b.call, "empty list"),
        OpError::Scale { value } => Diag::error(
            Code::InvalidArgument,
            format!("`quantize_i8` scale must be a positive number, got {value}"),
        )
        .at(kwarg_span(b, "scale"), "invalid scale"),
        OpError::Overflow(what) => dim_err(DimError::Overflow, b.call, what),
        OpError::DivisionByZero(what) => dim_err(DimError::DivisionByZero, b.call, what),
        OpError::Arity { .. } | OpError::Leaf => {
            Diag::error(Code::ArgumentCount, format!("`{}`: {e}", b.name)).at(b.call, "wrong inputs")
        }
    }
}

/// Span of the argument bound to the named parameter (or the call).
fn kwarg_span(b: &Bound, name: &str) -> Span {
    spec(b.name).and_then(|s| s.params.iter().position(|p| p.name == name)).map_or(b.call, |i| b.span(i))
}

#[allow(clippy::too_many_arguments)]
pub fn broadcast_diag(
    a: &TensorType,
    c: &TensorType,
    dim: usize,
    x: &Dim,
    y: &Dim,
    call: Span,
    a_span: Span,
    c_span: Span,
) -> Diag {
    Diag::error(Code::BroadcastMismatch, format!("cannot broadcast {a} with {c}: {x} vs {y} in dimension {dim}"))
        .at(call, "shapes do not broadcast")
        .also(a_span, format!("{a}"))
        .also(c_span, format!("{c}"))
        .help("shapes are aligned from the right; each pair of dimensions must be equal or 1 (use `reshape` to add 1s)")
}
