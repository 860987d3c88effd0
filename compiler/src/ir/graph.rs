//! The graph IR: a model as a DAG of typed tensor ops.
//!
//! Rules:
//! - Every node produces one tensor; a node's id is the id of its value (SSA). Nodes live in an
//!   arena in topological order: a node's arguments always come before it.
//! - Model inputs are `Input` nodes, parameters are `Param` nodes referring to the parameter
//!   table by index (with the dotted names weights files use), scalars are `Const` nodes.
//! - Source spans are a side table. Passes build a new graph rather than editing in place
//!   ([`Graph::rebuild`]), so ids stay dense and ordered.
//! - Only the verifier decides whether a graph is well formed; a malformed graph is a compiler
//!   bug, never a user error.

use triton_runtime::DType;

use super::entity::{Arena, Id, SecondaryMap};
use super::op::Op;
use super::types::TensorType;
use crate::invariant::{Broken, Invariant};
use crate::source::Span;

/// Ternary quantization rule of a trit weight, or the rule of an i8 weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantRule {
    /// BitNet b1.58: gamma = mean|W| per output channel, w = round(clip(W / gamma, -1, 1)).
    Absmean,
    /// BitNet b1.58 as the 2B4T model ships: one gamma = mean|W| over the whole tensor,
    /// w = round(clip(W / gamma, -1, 1)) (every channel's scale is that gamma).
    AbsmeanTensor,
    /// Ternary weight networks: delta = 0.7 mean|W|, alpha = mean of |W| above delta.
    Twn,
    /// Int8 weights: scale = max|W| / 127 per output channel, w = round(W / scale).
    Absmax,
}

impl QuantRule {
    pub fn name(self) -> &'static str {
        match self {
            QuantRule::Absmean => "absmean",
            QuantRule::AbsmeanTensor => "absmean_tensor",
            QuantRule::Twn => "twn",
            QuantRule::Absmax => "absmax",
        }
    }
}

/// Deterministic initialisation used when no weights file is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Kaiming-uniform over fan-in (dims after the first), as PyTorch initialises conv/linear.
    Kaiming,
    Zeros,
    Ones,
    Const(f64),
}

/// What a parameter is for (the IR's own copy of the source's `weight` / `param` / `buffer`
/// keywords, so the IR does not depend on the surface syntax).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A large, possibly quantized tensor (the matrix of a linear layer, a conv kernel).
    Weight,
    /// A small trainable tensor (bias, batch-norm affine).
    Param,
    /// Non-trainable state (batch-norm running statistics).
    Buffer,
}

impl ParamKind {
    pub fn keyword(self) -> &'static str {
        match self {
            ParamKind::Weight => "weight",
            ParamKind::Param => "param",
            ParamKind::Buffer => "buffer",
        }
    }

    /// Whether training updates it.
    pub fn trained(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::Param)
    }
}

/// One named parameter of a model: a `weight`, `param` or `buffer` of some instance.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Dotted path, e.g. `layer1.0.conv1.w`: the name used in weights files and the IR.
    pub name: String,
    pub kind: ParamKind,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub quant: Option<QuantRule>,
    pub init: Init,
    pub span: Span,
}

impl ParamInfo {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
    pub ty: TensorType,
}

