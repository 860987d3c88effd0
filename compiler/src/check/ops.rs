//! Built-in ops: their signatures and their dtype and shape rules.
//!
//! Rules:
//! - [`Op`] is a closed enum: adding an op makes every `match` that must handle it fail to
//!   compile (the IR, the interpreter and the backends match on it too).
//! - Each op's rule here is the checker's half of the contract written in docs/language.md; the
//!   interpreter and the JIT implement the other half (the values).
//! - Arguments are bound by position or keyword against [`OpSpec::params`]; every mismatch is a
//!   diagnostic that names the op, the parameter and what was expected.

use triton_runtime::DType;

use super::dim::{Dim, DimError};
use super::value::{Tensor, TensorType, Value};
use crate::diagnostics::{Code, Diag};
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
    ParamSpec {
        name,
        kind,
        default,
    }
}

use ArgDefault::{Absent, Required};
use Kind::*;

const X: ParamSpec = p("x", Tensor, Required);
const UNARY: &[ParamSpec] = &[X];
const BINARY: &[ParamSpec] = &[
    p("a", TensorOrScalar, Required),
    p("b", TensorOrScalar, Required),
];
const MATMUL: &[ParamSpec] = &[X, p("w", Tensor, Required)];
const CONV: &[ParamSpec] = &[
    X,
    p("w", Tensor, Required),
    p("stride", IntPair, ArgDefault::Int(1)),
    p("padding", IntPair, ArgDefault::Int(0)),
    p("dilation", IntPair, ArgDefault::Int(1)),
    p("groups", Int, ArgDefault::Int(1)),
];
const POOL: &[ParamSpec] = &[
    X,
    p("kernel", IntPair, Required),
    p("stride", IntPair, Absent),
    p("padding", IntPair, ArgDefault::Int(0)),
];

pub const OPS: &[OpSpec] = &[
    OpSpec {
        op: Op::Matmul,
        name: "matmul",
        params: MATMUL,
    },
    OpSpec {
        op: Op::TernaryMatmul,
        name: "ternary_matmul",
        params: MATMUL,
    },
    OpSpec {
        op: Op::Conv2d,
        name: "conv2d",
        params: CONV,
    },
    OpSpec {
        op: Op::TernaryConv2d,
        name: "ternary_conv2d",
        params: CONV,
    },
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
    OpSpec {
        op: Op::Relu,
        name: "relu",
        params: UNARY,
    },
    OpSpec {
        op: Op::Relu6,
        name: "relu6",
        params: UNARY,
    },
    OpSpec {
        op: Op::Sigmoid,
        name: "sigmoid",
        params: UNARY,
    },
    OpSpec {
        op: Op::Silu,
        name: "silu",
        params: UNARY,
    },
    OpSpec {
        op: Op::Tanh,
        name: "tanh",
        params: UNARY,
    },
    OpSpec {
        op: Op::Softmax,
        name: "softmax",
        params: &[X, p("axis", Int, ArgDefault::Int(-1))],
    },
    OpSpec {
        op: Op::Add,
        name: "add",
        params: BINARY,
    },
    OpSpec {
        op: Op::Sub,
        name: "sub",
        params: BINARY,
    },
    OpSpec {
        op: Op::Mul,
        name: "mul",
        params: BINARY,
    },
    OpSpec {
        op: Op::Div,
        name: "div",
        params: BINARY,
    },
    OpSpec {
        op: Op::MaxPool2d,
        name: "max_pool2d",
        params: POOL,
    },
    OpSpec {
        op: Op::AvgPool2d,
        name: "avg_pool2d",
        params: POOL,
    },
    OpSpec {
        op: Op::GlobalAvgPool,
        name: "global_avg_pool",
        params: UNARY,
    },
    OpSpec {
        op: Op::Flatten,
        name: "flatten",
        params: &[X, p("start", Int, ArgDefault::Int(1))],
    },
    OpSpec {
        op: Op::Reshape,
        name: "reshape",
        params: &[X, p("shape", Dims, Required)],
    },
    OpSpec {
        op: Op::Concat,
        name: "concat",
        params: &[
            p("xs", Tensors, Required),
            p("axis", Int, ArgDefault::Int(1)),
        ],
    },
    OpSpec {
        op: Op::QuantizeI8,
        name: "quantize_i8",
        params: &[X, p("scale", Float, Absent)],
    },
    OpSpec {
        op: Op::Dequantize,
        name: "dequantize",
        params: UNARY,
    },
];

