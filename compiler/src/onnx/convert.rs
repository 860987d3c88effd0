//! ONNX nodes onto `.tri` layers and expressions.
//!
//! Rules:
//! - Every node either maps onto the language (a std layer: `Conv2d`/`TernaryConv2d`,
//!   `BatchNorm2d`/`BatchNorm1d`, `Linear`/`TernaryLinear`; or a built-in op) or is listed as
//!   unsupported with its name, op type and why. One unsupported node means no output at all:
//!   the caller gets the whole list.
//! - Patterns folded into one layer: `Conv` + `BatchNormalization` (the conv's only reader),
//!   `MatMul` by a constant + `Add` of a constant bias, `x * Sigmoid(x)` (SiLU), `HardSwish`,
//!   `Clip(0, 6)` (relu6), `GlobalAveragePool` + `Flatten`.
//! - Shapes are tracked with the batch `B` symbolic (the first input dimension when it is not
//!   fixed); every other dimension must be known, as the language's layers need them.
//! - Layer names come from the weights' names (PyTorch's `layer1.0.conv1.weight` gives
//!   `layer1_0_conv1`), else from PyTorch's node paths, else `conv3`, `fc2`; parameters take
//!   the std layers' names (`w`, `b`, `gamma`, `beta`, `mean`, `var`).
//! - A value read once by an activation, batch norm or flatten is written inside that call;
//!   every other value gets a `let`, so each line is one layer and its activation.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use ndarray::{ArrayD, IxDyn};

use super::read::{Graph, InputDim, Node, Tensor};

/// Which convolutions and linear layers become ternary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TernaryPolicy {
    /// All but the first and the last (in the graph's order), as the zoo does.
    #[default]
    Auto,
    None,
    All,
}

/// A node the importer cannot express.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub node: String,
    pub op: String,
    pub why: String,
}

/// The result of a conversion: the model's source and its weights by parameter path.
#[derive(Debug)]
pub struct Converted {
    pub source: String,
    pub weights: HashMap<String, ArrayD<f32>>,
    /// Nodes read, and layers written, by kind (for the summary line).
    pub nodes: usize,
    pub layers: usize,
    pub ternary: usize,
}

/// A dimension: the batch or a known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    B,
    N(usize),
}

impl Dim {
    fn known(self) -> Option<usize> {
        match self {
            Dim::N(n) => Some(n),
            Dim::B => None,
        }
    }
}

fn shape_text(s: &[Dim]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.known().map_or("B".to_string(), |n| n.to_string())).collect();
    format!("f32[{}]", dims.join(", "))
}

/// A value of the forward function: how to write it and its shape.
#[derive(Clone, Debug)]
struct Val {
    expr: String,
    shape: Vec<Dim>,
    /// A name, a literal or a call (needs no parentheses as an operand).
    atomic: bool,
    /// A `global_avg_pool` result that ONNX still sees as `[B, C, 1, 1]` (`expr` is `[B, C]`).
    pooled: bool,
}

const KEYWORDS: &[&str] = &[
    "layer", "model", "fn", "let", "return", "use", "as", "weight", "param", "buffer", "const", "if", "else", "true",
    "false", "B",
];

struct Converter<'g> {
    g: &'g Graph,
    vals: HashMap<String, Val>,
    uses: HashMap<String, usize>,
    /// Value name -> the nodes that read it.
    readers: HashMap<String, Vec<usize>>,
    consumed: HashSet<usize>,
    /// Values of nodes that could not be imported (their readers are skipped quietly).
    failed: HashSet<String>,
    /// Integer vectors computed from shapes (`Shape`, `Gather`, ...; `None`: the batch).
    shapes: HashMap<String, Vec<Option<i64>>>,
    names: HashSet<String>,
    layers: Vec<String>,
    params: Vec<String>,
    stmts: Vec<String>,
    weights: HashMap<String, ArrayD<f32>>,
    unsupported: Vec<Unsupported>,
    /// Conv and linear nodes, in order, and which of them are ternary.
    ternary_nodes: HashSet<usize>,
    uses_std: HashSet<&'static str>,
    next_let: usize,
    ternary: usize,
}

