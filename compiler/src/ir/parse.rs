//! Parses the IR text form written by [`super::print`], so optimizer tests can be files.
//!
//! Rules: node ids must be numbered in order from 0 (`%0`, `%1`, ...) and arguments must refer
//! to earlier nodes; types are taken as written (the verifier checks them). Symbols in shapes
//! are uppercase names. Spans of parsed nodes point into the IR text.

use std::fmt;

use triton_runtime::DType;

use super::dim::Dim;
use super::graph::{Graph, Init, NodeId, ParamInfo, ParamKind, QuantRule};
use super::op::{BinaryOp, ConvAttrs, Fused, FusedBase, Op, PoolAttrs, UnaryOp};
use super::types::TensorType;
use crate::diagnostics::Diags;
use crate::source::{FileId, Span};
use crate::syntax::lexer;
use crate::syntax::token::Tok;
use crate::syntax::unescape::unescape;

#[derive(Clone, Debug, PartialEq)]
pub struct IrParseError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for IrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for IrParseError {}

impl IrParseError {
    /// `line:column` of the error in `text` (1-based).
    pub fn location(&self, text: &str) -> (usize, usize) {
        let before = &text[..self.offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

struct P<'s> {
    toks: Vec<(usize, Tok<'s>, usize)>,
    pos: usize,
    end: usize,
    file: FileId,
}

type R<T> = Result<T, IrParseError>;

impl<'s> P<'s> {
    fn peek(&self) -> Option<&Tok<'s>> {
        self.toks.get(self.pos).map(|(_, t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(o, _, _)| *o)
    }

    fn fail<T>(&self, message: impl Into<String>) -> R<T> {
        Err(IrParseError { offset: self.offset(), message: message.into() })
    }

    fn next(&mut self) -> R<Tok<'s>> {
        match self.toks.get(self.pos) {
            Some((_, t, _)) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => self.fail("unexpected end of input"),
        }
    }

    fn expect(&mut self, want: Tok<'static>) -> R<()> {
        match self.peek() {
            Some(t) if *t == want => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => {
                let found = t.describe();
                self.fail(format!("expected `{want}`, found {found}"))
            }
            None => self.fail(format!("expected `{want}`, found the end")),
        }
    }

    fn eat(&mut self, want: Tok<'static>) -> bool {
        if self.peek() == Some(&want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> R<&'s str> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            // Keywords that double as names in the IR.
            Tok::Param => Ok("param"),
            Tok::Const => Ok("const"),
            t => {
                self.pos -= 1;
                self.fail(format!("expected a name, found {}", t.describe()))
            }
        }
    }

    fn int(&mut self) -> R<i64> {
        let neg = self.eat(Tok::Minus);
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -v } else { v }),
            t => {
                self.pos -= 1;
                self.fail(format!("expected an integer, found {}", t.describe()))
            }
        }
    }

    fn float(&mut self) -> R<f64> {
        let neg = self.eat(Tok::Minus);
        let v = match self.next()? {
            Tok::Int(v) => v as f64,
            Tok::Float(v) => v,
            t => {
                self.pos -= 1;
                return self.fail(format!("expected a number, found {}", t.describe()));
            }
        };
        Ok(if neg { -v } else { v })
    }

    /// A string token, escapes decoded.
    fn string(&mut self, what: &str) -> R<String> {
        let at = self.offset();
        match self.next()? {
            Tok::Str(s) => unescape(s).map_err(|(i, why)| IrParseError { offset: at + 1 + i, message: why }),
            _ => {
                self.pos -= 1;
                self.fail(format!("expected {what} as a string"))
            }
        }
    }

    fn node_ref(&mut self, limit: usize) -> R<NodeId> {
        self.expect(Tok::Percent)?;
        let n = self.int()?;
        if n < 0 || n as usize >= limit {
            return self.fail(format!("%{n} does not name an earlier node"));
        }
        Ok(NodeId::new(n as usize))
    }

    // dim := term (("+" | "-") term)*
    fn dim(&mut self) -> R<Dim> {
        let mut acc = self.dim_term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Plus) => Tok::Plus,
                Some(Tok::Minus) => Tok::Minus,
                _ => return Ok(acc),
            };
            self.pos += 1;
            let rhs = self.dim_term()?;
            acc = match op {
                Tok::Plus => acc.add(&rhs),
                _ => acc.sub(&rhs),
            }
            .or_else(|e| self.fail(format!("{e:?} in a dimension")))?;
        }
    }

    fn dim_term(&mut self) -> R<Dim> {
        let mut acc = self.dim_atom()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => 0,
                Some(Tok::Slash) => 1,
                Some(Tok::Percent) => 2,
                _ => return Ok(acc),
            };
            self.pos += 1;
            let rhs = self.dim_atom()?;
            acc = match op {
                0 => acc.mul(&rhs),
                1 => acc.div(&rhs),
                _ => acc.rem(&rhs),
            }
            .or_else(|e| self.fail(format!("{e:?} in a dimension")))?;
        }
    }

    fn dim_atom(&mut self) -> R<Dim> {
        match self.next()? {
            Tok::Int(v) => Ok(Dim::known(v)),
            Tok::Minus => {
                let d = self.dim_atom()?;
                d.neg().or_else(|e| self.fail(format!("{e:?} in a dimension")))
            }
            Tok::Ident(s) if s.starts_with(|c: char| c.is_ascii_uppercase()) => Ok(Dim::sym(s)),
            Tok::LParen => {
                let d = self.dim()?;
                self.expect(Tok::RParen)?;
                Ok(d)
            }
            t => {
                self.pos -= 1;
                self.fail(format!("expected a dimension, found {}", t.describe()))
            }
        }
    }

    fn dims(&mut self) -> R<Vec<Dim>> {
        self.expect(Tok::LBracket)?;
        let mut out = Vec::new();
        while !self.eat(Tok::RBracket) {
            out.push(self.dim()?);
            if !self.eat(Tok::Comma) {
                self.expect(Tok::RBracket)?;
                break;
            }
        }
        Ok(out)
    }

    fn ty(&mut self) -> R<TensorType> {
        let name = self.ident()?;
        let Some(dtype) = DType::from_name(name) else {
            return self.fail(format!("unknown dtype `{name}`"));
        };
        Ok(TensorType::new(dtype, self.dims()?))
    }

    fn pair(&mut self) -> R<[i64; 2]> {
        self.expect(Tok::LBracket)?;
        let a = self.int()?;
        self.expect(Tok::Comma)?;
        let b = self.int()?;
        self.expect(Tok::RBracket)?;
        Ok([a, b])
    }

    /// `{name=value, ...}` with the value parsed by `f` per name.
    fn attrs(&mut self, mut f: impl FnMut(&mut Self, &str) -> R<()>) -> R<()> {
        if !self.eat(Tok::LBrace) {
            return Ok(());
        }
        while !self.eat(Tok::RBrace) {
            let name = self.ident()?;
            self.expect(Tok::Eq)?;
            f(self, name)?;
            if !self.eat(Tok::Comma) {
                self.expect(Tok::RBrace)?;
                break;
            }
        }
        Ok(())
    }
}