/// Compile-time functions on numbers.
pub const SCALAR_FNS: &[&str] = &["min", "max"];

pub fn spec(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == name)
}

pub fn is_builtin(name: &str) -> bool {
    spec(name).is_some() || SCALAR_FNS.contains(&name)
}

pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|s| s.name).chain(SCALAR_FNS.iter().copied())
}

/// One argument as evaluated at the call site.
#[derive(Clone, Debug)]
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
    fn tensor(&self, i: usize) -> &Tensor {
        match &self.values[i] {
            Some((Value::Tensor(t), _)) => t,
            _ => unreachable!("bind() checked the kind"),
        }
    }

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
        (IntPair, Value::List(v)) => {
            v.len() == 2 && v.iter().all(|x| matches!(x, Value::Int(d) if d.is_known()))
        }
        (Float, Value::Float(_)) => true,
        (Float, Value::Int(d)) => d.is_known(),
        (Dims, Value::List(v)) => v.iter().all(|x| matches!(x, Value::Int(_))),
        (Tensors, Value::List(v)) => v
            .iter()
            .all(|x| matches!(x, Value::Tensor(_) | Value::Poison)),
        _ => false,
    }
}

/// Binds call arguments to an op's parameters. `Ok(None)` means an argument was poison: the
/// caller returns poison without a new diagnostic.
pub fn bind(spec: &'static OpSpec, args: &[ArgVal], call: Span) -> Result<Option<Bound>, Diag> {
    let params = spec.params;
    let mut values: Vec<Option<(Value, Span)>> = vec![None; params.len()];
    let mut positional = 0usize;
    for a in args {
        let index = match &a.name {
            None => {
                if positional >= params.len() {
                    return Err(Diag::error(
                        Code::ArgumentCount,
                        format!(
                            "`{}` takes at most {} arguments, got {}",
                            spec.name,
                            params.len(),
                            args.len()
                        ),
                    )
                    .at(a.span, "extra argument")
                    .help(signature_help(spec)));
                }
                positional += 1;
                positional - 1
            }
            Some((name, span)) => match params.iter().position(|p| p.name == name) {
                Some(i) => i,
                None => {
                    return Err(Diag::error(
                        Code::UnknownArgument,
                        format!("`{}` has no parameter `{name}`", spec.name),
                    )
                    .at(*span, "unknown keyword argument")
                    .help(signature_help(spec)));
                }
            },
        };
        if values[index].is_some() {
            return Err(Diag::error(
                Code::DuplicateArgument,
                format!(
                    "argument `{}` of `{}` is given twice",
                    params[index].name, spec.name
                ),
            )
            .at(a.span, "given again here"));
        }
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
            .at(
                a.span,
                format!("expected {}", params[index].kind.describe()),
            );
            if symbolic {
                d = d.help(
                    "this value depends on a symbolic dimension; it must be known at compile time",
                );
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
    Ok(Some(Bound {
        values,
        call,
        name: spec.name,
    }))
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

fn dim_err(e: DimError, span: Span, what: &str) -> Diag {
    match e {
        DimError::Overflow => Diag::error(
            Code::SizeOverflow,
            format!("{what} overflows a 64-bit integer"),
        )
        .at(span, "too large"),
        DimError::DivisionByZero => {
            Diag::error(Code::DivisionByZero, format!("{what} divides by zero"))
                .at(span, "division by zero")
        }
    }
}

fn need_dtype(b: &Bound, i: usize, allowed: &[DType]) -> Result<(), Diag> {
    let t = b.tensor(i);
    if allowed.contains(&t.ty.dtype) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    let mut d = Diag::error(
        Code::DtypeMismatch,
        format!(
            "`{}` expects {} for `{}`, got {}",
            b.name,
            names.join(" or "),
            param_name(b, i),
            t.ty
        ),
    )
    .at(b.span(i), format!("this is {}", t.ty.dtype));
    d = match t.ty.dtype {
        DType::I32 | DType::I8 if allowed.contains(&DType::F32) => {
            d.help("convert integer results back with `dequantize(...)` first")
        }
        DType::Trit => d.help("trit tensors can only be the weight operand of matmul or conv2d"),
        _ => d,
    };
    if let Some(decl) = t.decl {
        d = d.also(decl, "declared here");
    }
    Err(d)
}

fn param_name(b: &Bound, i: usize) -> &'static str {
    spec(b.name).map_or("x", |s| s.params[i].name)
}

fn need_rank(b: &Bound, i: usize, rank: usize, layout: &str) -> Result<(), Diag> {
    let t = b.tensor(i);
    if t.ty.rank() == rank {
        return Ok(());
    }
    let mut d = Diag::error(
        Code::RankMismatch,
        format!(
            "`{}` expects a {rank}-d `{}` {layout}, got {}",
            b.name,
            param_name(b, i),
            t.ty
        ),
    )
    .at(b.span(i), format!("this has {} dimensions", t.ty.rank()));
    if let Some(decl) = t.decl {
        d = d.also(decl, "declared here");
    }
    Err(d)
}

fn positive(b: &Bound, i: usize, values: &[i64], allow_zero: bool) -> Result<(), Diag> {
    for &v in values {
        if v < 0 || (v == 0 && !allow_zero) {
            return Err(Diag::error(
                Code::InvalidArgument,
                format!(
                    "`{}` of `{}` must be {}, got {v}",
                    param_name(b, i),
                    b.name,
                    if allow_zero {
                        "zero or more"
                    } else {
                        "at least 1"
                    }
                ),
            )
            .at(b.span(i), "invalid value"));
        }
    }
    Ok(())
}

/// Shape of a dim that must be at least 1 when known.
fn output_dim(d: Dim, b: &Bound, what: &str, why: impl FnOnce() -> String) -> Result<Dim, Diag> {
    if let Some(v) = d.as_known()
        && v < 1
    {
        return Err(Diag::error(
            Code::InvalidDimension,
            format!("`{}` would produce an output {what} of {v}", b.name),
        )
        .at(b.call, "output would be empty")
        .help(why()));
    }
    Ok(d)
}

/// Applies an op's rule to bound arguments: the result type, or why there is none.
pub fn infer(op: Op, b: &Bound) -> Result<TensorType, Diag> {
    match op {
        Op::Matmul | Op::TernaryMatmul => {
            if op == Op::TernaryMatmul {
                need_dtype(b, 1, &[DType::Trit])?;
            }
            need_dtype(b, 0, &[DType::F32, DType::I8])?;
            need_dtype(b, 1, &[DType::F32, DType::Trit, DType::I8])?;
            let (x, w) = (b.tensor(0), b.tensor(1));
            if x.ty.rank() == 0 {
                return Err(Diag::error(
                    Code::RankMismatch,
                    format!(
                        "`{}` needs a tensor with a feature dimension, got {}",
                        b.name, x.ty
                    ),
                )
                .at(b.span(0), "a scalar"));
            }
            need_rank(b, 1, 2, "weight [out_features, in_features]")?;
            let k = &x.ty.shape[x.ty.rank() - 1];
            if *k != w.ty.shape[1] {
                let mut d = Diag::error(
                    Code::ShapeMismatch,
                    format!(
                        "`{}` expects {} input features, got {}",
                        b.name, w.ty.shape[1], k
                    ),
                )
                .at(b.span(0), format!("this has {k} features: {}", x.ty));
                d = match w.decl {
                    Some(decl) => d.also(
                        decl,
                        format!("the weight is {}: [out_features, in_features]", w.ty),
                    ),
                    None => d.also(b.span(1), format!("the weight is {}", w.ty)),
                };
                return Err(d);
            }
            let dtype = out_dtype(b)?;
            let mut shape = x.ty.shape[..x.ty.rank() - 1].to_vec();
            shape.push(w.ty.shape[0].clone());
            Ok(TensorType::new(dtype, shape))
        }
        Op::Conv2d | Op::TernaryConv2d => {
            if op == Op::TernaryConv2d {
                need_dtype(b, 1, &[DType::Trit])?;
            }
            need_dtype(b, 0, &[DType::F32, DType::I8])?;
            need_dtype(b, 1, &[DType::F32, DType::Trit, DType::I8])?;
            need_rank(b, 0, 4, "input [batch, channels, height, width]")?;
            need_rank(
                b,
                1,
                4,
                "weight [out_channels, in_channels / groups, kernel_h, kernel_w]",
            )?;
            let (x, w) = (b.tensor(0), b.tensor(1));
            let stride = b.pair(2).unwrap_or([1, 1]);
            let padding = b.pair(3).unwrap_or([0, 0]);
            let dilation = b.pair(4).unwrap_or([1, 1]);
            let groups = b.int(5).unwrap_or(1);
            positive(b, 2, &stride, false)?;
            positive(b, 3, &padding, true)?;
            positive(b, 4, &dilation, false)?;
            positive(b, 5, &[groups], false)?;
            let g = Dim::known(groups);
            let c = &x.ty.shape[1];
            if let Some(cv) = c.as_known()
                && cv % groups != 0
            {
                return Err(Diag::error(
                    Code::InvalidArgument,
                    format!(
                        "`{}` input channels ({cv}) are not divisible by groups ({groups})",
                        b.name
                    ),
                )
                .at(b.span(5), "groups must divide the input channels"));
            }
            let per_group = c
                .div(&g)
                .map_err(|e| dim_err(e, b.call, "channels / groups"))?;
            if per_group != w.ty.shape[1] {
                let mut d = Diag::error(
                    Code::ShapeMismatch,
                    format!(
                        "`{}` expects {} input channels, got {c}",
                        b.name,
                        w.ty.shape[1]
                            .mul(&g)
                            .map_err(|e| dim_err(e, b.call, "channels"))?
                    ),
                )
                .at(b.span(0), format!("this has {c} channels: {}", x.ty));
                let what = if groups > 1 {
                    format!(
                        "the weight is {} with groups = {groups}: [out, in / groups, kh, kw]",
                        w.ty
                    )
                } else {
                    format!(
                        "the weight is {}: [out_channels, in_channels, kh, kw]",
                        w.ty
                    )
                };
                d = d.also(w.decl.unwrap_or(b.span(1)), what);
                return Err(d);
            }
            if let Some(o) = w.ty.shape[0].as_known()
                && o % groups != 0
            {
                return Err(Diag::error(
                    Code::InvalidArgument,
                    format!(
                        "`{}` output channels ({o}) are not divisible by groups ({groups})",
                        b.name
                    ),
                )
                .at(b.span(5), "groups must divide the output channels"));
            }
            let mut shape = vec![x.ty.shape[0].clone(), w.ty.shape[0].clone()];
            for axis in 0..2 {
                let input = &x.ty.shape[2 + axis];
                let k = &w.ty.shape[2 + axis];
                let (s, p, d) = (stride[axis], padding[axis], dilation[axis]);
                let out = conv_out(input, k, s, p, d)
                    .map_err(|e| dim_err(e, b.call, "the output size"))?;
                let what = if axis == 0 { "height" } else { "width" };
                shape.push(output_dim(out, b, what, || {
                    format!("input {what} {input}, kernel {k}, stride {s}, padding {p}, dilation {d}: the kernel does not fit")
                })?);
            }
            Ok(TensorType::new(out_dtype(b)?, shape))
        }
        Op::BatchNorm => {
            for i in 0..5 {
                need_dtype(b, i, &[DType::F32])?;
            }
            let x = b.tensor(0);
            if x.ty.rank() < 2 {
                return Err(Diag::error(
                    Code::RankMismatch,
                    format!("`batch_norm` expects [batch, channels, ...], got {}", x.ty),
                )
                .at(b.span(0), "needs a channel dimension"));
            }
            let c = &x.ty.shape[1];
            for (i, name) in [(1, "gamma"), (2, "beta"), (3, "mean"), (4, "var")] {
                let v = b.tensor(i);
                if v.ty.rank() != 1 || v.ty.shape[0] != *c {
                    let mut d = Diag::error(
                        Code::ShapeMismatch,
                        format!("`batch_norm` expects `{name}` of shape [{c}] (one per channel), got {}", v.ty),
                    )
                    .at(b.span(i), format!("the input has {c} channels"));
                    if let Some(decl) = v.decl {
                        d = d.also(decl, "declared here");
                    }
                    return Err(d);
                }
            }
            Ok(x.ty.clone())
        }
        Op::Relu | Op::Relu6 | Op::Sigmoid | Op::Silu | Op::Tanh => {
            need_dtype(b, 0, &[DType::F32])?;
            Ok(b.tensor(0).ty.clone())
        }
        Op::Softmax => {
            need_dtype(b, 0, &[DType::F32])?;
            let x = b.tensor(0);
            normalize_axis(b, 1, x.ty.rank())?;
            Ok(x.ty.clone())
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let a = scalar_or_tensor(b, 0)?;
            let c = scalar_or_tensor(b, 1)?;
            broadcast(&a, &c, b.call, b.span(0), b.span(1))
        }
        Op::Neg => {
            need_dtype(b, 0, &[DType::F32])?;
            Ok(b.tensor(0).ty.clone())
        }
        Op::MaxPool2d | Op::AvgPool2d => {
            need_dtype(b, 0, &[DType::F32])?;
            need_rank(b, 0, 4, "input [batch, channels, height, width]")?;
            let x = b.tensor(0);
            let kernel = b.pair(1).unwrap_or([1, 1]);
            let stride = b.pair(2).unwrap_or(kernel);
            let padding = b.pair(3).unwrap_or([0, 0]);
            positive(b, 1, &kernel, false)?;
            if b.values[2].is_some() {
                positive(b, 2, &stride, false)?;
            }
            positive(b, 3, &padding, true)?;
            for axis in 0..2 {
                if padding[axis] * 2 > kernel[axis] {
                    return Err(Diag::error(
                        Code::InvalidArgument,
                        format!(
                            "`{}` padding ({}) must be at most half the kernel ({})",
                            b.name, padding[axis], kernel[axis]
                        ),
                    )
                    .at(b.span(3), "padding too large"));
                }
            }
            let mut shape = vec![x.ty.shape[0].clone(), x.ty.shape[1].clone()];
            for axis in 0..2 {
                let input = &x.ty.shape[2 + axis];
                let out = conv_out(
                    input,
                    &Dim::known(kernel[axis]),
                    stride[axis],
                    padding[axis],
                    1,
                )
                .map_err(|e| dim_err(e, b.call, "the output size"))?;
                let what = if axis == 0 { "height" } else { "width" };
                shape.push(output_dim(out, b, what, || {
                    format!(
                        "input {what} {input} is smaller than the window {}",
                        kernel[axis]
                    )
                })?);
            }
            Ok(TensorType::new(DType::F32, shape))
        }
        Op::GlobalAvgPool => {
            need_dtype(b, 0, &[DType::F32])?;
            let x = b.tensor(0);
            if x.ty.rank() < 3 {
                return Err(Diag::error(
                    Code::RankMismatch,
                    format!(
                        "`global_avg_pool` expects [batch, channels, spatial...], got {}",
                        x.ty
                    ),
                )
                .at(b.span(0), "needs at least one spatial dimension"));
            }
            Ok(TensorType::new(DType::F32, x.ty.shape[..2].to_vec()))
        }
        Op::Flatten => {
            let x = b.tensor(0);
            need_dtype(b, 0, &[DType::F32, DType::I8, DType::I32])?;
            let start = normalize_axis(b, 1, x.ty.rank())?;
            let mut prod = Dim::known(1);
            for d in &x.ty.shape[start..] {
                prod = prod
                    .mul(d)
                    .map_err(|e| dim_err(e, b.call, "the flattened size"))?;
            }
            let mut shape = x.ty.shape[..start].to_vec();
            shape.push(prod);
            Ok(TensorType::new(x.ty.dtype, shape))
        }
        Op::Reshape => {
            let x = b.tensor(0);
            need_dtype(b, 0, &[DType::F32, DType::I8, DType::I32])?;
            let Some((Value::List(items), _)) = &b.values[1] else {
                unreachable!("bind() checked the kind")
            };
            let mut dims: Vec<Dim> = items
                .iter()
                .map(|v| match v {
                    Value::Int(d) => d.clone(),
                    _ => unreachable!("bind() checked the kind"),
                })
                .collect();
            let total =
                product(&x.ty.shape).map_err(|e| dim_err(e, b.call, "the element count"))?;
            let infer_at: Vec<usize> = dims
                .iter()
                .enumerate()
                .filter(|(_, d)| d.as_known() == Some(-1))
                .map(|(i, _)| i)
                .collect();
            if infer_at.len() > 1 {
                return Err(Diag::error(
                    Code::InvalidArgument,
                    "`reshape` can infer at most one dimension (-1)",
                )
                .at(b.span(1), "more than one -1"));
            }
            for d in &dims {
                if let Some(v) = d.as_known()
                    && (v == 0 || v < -1)
                {
                    return Err(Diag::error(
                        Code::InvalidDimension,
                        format!("`reshape` dimension {v} is not allowed"),
                    )
                    .at(
                        b.span(1),
                        "dimensions must be at least 1 (or -1 to infer one)",
                    ));
                }
            }
            if let Some(&i) = infer_at.first() {
                let rest: Vec<Dim> = dims
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| d.clone())
                    .collect();
                let known = product(&rest).map_err(|e| dim_err(e, b.call, "the element count"))?;
                let inferred = total
                    .div(&known)
                    .map_err(|e| dim_err(e, b.call, "the inferred dimension"))?;
                if inferred.mul(&known).ok().as_ref() != Some(&total) {
                    return Err(Diag::error(
                        Code::ShapeMismatch,
                        format!("`reshape` cannot infer -1: {total} elements are not divisible by {known}"),
                    )
                    .at(b.span(1), "no whole dimension fits"));
                }
                dims[i] = inferred;
            }
            let new_total = product(&dims).map_err(|e| dim_err(e, b.call, "the element count"))?;
            if new_total != total {
                return Err(Diag::error(
                    Code::ShapeMismatch,
                    format!("`reshape` cannot change the number of elements: {} has {total}, the new shape has {new_total}", x.ty),
                )
                .at(b.span(1), format!("{new_total} elements"))
                .also(b.span(0), format!("{total} elements")));
            }
            Ok(TensorType::new(x.ty.dtype, dims))
        }
        Op::Concat => {
            let Some((Value::List(items), list_span)) = &b.values[0] else {
                unreachable!("bind() checked the kind")
            };
            let tensors: Vec<&Tensor> = items
                .iter()
                .map(|v| match v {
                    Value::Tensor(t) => t,
                    _ => unreachable!("bind() checked the kind"),
                })
                .collect();
            let Some(first) = tensors.first() else {
                return Err(Diag::error(
                    Code::InvalidArgument,
                    "`concat` needs at least one tensor",
                )
                .at(*list_span, "empty list"));
            };
            let rank = first.ty.rank();
            let axis = normalize_axis(b, 1, rank)?;
            let mut sum = first.ty.shape[axis].clone();
            for (n, t) in tensors.iter().enumerate().skip(1) {
                if t.ty.dtype != first.ty.dtype {
                    return Err(Diag::error(
                        Code::DtypeMismatch,
                        format!(
                            "`concat` needs tensors of one dtype: item 0 is {}, item {n} is {}",
                            first.ty.dtype, t.ty.dtype
                        ),
                    )
                    .at(*list_span, "mixed dtypes"));
                }
                if t.ty.rank() != rank {
                    return Err(Diag::error(
                        Code::RankMismatch,
                        format!(
                            "`concat` needs tensors of one rank: item 0 is {}, item {n} is {}",
                            first.ty, t.ty
                        ),
                    )
                    .at(*list_span, "mixed ranks"));
                }
                for a in 0..rank {
                    if a != axis && t.ty.shape[a] != first.ty.shape[a] {
                        return Err(Diag::error(
                            Code::ShapeMismatch,
                            format!(
                                "`concat` along axis {axis} needs equal sizes in dimension {a}: item 0 is {}, item {n} is {}",
                                first.ty, t.ty
                            ),
                        )
                        .at(*list_span, format!("dimension {a} differs")));
                    }
                }
                sum = sum
                    .add(&t.ty.shape[axis])
                    .map_err(|e| dim_err(e, b.call, "the concatenated size"))?;
            }
            let mut shape = first.ty.shape.clone();
            shape[axis] = sum;
            Ok(TensorType::new(first.ty.dtype, shape))
        }
        Op::QuantizeI8 => {
            need_dtype(b, 0, &[DType::F32])?;
            if let Some(s) = b.float(1)
                && !(s > 0.0 && s.is_finite())
            {
                return Err(Diag::error(
                    Code::InvalidArgument,
                    format!("`quantize_i8` scale must be a positive number, got {s}"),
                )
                .at(b.span(1), "invalid scale"));
            }
            Ok(TensorType::new(DType::I8, b.tensor(0).ty.shape.clone()))
        }
        Op::Dequantize => {
            need_dtype(b, 0, &[DType::I8, DType::I32])?;
            Ok(TensorType::new(DType::F32, b.tensor(0).ty.shape.clone()))
        }
    }
}

/// Output dtype of matmul / conv2d from its operand dtypes.
fn out_dtype(b: &Bound) -> Result<DType, Diag> {
    let (x, w) = (b.tensor(0).ty.dtype, b.tensor(1).ty.dtype);
    match (x, w) {
        (DType::F32, _) => Ok(DType::F32),
        (DType::I8, DType::Trit | DType::I8) => Ok(DType::I32),
        _ => Err(Diag::error(
            Code::DtypeMismatch,
            format!(
                "`{}` with i8 activations needs a trit or i8 weight, got {w}",
                b.name
            ),
        )
        .at(b.span(0), "i8 activations")
        .also(b.span(1), format!("{w} weight"))
        .help("dequantize the activations first, or quantize the weight")),
    }
}

/// `floor((input + 2p - d(k-1) - 1) / s) + 1`
pub fn conv_out(input: &Dim, k: &Dim, s: i64, p: i64, d: i64) -> Result<Dim, DimError> {
    let reach = k.sub(&Dim::known(1))?.mul(&Dim::known(d))?;
    let span = input
        .add(&Dim::known(2 * p))?
        .sub(&reach)?
        .sub(&Dim::known(1))?;
    span.div(&Dim::known(s))?.add(&Dim::known(1))
}

pub fn product(dims: &[Dim]) -> Result<Dim, DimError> {
    dims.iter().try_fold(Dim::known(1), |acc, d| acc.mul(d))
}

fn normalize_axis(b: &Bound, i: usize, rank: usize) -> Result<usize, Diag> {
    let axis = b.int(i).unwrap_or(0);
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if rank == 0 || a < 0 || a >= r {
        return Err(Diag::error(
            Code::InvalidArgument,
            format!(
                "`{}` axis {axis} is out of range for a tensor with {rank} dimensions",
                b.name
            ),
        )
        .at(b.span(i), format!("valid axes: {} to {}", -r, r - 1)));
    }
    Ok(a as usize)
}

fn scalar_or_tensor(b: &Bound, i: usize) -> Result<TensorType, Diag> {
    match &b.values[i] {
        Some((Value::Tensor(_), _)) => {
            need_dtype(b, i, &[DType::F32])?;
            Ok(b.tensor(i).ty.clone())
        }
        _ => Ok(TensorType::new(DType::F32, Vec::new())),
    }
}

/// Numpy broadcasting: shapes aligned at the right; each pair of dims must be equal or one of
/// them 1.
pub fn broadcast(
    a: &TensorType,
    c: &TensorType,
    call: Span,
    a_span: Span,
    c_span: Span,
) -> Result<TensorType, Diag> {
    let rank = a.rank().max(c.rank());
    let mut shape = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.shape[j]);
        let dc = (i + c.rank()).checked_sub(rank).map(|j| &c.shape[j]);
        let one = Dim::known(1);
        let (x, y) = (da.unwrap_or(&one), dc.unwrap_or(&one));
        let d = if x == y || y.as_known() == Some(1) {
            x.clone()
        } else if x.as_known() == Some(1) {
            y.clone()
        } else {
            return Err(Diag::error(Code::BroadcastMismatch, format!("cannot broadcast {a} with {c}: {x} vs {y} in dimension {i}"))
                .at(call, "shapes do not broadcast")
                .also(a_span, format!("{a}"))
                .also(c_span, format!("{c}"))
                .help("shapes are aligned from the right; each pair of dimensions must be equal or 1 (use `reshape` to add 1s)"));
        };
        shape.push(d);
    }
    Ok(TensorType::new(DType::F32, shape))
}