/// Converts a read graph into a model named `name`.
pub fn convert(g: &Graph, name: &str, policy: TernaryPolicy, origin: &str) -> Result<Converted, Vec<Unsupported>> {
    let mut uses: HashMap<String, usize> = HashMap::new();
    let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in n.inputs.iter().filter(|v| !v.is_empty()) {
            *uses.entry(v.clone()).or_default() += 1;
            readers.entry(v.clone()).or_default().push(i);
        }
    }
    for o in &g.outputs {
        *uses.entry(o.clone()).or_default() += 1;
    }
    let products: Vec<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.op == "Conv"
                || n.op == "Gemm"
                || (n.op == "MatMul" && n.inputs.get(1).is_some_and(|b| g.initializers.contains_key(b)))
        })
        .map(|(i, _)| i)
        .collect();
    let ternary_nodes: HashSet<usize> = match policy {
        TernaryPolicy::None => HashSet::new(),
        TernaryPolicy::All => products.iter().copied().collect(),
        TernaryPolicy::Auto if products.len() > 2 => products[1..products.len() - 1].iter().copied().collect(),
        TernaryPolicy::Auto => HashSet::new(),
    };
    let mut c = Converter {
        g,
        vals: HashMap::new(),
        uses,
        readers,
        consumed: HashSet::new(),
        failed: HashSet::new(),
        shapes: HashMap::new(),
        names: KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .chain(crate::check::ops::builtin_names().map(String::from))
            .collect(),
        layers: Vec::new(),
        params: Vec::new(),
        stmts: Vec::new(),
        weights: HashMap::new(),
        unsupported: Vec::new(),
        ternary_nodes,
        uses_std: HashSet::new(),
        next_let: 0,
        ternary: 0,
    };
    let mut signature = Vec::new();
    for input in &g.inputs {
        let ident = c.fresh(&sanitize(&input.name), "x");
        let mut shape = Vec::new();
        for (i, d) in input.dims.iter().enumerate() {
            match d {
                InputDim::Fixed(n) if i > 0 || *n != 1 => shape.push(Dim::N(*n)),
                InputDim::Fixed(_) => shape.push(Dim::B),
                InputDim::Free(_) if i == 0 => shape.push(Dim::B),
                InputDim::Free(p) => c.unsupported.push(Unsupported {
                    node: input.name.clone(),
                    op: "input".into(),
                    why: format!("dimension {i} (`{p}`) is not fixed; only the batch (dimension 0) may vary"),
                }),
            }
        }
        signature.push(format!("{ident}: {}", shape_text(&shape)));
        c.vals.insert(input.name.clone(), Val { expr: ident, shape, atomic: true, pooled: false });
    }
    for i in 0..g.nodes.len() {
        if c.consumed.contains(&i) {
            continue;
        }
        if let Err(why) = c.node(i) {
            let n = &g.nodes[i];
            c.failed.extend(n.outputs.iter().cloned());
            c.unsupported.push(Unsupported { node: n.name.clone(), op: n.op.clone(), why });
        }
    }
    if g.outputs.len() != 1 {
        c.unsupported.push(Unsupported {
            node: "the graph's outputs".into(),
            op: "output".into(),
            why: format!("the model has {} outputs; the importer writes models with one", g.outputs.len()),
        });
    }
    if !c.unsupported.is_empty() {
        return Err(c.unsupported);
    }
    let out = c.vals.get(&g.outputs[0]).cloned().ok_or_else(|| {
        vec![Unsupported {
            node: "the graph's outputs".into(),
            op: "output".into(),
            why: "the output is not computed".into(),
        }]
    })?;
    let out = c.unpool(out);
    let mut src = String::new();
    let _ = writeln!(src, "# Imported by `triton import` from {origin}.");
    let _ = writeln!(
        src,
        "# Ternary layers: {}.",
        match policy {
            TernaryPolicy::Auto => "every convolution and linear layer but the first and the last (--ternary auto)",
            TernaryPolicy::None => "none (--ternary none)",
            TernaryPolicy::All => "every convolution and linear layer (--ternary all)",
        }
    );
    let mut std: Vec<&str> = c.uses_std.iter().copied().collect();
    std.sort_unstable();
    if !std.is_empty() {
        let _ = writeln!(src, "use std::nn::{{{}}}", std.join(", "));
    }
    let _ = writeln!(src, "\nmodel {name} {{");
    for l in c.layers.iter().chain(&c.params) {
        let _ = writeln!(src, "    {l}");
    }
    let _ = writeln!(src, "\n    fn forward({}) -> {} {{", signature.join(", "), shape_text(&out.shape));
    for s in &c.stmts {
        let _ = writeln!(src, "        {s}");
    }
    let _ = writeln!(src, "        return {}\n    }}\n}}", out.expr);
    Ok(Converted { source: src, weights: c.weights, nodes: g.nodes.len(), layers: c.layers.len(), ternary: c.ternary })
}

/// A name usable as an identifier: letters, digits and `_`, not starting with a digit.
fn sanitize(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    let out = out.trim_matches('_').to_string();
    if out.starts_with(|c: char| c.is_ascii_digit()) { format!("v{out}") } else { out }
}

/// `x` as a literal the language reads back exactly.
fn float(x: f32) -> String {
    if x.fract() == 0.0 && x.abs() < 1e9 { format!("{x:.1}") } else { format!("{x:?}") }
}

