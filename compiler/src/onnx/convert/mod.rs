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

mod layers;
mod nodes;
mod ops;
mod shapes;

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

/// A dimension: the batch, a multiple of it (tokens of a batch flattened, `[B * T, D]`) or a
/// known size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    B,
    /// `k * B`, `k >= 2`.
    Bk(usize),
    N(usize),
}

impl Dim {
    fn known(self) -> Option<usize> {
        match self {
            Dim::N(n) => Some(n),
            Dim::B | Dim::Bk(_) => None,
        }
    }

    /// The batch's multiplier, for a dimension that carries the batch.
    fn batch_factor(self) -> Option<usize> {
        match self {
            Dim::B => Some(1),
            Dim::Bk(k) => Some(k),
            Dim::N(_) => None,
        }
    }

    fn batch_times(k: usize) -> Dim {
        if k == 1 { Dim::B } else { Dim::Bk(k) }
    }
}

fn dim_text(d: &Dim) -> String {
    match d {
        Dim::B => "B".to_string(),
        Dim::Bk(k) => format!("B * {k}"),
        Dim::N(n) => n.to_string(),
    }
}

fn shape_text(s: &[Dim]) -> String {
    let dims: Vec<String> = s.iter().map(dim_text).collect();
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
    /// Outputs of `Identity` nodes over initializers: the initializer they name (PyTorch writes
    /// one per tied or deduplicated weight).
    aliases: HashMap<String, String>,
    /// Values of `Constant` nodes, read as initializers are.
    consts: HashMap<String, Tensor>,
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
        aliases: HashMap::new(),
        consts: g
            .nodes
            .iter()
            .filter(|n| n.op == "Constant")
            .filter_map(|n| match (n.outputs.first(), n.attrs.get("value")) {
                (Some(o), Some(super::read::Attr::Tensor(t))) => Some((o.clone(), t.clone())),
                _ => None,
            })
            .collect(),
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
        match self.init(name) {
            Some(t) if t.len() == 1 => {
                Ok(Val { expr: float(t.f32s()[0]), shape: Vec::new(), atomic: true, pooled: false })
            }
            Some(_) => Err(format!("`{name}` is a constant tensor where a computed value is expected")),
            None => Err(format!("`{name}` is not computed (an earlier node was not imported)")),
        }
    }

    fn init(&self, name: &str) -> Option<&Tensor> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.g.initializers.get(name).or_else(|| self.consts.get(name))
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
                    | "Exp"
                    | "Sqrt"
                    | "Gelu"
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
    "LayerNormalization",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Sqrt",
    "Gelu",
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
    "Transpose",
    "ReduceMean",
    "ReduceSum",
    "Slice",
    "Split",
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