pub fn parse(text: &str, file: FileId) -> Result<Graph, IrParseError> {
    let mut diags = Diags::new();
    let toks = lexer::lex(file, text, &mut diags);
    if let Some(d) = diags.iter().next() {
        let offset = d.primary_span().map_or(0, |s| s.lo as usize);
        return Err(IrParseError { offset, message: d.message.clone() });
    }
    let mut p = P { toks, pos: 0, end: text.len(), file };
    let mut g = Graph::default();
    if p.ident()? != "graph" {
        p.pos -= 1;
        return p.fail("an IR file starts with `graph NAME`");
    }
    g.name = p.ident()?.to_string();
    while p.peek().is_some() {
        let start = p.offset();
        match p.peek() {
            Some(Tok::Param) => {
                p.pos += 1;
                let index = p.int()?;
                if index as usize != g.params.len() {
                    return p.fail(format!("parameters are numbered in order; expected {}", g.params.len()));
                }
                let name = p.string("the parameter's name")?;
                p.expect(Tok::Colon)?;
                let ty = p.ty()?;
                let kind = match p.next()? {
                    Tok::Weight => ParamKind::Weight,
                    Tok::Param => ParamKind::Param,
                    Tok::Buffer => ParamKind::Buffer,
                    _ => return p.fail("expected `weight`, `param` or `buffer`"),
                };
                let mut quant = None;
                let mut init = Init::Zeros;
                while let Some(Tok::Ident(k)) = p.peek() {
                    let k = *k;
                    p.pos += 1;
                    p.expect(Tok::Eq)?;
                    match k {
                        "quant" => {
                            quant = Some(match p.ident()? {
                                "absmean" => QuantRule::Absmean,
                                "absmean_tensor" => QuantRule::AbsmeanTensor,
                                "twn" => QuantRule::Twn,
                                "absmax" => QuantRule::Absmax,
                                other => {
                                    return p.fail(format!("unknown quantization rule `{other}`"));
                                }
                            })
                        }
                        "init" => {
                            init = match p.peek() {
                                Some(Tok::Ident(_)) => match p.ident()? {
                                    "kaiming" => Init::Kaiming,
                                    "zeros" => Init::Zeros,
                                    "ones" => Init::Ones,
                                    other => {
                                        return p.fail(format!("unknown initialiser `{other}`"));
                                    }
                                },
                                _ => Init::Const(p.float()?),
                            }
                        }
                        other => return p.fail(format!("unknown parameter attribute `{other}`")),
                    }
                }
                let Some(shape) = ty.known_shape() else {
                    return p.fail("parameter shapes must be known");
                };
                let span = Span::new(p.file, start, p.offset());
                g.params.push(ParamInfo { name, kind, dtype: ty.dtype, shape, quant, init, span });
            }
            Some(Tok::Percent) => {
                p.pos += 1;
                let n = p.int()?;
                if n as usize != g.nodes.len() {
                    return p.fail(format!("nodes are numbered in order; expected %{}", g.nodes.len()));
                }
                p.expect(Tok::Eq)?;
                let limit = g.nodes.len();
                let name = p.ident()?;
                let mut args = Vec::new();
                let op = match name {
                    "input" => {
                        let input = p.string("the input's name")?;
                        g.inputs.push((input, NodeId::new(limit)));
                        Op::Input { index: g.inputs.len() - 1 }
                    }
                    "param" => {
                        let index = p.int()?;
                        if index < 0 || index as usize >= g.params.len() {
                            return p.fail(format!("parameter {index} is not declared"));
                        }
                        Op::Param { index: index as usize }
                    }
                    "const" => Op::Const { value: p.float()? as f32 },
                    _ => {
                        if p.peek() == Some(&Tok::Percent) {
                            args.push(p.node_ref(limit)?);
                            while p.eat(Tok::Comma) {
                                args.push(p.node_ref(limit)?);
                            }
                        }
                        op_with_attrs(&mut p, name)?
                    }
                };
                p.expect(Tok::Colon)?;
                let ty = p.ty()?;
                let span = Span::new(p.file, start, p.offset());
                g.add_spanned(op, args, ty, Some(span));
            }
            Some(Tok::Ident("output")) => {
                p.pos += 1;
                let limit = g.nodes.len();
                g.outputs.push(p.node_ref(limit)?);
            }
            _ => return p.fail("expected `param`, `%N = ...` or `output`"),
        }
    }
    Ok(g)
}