pub type NodeId = Id<Node>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Arena<Node>,
    /// Model inputs by position: name and node (an `Input` node).
    pub inputs: Vec<(String, NodeId)>,
    /// The parameter table; `Param { index }` nodes refer to it.
    pub params: Vec<ParamInfo>,
    pub outputs: Vec<NodeId>,
    pub spans: SecondaryMap<NodeId, Span>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Appends a node; its arguments must already exist.
    pub fn add(&mut self, op: Op, args: Vec<NodeId>, ty: TensorType) -> NodeId {
        debug_assert!(args.iter().all(|a| a.index() < self.nodes.len()), "arguments must precede the node");
        self.nodes.push(Node { op, args, ty })
    }

    pub fn add_spanned(&mut self, op: Op, args: Vec<NodeId>, ty: TensorType, span: Option<Span>) -> NodeId {
        let id = self.add(op, args, ty);
        if let Some(s) = span {
            self.spans.insert(id, s);
        }
        id
    }

    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> NodeId {
        let id = self.add(Op::Input { index: self.inputs.len() }, Vec::new(), ty);
        self.inputs.push((name.into(), id));
        id
    }

    /// Adds a parameter to the table and its `Param` node.
    pub fn add_param(&mut self, info: ParamInfo) -> NodeId {
        let dims = info.shape.iter().map(|&d| super::Dim::known(d as i64)).collect();
        let ty = TensorType::new(info.dtype, dims);
        let index = self.params.len();
        let span = info.span;
        self.params.push(info);
        self.add_spanned(Op::Param { index }, Vec::new(), ty, Some(span))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// For each node, whether it is static: computed from parameters and constants alone, so
    /// a backend evaluates it once when weights are loaded.
    pub fn static_mask(&self) -> Vec<bool> {
        let mut out = vec![false; self.nodes.len()];
        for (id, n) in self.nodes.iter() {
            out[id.index()] = match n.op {
                Op::Input { .. } => false,
                Op::Param { .. } | Op::Const { .. } => true,
                _ => n.args.iter().all(|a| out[a.index()]),
            };
        }
        out
    }

    /// Nodes that run on every inference: they depend on an input and are not inputs.
    pub fn runtime_nodes(&self) -> usize {
        let statics = self.static_mask();
        self.nodes.iter().filter(|(id, n)| !statics[id.index()] && !matches!(n.op, Op::Input { .. })).count()
    }

    /// Computing nodes that depend on parameters only (evaluated once, at load time).
    pub fn static_compute_nodes(&self) -> usize {
        let statics = self.static_mask();
        self.nodes
            .iter()
            .filter(|(id, n)| statics[id.index()] && !matches!(n.op, Op::Param { .. } | Op::Const { .. }))
            .count()
    }

    /// How many times each node is used (as an argument or an output).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for (_, n) in self.nodes.iter() {
            for a in &n.args {
                uses[a.index()] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.index()] += 1;
        }
        uses
    }

    /// Builds a new graph by visiting every node in order. `f` decides what each old node
    /// becomes in the new graph: usually [`Rebuilder::copy`], or an existing new node (to
    /// replace it), or `None` to drop it. A pass that refers to a dropped node (or to a node
    /// not visited yet) gets [`Broken`] back instead of a graph.
    pub fn rebuild(
        &self,
        mut f: impl FnMut(&mut Rebuilder<'_>, NodeId, &Node) -> Option<NodeId>,
    ) -> Result<Graph, Broken> {
        let mut out = Graph { name: self.name.clone(), params: self.params.clone(), ..Graph::default() };
        let mut map: Vec<Option<NodeId>> = vec![None; self.nodes.len()];
        let dangling = std::cell::Cell::new(false);
        for (id, node) in self.nodes.iter() {
            let mut rb = Rebuilder { old: self, new: &mut out, map: &map, dangling: &dangling };
            map[id.index()] = f(&mut rb, id, node);
        }
        if dangling.get() {
            return Err(Broken("a rebuilt node's arguments precede it and are kept"));
        }
        let get = |id: &NodeId| map[id.index()].invariant("the graph's inputs and outputs are kept");
        out.inputs = self.inputs.iter().map(|(n, id)| Ok((n.clone(), get(id)?))).collect::<Result<_, Broken>>()?;
        out.outputs = self.outputs.iter().map(get).collect::<Result<_, _>>()?;
        Ok(out)
    }
}

/// Context for [`Graph::rebuild`].
#[derive(Debug)]
pub struct Rebuilder<'a> {
    pub old: &'a Graph,
    pub new: &'a mut Graph,
    map: &'a [Option<NodeId>],
    /// Set when [`Rebuilder::get`] was asked for a node that has no new id.
    dangling: &'a std::cell::Cell<bool>,
}

impl Rebuilder<'_> {
    /// The new id of an already visited, kept old node. Asking for any other node is a bug
    /// in the pass: it gets a placeholder id and [`Graph::rebuild`] fails with [`Broken`].
    pub fn get(&self, old: NodeId) -> NodeId {
        self.map.get(old.index()).copied().flatten().unwrap_or_else(|| {
            self.dangling.set(true);
            NodeId::new(0)
        })
    }

    /// Copies an old node with its arguments remapped (and its span).
    pub fn copy(&mut self, id: NodeId, node: &Node) -> Option<NodeId> {
        let args = node.args.iter().map(|a| self.get(*a)).collect();
        Some(self.emit(node.op.clone(), args, node.ty.clone(), self.old.spans.get(id).copied()))
    }

    /// Emits a new node in the new graph.
    pub fn emit(&mut self, op: Op, args: Vec<NodeId>, ty: TensorType, span: Option<Span>) -> NodeId {
        self.new.add_spanned(op, args, ty, span)
    }
}