impl Converter<'_> {
    /// A new identifier from `want` (or `fallback` when empty), unique in the model.
    fn fresh(&mut self, want: &str, fallback: &str) -> String {
        let base = if want.is_empty() { fallback.to_string() } else { want.to_string() };
        let mut name = base.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone());
        name
    }

    /// The layer name for node `i` whose weight is initializer `w`.
    fn layer_name(&mut self, i: usize, w: &str, fallback: &str) -> String {
        // PyTorch's `conv1.weight`, or Triton's own `conv1.w`, `bn1.gamma` (a model it exported).
        let from_weight = [".weight", ".w", ".gamma"]
            .iter()
            .find_map(|s| w.strip_suffix(s))
            .filter(|_| !w.starts_with("onnx::"))
            .map(sanitize);
        let node = &self.g.nodes[i].name;
        // PyTorch's node paths: `/layer1/layer1.0/conv1/Conv` -> `layer1_0_conv1`.
        let from_path = node.starts_with('/').then(|| {
            let parts: Vec<&str> = node.trim_start_matches('/').split('/').collect();
            let module: Vec<&str> =
                parts[..parts.len().saturating_sub(1)].iter().map(|p| p.rsplit('.').next().unwrap_or(p)).collect();
            sanitize(&module.join("_"))
        });
        let want = from_weight.or(from_path).unwrap_or_default();
        let n = self.layers.len();
        self.fresh(&want, &format!("{fallback}{n}"))
    }

    fn val(&self, name: &str) -> Result<Val, String> {
        if let Some(v) = self.vals.get(name) {
            return Ok(v.clone());
        }
        match self.g.initializers.get(name) {
            Some(t) if t.len() == 1 => {
                Ok(Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false })
            }
            Some(_) => Err(format!("`{name}` is a constant tensor where a computed value is expected")),
            None => Err(format!("`{name}` is not computed (an earlier node was not imported)")),
        }
    }

    fn init(&self, name: &str) -> Option<&Tensor> {
        self.g.initializers.get(name)
    }

    /// The value of input `k` of node `n`, which must be a constant.
    fn constant(&self, n: &Node, k: usize) -> Result<&Tensor, String> {
        let name = n.inputs.get(k).filter(|s| !s.is_empty()).ok_or_else(|| format!("input {k} is missing"))?;
        self.init(name).ok_or_else(|| format!("input {k} (`{name}`) must be a constant (an initializer)"))
    }

    /// The one node reading `value`, when it is read once (and is not a graph output).
    fn only_reader(&self, value: &str) -> Option<usize> {
        match (self.uses.get(value), self.readers.get(value)) {
            (Some(1), Some(r)) if r.len() == 1 => Some(r[0]),
            _ => None,
        }
    }

    /// Records node `i`'s output `e`: written inside its reader when that reader is a wrapper
    /// call, else bound by a `let`.
    fn define(&mut self, out: &str, v: Val) {
        let wrapper = self.only_reader(out).is_some_and(|r| {
            let op = self.g.nodes[r].op.as_str();
            matches!(
                op,
                "Relu"
                    | "Clip"
                    | "Sigmoid"
                    | "Tanh"
                    | "Flatten"
                    | "Softmax"
                    | "Identity"
                    | "Dropout"
                    | "BatchNormalization"
            ) && !self.consumed.contains(&r)
        });
        let returned = self.g.outputs.iter().any(|o| o == out) && self.uses.get(out) == Some(&1);
        let v = if v.atomic && !v.expr.contains('(') || wrapper || returned {
            v
        } else {
            self.next_let += 1;
            let name = self.fresh(&format!("h{}", self.next_let), "h");
            self.stmts.push(format!("let {name} = {}", v.expr));
            Val { expr: name, atomic: true, ..v }
        };
        self.vals.insert(out.to_string(), v);
    }

    /// A pooled value as ONNX sees it, `[B, C, 1, 1]`.
    fn unpool(&self, v: Val) -> Val {
        if !v.pooled {
            return v;
        }
        let c = v.shape.get(1).and_then(|d| d.known()).unwrap_or(0);
        Val {
            expr: format!("reshape({}, [-1, {c}, 1, 1])", v.expr),
            shape: vec![Dim::B, Dim::N(c), Dim::N(1), Dim::N(1)],
            atomic: true,
            pooled: false,
        }
    }

    fn input(&self, n: &Node, k: usize) -> Result<Val, String> {
        let name = n.inputs.get(k).filter(|s| !s.is_empty()).ok_or_else(|| format!("input {k} is missing"))?;
        Ok(self.unpool(self.val(name)?))
    }

    fn node(&mut self, i: usize) -> Result<(), String> {
        let n = &self.g.nodes[i];
        // A node reading what an unsupported node made is reported only when its own op has
        // no equivalent (its shapes are unknown).
        if n.inputs.iter().any(|v| self.failed.contains(v)) {
            self.failed.extend(n.outputs.iter().cloned());
            let op = n.op.as_str();
            return if SUPPORTED.contains(&op) && !SHAPES_ONLY.contains(&op) { Ok(()) } else { Err(no_equivalent(op)) };
        }
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            return Err(format!("domain `{}` is not ONNX's", n.domain));
        }
        let mut out = n.outputs.first().cloned().ok_or("no output")?;
        let unary = |c: &Self, f: &str| -> Result<Val, String> {
            let x = c.input(n, 0)?;
            Ok(Val { expr: format!("{f}({})", x.expr), shape: x.shape, atomic: true, pooled: false })
        };
        let v = match n.op.as_str() {
            "Conv" => {
                let v = self.conv(i)?;
                // A batch norm that only reads this convolution joins it.
                match self.only_reader(&out).filter(|r| self.g.nodes[*r].op == "BatchNormalization") {
                    Some(r) => {
                        self.consumed.insert(r);
                        out = self.g.nodes[r].outputs[0].clone();
                        self.batch_norm(r, v)?
                    }
                    None => v,
                }
            }
            "Gemm" => self.gemm(i)?,
            "MatMul" => {
                let (definer, v) = self.matmul(i)?;
                out = self.g.nodes[definer].outputs[0].clone();
                v
            }
            "BatchNormalization" => {
                let x = self.input(n, 0)?;
                self.batch_norm(i, x)?
            }
            "Relu" => unary(self, "relu")?,
            "Sigmoid" => {
                // x * sigmoid(x) -> silu(x)
                if let Some(r) = self.only_reader(&out)
                    && self.g.nodes[r].op == "Mul"
                    && self.g.nodes[r].inputs.contains(&n.inputs[0])
                {
                    self.consumed.insert(r);
                    out = self.g.nodes[r].outputs[0].clone();
                    unary(self, "silu")?
                } else {
                    unary(self, "sigmoid")?
                }
            }
            "Tanh" => unary(self, "tanh")?,
            "Neg" => {
                let x = self.input(n, 0)?;
                Val { expr: format!("-{}", paren(&x)), shape: x.shape, atomic: false, pooled: false }
            }
            "Clip" => {
                let bound = |k: usize, attr: &str| -> Result<Option<f32>, String> {
                    if let Some(v) = n.float(attr) {
                        return Ok(Some(v));
                    }
                    match n.inputs.get(k).filter(|s| !s.is_empty()) {
                        None => Ok(None),
                        Some(_) => self.constant(n, k).map(|t| t.f32s().first().copied()),
                    }
                };
                match (bound(1, "min")?, bound(2, "max")?) {
                    (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => unary(self, "relu6")?,
                    (Some(0.0), None) => unary(self, "relu")?,
                    (lo, hi) => {
                        return Err(format!(
                            "Clip to [{lo:?}, {hi:?}]: only [0, 6] (relu6) and [0, inf) (relu) have an equivalent"
                        ));
                    }
                }
            }
            "HardSwish" => {
                let x = self.input(n, 0)?;
                let x = self.bind(x);
                Val {
                    expr: format!("{} * relu6({} + 3.0) / 6.0", x.expr, x.expr),
                    shape: x.shape,
                    atomic: false,
                    pooled: false,
                }
            }
            "HardSigmoid" => {
                let (a, b) = (n.float("alpha").unwrap_or(0.2), n.float("beta").unwrap_or(0.5));
                let x = self.input(n, 0)?;
                Val {
                    expr: format!("relu6({} * {} + {}) / 6.0", paren(&x), float(6.0 * a), float(6.0 * b)),
                    shape: x.shape,
                    atomic: false,
                    pooled: false,
                }
            }
            "Softmax" => {
                let x = self.input(n, 0)?;
                let rank = x.shape.len() as i64;
                let default = if self.g.opset >= 13 { -1 } else { 1 };
                let axis = n.int("axis").unwrap_or(default);
                let axis = if axis < 0 { axis + rank } else { axis };
                if self.g.opset < 13 && axis != rank - 1 {
                    return Err(format!(
                        "Softmax before opset 13 over axis {axis} of a rank-{rank} tensor flattens it first; only the last axis has an equivalent"
                    ));
                }
                Val { expr: format!("softmax({}, axis = {axis})", x.expr), shape: x.shape, atomic: true, pooled: false }
            }
            "Identity" | "Dropout" => {
                if n.op == "Dropout" && n.outputs.get(1).is_some_and(|m| !m.is_empty() && self.uses.contains_key(m)) {
                    return Err("its mask output is read; in inference Dropout has no mask".into());
                }
                self.val(&n.inputs[0])?
            }
            "Flatten" => {
                let x = self.val(&n.inputs[0])?;
                if n.int("axis").unwrap_or(1) != 1 {
                    return Err(format!(
                        "Flatten at axis {}: only axis 1 has an equivalent",
                        n.int("axis").unwrap_or(1)
                    ));
                }
                if x.pooled {
                    Val { pooled: false, ..x }
                } else {
                    let rest = x.shape[1..]
                        .iter()
                        .map(|d| d.known().ok_or("a symbolic dimension"))
                        .product::<Result<usize, _>>()?;
                    Val {
                        expr: format!("flatten({})", x.expr),
                        shape: vec![Dim::B, Dim::N(rest)],
                        atomic: true,
                        pooled: false,
                    }
                }
            }
            "Reshape" => self.reshape(i)?,
            "Shape" | "Gather" | "Unsqueeze" | "Squeeze" | "Cast" if self.shape_op(i)? => return Ok(()),
            "Concat" if self.shape_op(i)? => return Ok(()),
            "GlobalAveragePool" => {
                let x = self.input(n, 0)?;
                if x.shape.len() != 4 {
                    return Err(format!("input of rank {}; [B, C, H, W] expected", x.shape.len()));
                }
                Val {
                    expr: format!("global_avg_pool({})", x.expr),
                    shape: x.shape[..2].to_vec(),
                    atomic: true,
                    pooled: true,
                }
            }
            "MaxPool" | "AveragePool" => self.pool(i)?,
            "Add" | "Sub" | "Mul" | "Div" => self.binary(i)?,
            "Concat" => {
                let xs: Vec<Val> = (0..n.inputs.len()).map(|k| self.input(n, k)).collect::<Result<_, _>>()?;
                let rank = xs.first().map_or(0, |x| x.shape.len()) as i64;
                let axis = n.int("axis").ok_or("no axis")?;
                let axis = if axis < 0 { axis + rank } else { axis };
                if axis == 0 {
                    return Err("concatenation along the batch axis".into());
                }
                let mut shape = xs[0].shape.clone();
                let mut sum = 0;
                for x in &xs {
                    sum += x
                        .shape
                        .get(axis as usize)
                        .and_then(|d| d.known())
                        .ok_or("a symbolic dimension along the axis")?;
                }
                shape[axis as usize] = Dim::N(sum);
                let list: Vec<&str> = xs.iter().map(|x| x.expr.as_str()).collect();
                Val {
                    expr: format!("concat([{}], axis = {axis})", list.join(", ")),
                    shape,
                    atomic: true,
                    pooled: false,
                }
            }
            "Constant" => {
                // Only scalars are used inline; a larger constant becomes a model parameter.
                let t = match n.attrs.get("value") {
                    Some(super::read::Attr::Tensor(t)) => t.clone(),
                    _ => return Err("only `value` tensors are imported".into()),
                };
                if t.len() == 1 {
                    Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false }
                } else {
                    self.param(&out, &t)
                }
            }
            other => return Err(no_equivalent(other)),
        };
        self.define(&out, v);
        Ok(())
    }

    /// `v` bound to a name (when it is not one already), for an expression that reads it twice.
    fn bind(&mut self, v: Val) -> Val {
        if v.atomic && !v.expr.contains('(') {
            return v;
        }
        self.next_let += 1;
        let name = self.fresh(&format!("h{}", self.next_let), "h");
        self.stmts.push(format!("let {name} = {}", v.expr));
        Val { expr: name, atomic: true, ..v }
    }

    /// A model-level parameter holding constant `t` (ONNX's constant operands).
    fn param(&mut self, onnx_name: &str, t: &Tensor) -> Val {
        let name = self.fresh(&sanitize(onnx_name), "c");
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        self.params.push(format!("param {name}: f32[{}]", dims.join(", ")));
        self.weights.insert(name.clone(), array(t, &t.dims));
        // Shape as a broadcast operand: leading dimensions are the trailing ones of the other.
        Val { expr: name, shape: t.dims.iter().map(|d| Dim::N(*d)).collect(), atomic: true, pooled: false }
    }

    fn conv(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let x = self.input(n, 0)?;
        let w = self.constant(n, 1)?.clone();
        let bias = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            Some(_) => Some(self.constant(n, 2)?.clone()),
            None => None,
        };
        if w.dims.len() != 4 || x.shape.len() != 4 {
            return Err(format!(
                "a {}-d convolution; only 2-d convolutions are imported",
                w.dims.len().saturating_sub(2)
            ));
        }
        let (o, cg, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        if kh != kw {
            return Err(format!("kernel {kh}x{kw}: only square kernels have an equivalent"));
        }
        let one = |name: &str, default: i64| -> Result<i64, String> {
            match n.ints(name) {
                None => Ok(default),
                Some(v) if v.iter().all(|x| *x == v[0]) && !v.is_empty() => Ok(v[0]),
                Some(v) => Err(format!("{name} {v:?}: only equal values on every side have an equivalent")),
            }
        };
        if n.string("auto_pad").is_some_and(|p| p != "NOTSET" && p != "VALID") {
            return Err(format!(
                "auto_pad {}: give explicit pads (re-export without auto padding)",
                n.string("auto_pad").unwrap_or("")
            ));
        }
        let (stride, pad, dil, groups) =
            (one("strides", 1)?, one("pads", 0)?, one("dilations", 1)?, n.int("group").unwrap_or(1));
        let c = x.shape[1].known().ok_or("the channel dimension is symbolic")?;
        if groups < 1 || c != cg * groups as usize {
            return Err(format!("{c} input channels for a weight of {cg} per group in {groups} groups"));
        }
        let ternary = self.ternary_nodes.contains(&i);
        let layer = if ternary { "TernaryConv2d" } else { "Conv2d" };
        self.uses_std.insert(layer);
        self.ternary += usize::from(ternary);
        let name = self.layer_name(i, &n.inputs[1], "conv");
        let mut args = vec![c.to_string(), o.to_string(), kh.to_string()];
        for (key, v, default) in
            [("stride", stride, 1), ("padding", pad, 0), ("dilation", dil, 1), ("groups", groups, 1)]
        {
            if v != default {
                args.push(format!("{key} = {v}"));
            }
        }
        if bias.is_none() {
            args.push("bias = false".into());
        }
        self.layers.push(format!("{name} = {layer}({})", args.join(", ")));
        self.weights.insert(format!("{name}.w"), array(&w, &w.dims));
        if let Some(b) = &bias {
            self.weights.insert(format!("{name}.b"), array(b, &[o]));
        }
        let size = |d: Dim, k: usize| -> Result<Dim, String> {
            let d = d.known().ok_or("a symbolic spatial dimension")? as i64;
            let out = (d + 2 * pad - dil * (k as i64 - 1) - 1) / stride + 1;
            if out < 1 { Err(format!("the window does not fit a {d}-pixel input")) } else { Ok(Dim::N(out as usize)) }
        };
        let shape = vec![Dim::B, Dim::N(o), size(x.shape[2], kh)?, size(x.shape[3], kw)?];
        Ok(Val { expr: format!("{name}({})", x.expr), shape, atomic: true, pooled: false })
    }

    fn batch_norm(&mut self, i: usize, x: Val) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if n.int("training_mode").unwrap_or(0) != 0 {
            return Err("training mode".into());
        }
        let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|k| self.constant(n, k).cloned());
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let c = x.shape.get(1).and_then(|d| d.known()).ok_or("no channel dimension")?;
        if [&gamma, &beta, &mean, &var].iter().any(|t| t.len() != c) {
            return Err(format!("statistics that do not have {c} values"));
        }
        let layer = match x.shape.len() {
            4 => "BatchNorm2d",
            2 => "BatchNorm1d",
            r => return Err(format!("a rank-{r} input; [B, C, H, W] or [B, C] expected")),
        };
        self.uses_std.insert(layer);
        let name = self.layer_name(i, &n.inputs[1], "bn");
        let eps = n.float("epsilon").unwrap_or(1e-5);
        let args = if (eps - 1e-5).abs() > 1e-12 { format!("{c}, eps = {}", float(eps)) } else { c.to_string() };
        self.layers.push(format!("{name} = {layer}({args})"));
        for (p, t) in [("gamma", &gamma), ("beta", &beta), ("mean", &mean), ("var", &var)] {
            self.weights.insert(format!("{name}.{p}"), array(t, &[c]));
        }
        Ok(Val { expr: format!("{name}({})", x.expr), shape: x.shape, atomic: true, pooled: false })
    }

    /// A linear layer: `x [B, K]`, weight as `[N, K]`, optional bias `[N]`.
    fn linear(
        &mut self,
        i: usize,
        x: Val,
        w: ArrayD<f32>,
        bias: Option<ArrayD<f32>>,
        weight_name: &str,
    ) -> Result<Val, String> {
        let (nn, k) = (w.shape()[0], w.shape()[1]);
        if x.shape.len() != 2 || x.shape[1] != Dim::N(k) {
            return Err(format!("input {} for a [{nn}, {k}] weight; [B, {k}] expected", shape_text(&x.shape)));
        }
        let ternary = self.ternary_nodes.contains(&i);
        let layer = if ternary { "TernaryLinear" } else { "Linear" };
        self.uses_std.insert(layer);
        self.ternary += usize::from(ternary);
        let name = self.layer_name(i, weight_name, "fc");
        let no_bias = if bias.is_none() { ", bias = false" } else { "" };
        self.layers.push(format!("{name} = {layer}({k}, {nn}{no_bias})"));
        self.weights.insert(format!("{name}.w"), w);
        if let Some(b) = bias {
            self.weights.insert(format!("{name}.b"), b);
        }
        Ok(Val { expr: format!("{name}({})", x.expr), shape: vec![Dim::B, Dim::N(nn)], atomic: true, pooled: false })
    }

    fn gemm(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if n.float("alpha").unwrap_or(1.0) != 1.0
            || n.float("beta").unwrap_or(1.0) != 1.0
            || n.int("transA").unwrap_or(0) != 0
        {
            return Err("alpha, beta other than 1 or transA: only x W^T + b has an equivalent".into());
        }
        let x = self.input(n, 0)?;
        let w = self.constant(n, 1)?.clone();
        if w.dims.len() != 2 {
            return Err("a weight that is not a matrix".into());
        }
        let w = if n.int("transB").unwrap_or(0) == 1 {
            array(&w, &w.dims)
        } else {
            array(&w, &w.dims).reversed_axes().as_standard_layout().into_owned()
        };
        let nn = w.shape()[0];
        let bias = match n.inputs.get(2).filter(|s| !s.is_empty()) {
            Some(_) => {
                let b = self.constant(n, 2)?;
                if b.len() != nn {
                    return Err(format!(
                        "a bias of {} values for {nn} outputs (only a per-output bias has an equivalent)",
                        b.len()
                    ));
                }
                Some(array(b, &[nn]))
            }
            None => None,
        };
        let wname = n.inputs[1].clone();
        self.linear(i, x, w, bias, &wname)
    }

    /// A product by a constant, and the node whose output it defines (the bias `Add` that
    /// joins it, or itself).
    fn matmul(&mut self, i: usize) -> Result<(usize, Val), String> {
        let n = &self.g.nodes[i];
        let b = n
            .inputs
            .get(1)
            .and_then(|b| self.init(b))
            .ok_or("a product of two computed values has no equivalent yet")?
            .clone();
        if b.dims.len() != 2 {
            return Err("a weight that is not a matrix".into());
        }
        let x = self.input(n, 0)?;
        let w = array(&b, &b.dims).reversed_axes().as_standard_layout().into_owned();
        let nn = w.shape()[0];
        // A bias added right after (and only there) joins the layer.
        let out = n.outputs[0].clone();
        let mut bias = None;
        if let Some(r) = self.only_reader(&out)
            && self.g.nodes[r].op == "Add"
            && let Some(other) = self.g.nodes[r].inputs.iter().find(|v| **v != out)
            && let Some(t) = self.init(other).filter(|t| t.len() == nn)
        {
            bias = Some((r, array(t, &[nn])));
        }
        let wname = n.inputs[1].clone();
        match bias {
            Some((r, b)) => {
                self.consumed.insert(r);
                Ok((r, self.linear(i, x, w, Some(b), &wname)?))
            }
            None => Ok((i, self.linear(i, x, w, None, &wname)?)),
        }
    }

    fn reshape(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        if let Some(c) = n.inputs.first().and_then(|v| self.init(v)).cloned() {
            return self.reshape_constant(n, &c);
        }
        let x = self.input(n, 0)?;
        // A constant shape, or one computed from shapes (PyTorch's `x.view(x.size(0), -1)`:
        // Shape -> Gather -> Unsqueeze -> Concat), where the batch reads as 0 (copy it).
        let target = match n.inputs.get(1).and_then(|s| self.shapes.get(s)) {
            Some(s) => s.iter().enumerate().map(|(k, d)| match d {
                Some(v) => Ok(*v),
                None if k == 0 => Ok(0),
                None => Err("a computed shape with the batch size away from dimension 0".to_string()),
            }).collect::<Result<Vec<i64>, String>>()?,
            None => self
                .constant(n, 1)
                .map_err(|_| "its shape is computed from values other than shapes; only constant and shape-derived shapes are imported".to_string())?
                .i64s()
                .ok_or("a shape that is not integers")?,
        };
        let allow_zero = n.int("allowzero").unwrap_or(0) == 1;
        let mut dims: Vec<Option<usize>> = Vec::new();
        for (k, &t) in target.iter().enumerate() {
            dims.push(match t {
                0 if !allow_zero => match x.shape.get(k) {
                    Some(Dim::B) => None,
                    Some(Dim::N(v)) => Some(*v),
                    None => return Err(format!("dimension {k} copies an input dimension that does not exist")),
                },
                -1 => None,
                t if t > 0 => Some(t as usize),
                t => return Err(format!("dimension {t}")),
            });
        }
        // The batch stays first: dimension 0 is the batch (copied, or -1 with every other
        // dimension fixed); one other -1 is inferred from the input's per-example size.
        let keep_batch = x.shape.first() == Some(&Dim::B) && dims.first().is_some_and(|d| d.is_none());
        let free: Vec<usize> = (1..dims.len()).filter(|k| dims[*k].is_none()).collect();
        let per_example = x.shape[1..].iter().map(|d| d.known()).product::<Option<usize>>();
        let mut rest: Vec<usize> = dims.iter().skip(1).map(|d| d.unwrap_or(0)).collect();
        match (keep_batch, free.as_slice(), per_example) {
            (true, [], Some(p)) if rest.iter().product::<usize>() == p => {}
            (true, [k], Some(p)) if target[0] == 0 => {
                let known: usize = rest.iter().enumerate().filter(|(j, _)| j + 1 != *k).map(|(_, d)| *d).product();
                if known == 0 || !p.is_multiple_of(known) {
                    return Err(format!("target shape {target:?} does not divide {p} values per example"));
                }
                rest[k - 1] = p / known;
            }
            _ => {
                return Err(format!(
                    "target shape {target:?} of an input {}: only reshapes that keep the batch first and the values per example have an equivalent",
                    shape_text(&x.shape)
                ));
            }
        }
        let text: Vec<String> = std::iter::once("-1".to_string()).chain(rest.iter().map(|d| d.to_string())).collect();
        let shape = std::iter::once(Dim::B).chain(rest.iter().map(|d| Dim::N(*d))).collect();
        // [B, ...] to [B, everything else] is a flatten.
        let expr = if rest.len() == 1 && x.shape.len() > 2 {
            format!("flatten({})", x.expr)
        } else {
            format!("reshape({}, [{}])", x.expr, text.join(", "))
        };
        Ok(Val { expr, shape, atomic: true, pooled: false })
    }

    /// The integer vectors computed from shapes (`None`: the batch size). Returns whether node
    /// `i` was such an op (its output is then a shape, not a tensor).
    fn shape_op(&mut self, i: usize) -> Result<bool, String> {
        let n = &self.g.nodes[i];
        let ints = |c: &Self, v: &str| -> Option<Vec<Option<i64>>> {
            if let Some(s) = c.shapes.get(v) {
                return Some(s.clone());
            }
            c.init(v).and_then(|t| t.i64s()).map(|v| v.into_iter().map(Some).collect())
        };
        let first = n.inputs.first().cloned().unwrap_or_default();
        let out: Vec<Option<i64>> = match n.op.as_str() {
            "Shape" => {
                let x = self.input(n, 0)?;
                let dims: Vec<Option<i64>> = x.shape.iter().map(|d| d.known().map(|v| v as i64)).collect();
                let rank = dims.len() as i64;
                let at = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let (start, end) = (at(n.int("start").unwrap_or(0)), at(n.int("end").unwrap_or(rank)));
                dims.get(start..end.max(start)).unwrap_or(&[]).to_vec()
            }
            "Gather" | "Unsqueeze" | "Squeeze" | "Cast" if !self.shapes.contains_key(&first) => return Ok(false),
            "Gather" => {
                let src = self.shapes[&first].clone();
                let idx = self.constant(n, 1)?.i64s().ok_or("indices that are not integers")?;
                if n.int("axis").unwrap_or(0) != 0 {
                    return Err("a gather along another axis than 0 of a shape".into());
                }
                let len = src.len() as i64;
                idx.iter()
                    .map(|&k| {
                        let k = if k < 0 { k + len } else { k };
                        src.get(k as usize).copied().ok_or_else(|| format!("index {k} of a shape of rank {len}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "Unsqueeze" | "Squeeze" | "Cast" => self.shapes[&first].clone(),
            "Concat" => {
                if !n.inputs.iter().any(|v| self.shapes.contains_key(v)) {
                    return Ok(false);
                }
                let mut out = Vec::new();
                for v in &n.inputs {
                    out.extend(
                        ints(self, v).ok_or_else(|| format!("`{v}` is neither a shape nor an integer constant"))?,
                    );
                }
                out
            }
            _ => return Ok(false),
        };
        self.shapes.insert(n.outputs[0].clone(), out);
        Ok(true)
    }

    /// A reshaped constant: a parameter of the new shape.
    fn reshape_constant(&mut self, n: &Node, c: &Tensor) -> Result<Val, String> {
        let target = self.constant(n, 1)?.i64s().ok_or("a shape that is not integers")?;
        let mut dims: Vec<usize> = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &t) in target.iter().enumerate() {
            dims.push(match t {
                0 => *c.dims.get(k).ok_or("a copied dimension that does not exist")?,
                -1 if infer.is_none() => {
                    infer = Some(k);
                    1
                }
                t if t > 0 => t as usize,
                t => return Err(format!("dimension {t}")),
            });
        }
        if let Some(k) = infer {
            let known: usize = dims.iter().product();
            if known == 0 || !c.len().is_multiple_of(known) {
                return Err(format!("target shape {target:?} does not fit {} values", c.len()));
            }
            dims[k] = c.len() / known;
        }
        if dims.iter().product::<usize>() != c.len() {
            return Err(format!("target shape {target:?} does not hold {} values", c.len()));
        }
        let t = Tensor { dims, data: c.data.clone() };
        Ok(self.param(&n.outputs[0], &t))
    }

    fn pool(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let x = self.input(n, 0)?;
        let k = n.ints("kernel_shape").ok_or("no kernel_shape")?.to_vec();
        if k.len() != 2 || k[0] != k[1] {
            return Err(format!("kernel {k:?}: only square 2-d windows have an equivalent"));
        }
        let one = |name: &str, default: i64| -> Result<i64, String> {
            match n.ints(name) {
                None => Ok(default),
                Some(v) if !v.is_empty() && v.iter().all(|x| *x == v[0]) => Ok(v[0]),
                Some(v) => Err(format!("{name} {v:?}: only equal values on every side have an equivalent")),
            }
        };
        let (stride, pad) = (one("strides", 1)?, one("pads", 0)?);
        if one("dilations", 1)? != 1 {
            return Err("dilated pooling".into());
        }
        if n.int("ceil_mode").unwrap_or(0) != 0 {
            return Err("ceil_mode 1 (the language rounds output sizes down)".into());
        }
        let avg = n.op == "AveragePool";
        if avg && pad > 0 && n.int("count_include_pad").unwrap_or(0) == 0 {
            return Err(
                "average pooling that leaves padding out of the count (the language counts it: count_include_pad = 1)"
                    .into(),
            );
        }
        let kk = k[0];
        let size = |d: Dim| -> Result<Dim, String> {
            let d = d.known().ok_or("a symbolic spatial dimension")? as i64;
            let out = (d + 2 * pad - kk) / stride + 1;
            if out < 1 { Err("the window does not fit".into()) } else { Ok(Dim::N(out as usize)) }
        };
        if x.shape.len() != 4 {
            return Err("an input that is not [B, C, H, W]".into());
        }
        let shape = vec![x.shape[0], x.shape[1], size(x.shape[2])?, size(x.shape[3])?];
        let f = if avg { "avg_pool2d" } else { "max_pool2d" };
        let mut args = vec![x.expr.clone(), kk.to_string()];
        if stride != kk {
            args.push(format!("stride = {stride}"));
        }
        if pad != 0 {
            args.push(format!("padding = {pad}"));
        }
        Ok(Val { expr: format!("{f}({})", args.join(", ")), shape, atomic: true, pooled: false })
    }

    fn binary(&mut self, i: usize) -> Result<Val, String> {
        let n = &self.g.nodes[i];
        let operand = |c: &mut Self, k: usize| -> Result<Val, String> {
            let name = n.inputs.get(k).filter(|s| !s.is_empty()).ok_or("an operand is missing")?;
            match c.init(name) {
                Some(t) if t.len() == 1 => {
                    Ok(Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false })
                }
                Some(t) => {
                    let t = t.clone();
                    Ok(c.param(name, &t))
                }
                None => c.input(n, k),
            }
        };
        let (a, b) = (operand(self, 0)?, operand(self, 1)?);
        let sym = match n.op.as_str() {
            "Add" => "+",
            "Sub" => "-",
            "Mul" => "*",
            _ => "/",
        };
        // numpy broadcasting of the two shapes.
        let rank = a.shape.len().max(b.shape.len());
        let at = |s: &[Dim], k: usize| if k + s.len() >= rank { s[k + s.len() - rank] } else { Dim::N(1) };
        let mut shape = Vec::with_capacity(rank);
        for k in 0..rank {
            shape.push(match (at(&a.shape, k), at(&b.shape, k)) {
                (x, y) if x == y => x,
                (Dim::N(1), y) => y,
                (x, Dim::N(1)) => x,
                (x, y) => return Err(format!("operands {x:?} and {y:?} do not broadcast")),
            });
        }
        let right = if (sym == "-" || sym == "/") && !b.atomic { format!("({})", b.expr) } else { paren_if(&b, sym) };
        Ok(Val { expr: format!("{} {sym} {right}", paren_if(&a, sym)), shape, atomic: false, pooled: false })
    }
}

/// The op types the importer maps (some only with the attributes the language can express).
const SUPPORTED: &[&str] = &[
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Neg",
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Softmax",
    "Identity",
    "Dropout",
    "Flatten",
    "Reshape",
    "GlobalAveragePool",
    "MaxPool",
    "AveragePool",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Constant",
];

/// Supported only on shapes (a computed target of `Reshape`), not on tensors.
const SHAPES_ONLY: &[&str] = &["Shape", "Gather", "Unsqueeze", "Squeeze", "Cast"];

fn no_equivalent(op: &str) -> String {
    if SHAPES_ONLY.contains(&op) {
        format!("`{op}` of a tensor has no equivalent in the language yet (of a shape, it is read)")
    } else {
        format!("`{op}` has no equivalent in the language yet")
    }
}

/// `v` in parentheses unless it is atomic.
fn paren(v: &Val) -> String {
    if v.atomic { v.expr.clone() } else { format!("({})", v.expr) }
}

/// `v` as an operand of `op`: parenthesized when its own top operator binds looser.
fn paren_if(v: &Val, op: &str) -> String {
    let loose = !v.atomic && (op == "*" || op == "/") && (v.expr.contains(" + ") || v.expr.contains(" - "));
    if loose || (!v.atomic && (op == "-" || op == "/")) { format!("({})", v.expr) } else { v.expr.clone() }
}

/// A tensor's values as an f32 array of shape `dims`.
fn array(t: &Tensor, dims: &[usize]) -> ArrayD<f32> {
    let values = t.f32s();
    let mut a = ArrayD::<f32>::zeros(IxDyn(dims));
    a.iter_mut().zip(values).for_each(|(d, v)| *d = v);
    a
}