fn op_with_attrs(p: &mut P<'_>, name: &str) -> R<Op> {
    if let Some(u) = UnaryOp::ALL.iter().find(|u| u.name() == name) {
        return Ok(Op::Unary(*u));
    }
    if let Some(b) = BinaryOp::ALL.iter().find(|b| b.name() == name) {
        return Ok(Op::Binary(*b));
    }
    let unknown = |p: &P<'_>, k: &str| p.fail::<()>(format!("`{name}` has no attribute `{k}`"));
    Ok(match name {
        "matmul" => Op::Matmul,
        "global_avg_pool" => Op::GlobalAvgPool,
        "dequantize" => Op::Dequantize,
        "bmm" => Op::BatchMatmul,
        "causal_mask" => Op::CausalMask,
        "embedding" => Op::Embedding,
        "slice" => {
            let (mut axis, mut start, mut end) = (None, None, None);
            p.attrs(|p, k| {
                match k {
                    "axis" => axis = Some(p.int()?),
                    "start" => start = Some(p.int()?),
                    "end" => end = Some(p.int()?),
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            match (axis, start, end) {
                (Some(a), Some(s), Some(e)) if a >= 0 && s >= 0 && e >= 0 => {
                    Op::Slice { axis: a as usize, start: s as usize, end: e as usize }
                }
                _ => return p.fail("`slice` needs {axis=N, start=N, end=N}"),
            }
        }
        "rope" => {
            let mut theta = None;
            p.attrs(|p, k| {
                match k {
                    "theta" => theta = Some(p.float()? as f32),
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            let Some(theta) = theta else { return p.fail("`rope` needs {theta=X}") };
            Op::Rope { theta }
        }
        "permute" => {
            let mut perm = None;
            p.attrs(|p, k| {
                match k {
                    "dims" => {
                        let dims = p.dims()?;
                        let known: Option<Vec<usize>> =
                            dims.iter().map(|d| d.as_known().and_then(|v| usize::try_from(v).ok())).collect();
                        match known {
                            Some(v) => perm = Some(v),
                            None => return p.fail("`permute` dims must be axis numbers"),
                        }
                    }
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            let Some(perm) = perm else {
                return p.fail("`permute` needs {dims=[...]}");
            };
            Op::Permute { perm }
        }
        "conv2d" => {
            let mut a = ConvAttrs::default();
            p.attrs(|p, k| {
                match k {
                    "stride" => a.stride = p.pair()?,
                    "padding" => a.padding = p.pair()?,
                    "dilation" => a.dilation = p.pair()?,
                    "groups" => a.groups = p.int()?,
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            Op::Conv2d(a)
        }
        "max_pool2d" | "avg_pool2d" => {
            let mut a = PoolAttrs { kernel: [1, 1], stride: [1, 1], padding: [0, 0] };
            p.attrs(|p, k| {
                match k {
                    "kernel" => a.kernel = p.pair()?,
                    "stride" => a.stride = p.pair()?,
                    "padding" => a.padding = p.pair()?,
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            if name == "max_pool2d" { Op::MaxPool2d(a) } else { Op::AvgPool2d(a) }
        }
        "batch_norm" | "layer_norm" | "rms_norm" => {
            let mut eps = 1e-5f32;
            p.attrs(|p, k| {
                match k {
                    "eps" => eps = p.float()? as f32,
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            match name {
                "batch_norm" => Op::BatchNorm { eps },
                "layer_norm" => Op::LayerNorm { eps },
                _ => Op::RmsNorm { eps },
            }
        }
        "softmax" | "concat" | "mean" | "sum" => {
            let mut axis = None;
            p.attrs(|p, k| {
                match k {
                    "axis" => axis = Some(p.int()?),
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            let Some(axis) = axis.filter(|a| *a >= 0) else {
                return p.fail(format!("`{name}` needs {{axis=N}}"));
            };
            let axis = axis as usize;
            match name {
                "softmax" => Op::Softmax { axis },
                "concat" => Op::Concat { axis },
                _ => Op::Reduce { axis, mean: name == "mean" },
            }
        }
        "reshape" => {
            let mut shape = None;
            p.attrs(|p, k| {
                match k {
                    "shape" => shape = Some(p.dims()?),
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            let Some(shape) = shape else {
                return p.fail("`reshape` needs {shape=[...]}");
            };
            Op::Reshape { shape }
        }
        "quantize_i8" => {
            let mut scale = None;
            p.attrs(|p, k| {
                match k {
                    "scale" => scale = Some(p.float()? as f32),
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            Op::QuantizeI8 { scale }
        }
        "fused_matmul" | "fused_conv2d" => {
            let mut a = ConvAttrs::default();
            let mut f = Fused { base: FusedBase::Matmul, scale: false, bias: false, residual: false, act: None };
            let conv = name == "fused_conv2d";
            p.attrs(|p, k| {
                match k {
                    "stride" if conv => a.stride = p.pair()?,
                    "padding" if conv => a.padding = p.pair()?,
                    "dilation" if conv => a.dilation = p.pair()?,
                    "groups" if conv => a.groups = p.int()?,
                    "epilogue" => {
                        p.expect(Tok::LBracket)?;
                        while !p.eat(Tok::RBracket) {
                            match p.ident()? {
                                "scale" => f.scale = true,
                                "bias" => f.bias = true,
                                "residual" => f.residual = true,
                                act => match UnaryOp::ALL.iter().find(|u| u.name() == act && u.is_activation()) {
                                    Some(u) => f.act = Some(*u),
                                    None => return p.fail(format!("unknown epilogue step `{act}`")),
                                },
                            }
                            if !p.eat(Tok::Comma) {
                                p.expect(Tok::RBracket)?;
                                break;
                            }
                        }
                    }
                    _ => unknown(p, k)?,
                }
                Ok(())
            })?;
            if conv {
                f.base = FusedBase::Conv2d(a);
            }
            Op::Fused(f)
        }
        other => return p.fail(format!("unknown op `{other}`")),
    })
}
