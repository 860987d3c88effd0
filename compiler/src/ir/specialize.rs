//! Specialisation: a graph with some symbolic dimensions bound to sizes (`H = 64`).
//!
//! Rules:
//! - Inputs' types and reshape targets have the symbols replaced; every other node's type is
//!   inferred again from its arguments, so a size that the model cannot take (a convolution
//!   kernel larger than the bound input) is an error naming the node, never a bad graph.
//! - Only symbols the model's inputs mention can be bound; the batch `B` may be bound too, but
//!   callers keep it free (the runtime takes any batch).
//! - A size must be at least 1.

use std::collections::BTreeMap;
use std::fmt;

use super::dim::Dim;
use super::graph::Graph;
use super::op::Op;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecializeError {
    /// A binding names a symbol the model's inputs do not have.
    Unknown { name: String, known: Vec<String> },
    /// A size below 1.
    Size { name: String, value: i64 },
    /// The bound sizes do not fit a node (its op's message).
    Node { node: usize, op: &'static str, message: String },
}

impl fmt::Display for SpecializeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecializeError::Unknown { name, known } if known.is_empty() => {
                write!(f, "the model has no symbolic dimension `{name}`: its inputs' sizes are all fixed")
            }
            SpecializeError::Unknown { name, known } => {
                write!(f, "the model has no symbolic dimension `{name}`; its inputs have: {}", known.join(", "))
            }
            SpecializeError::Size { name, value } => write!(f, "`{name}` = {value}: a size must be at least 1"),
            SpecializeError::Node { node, op, message } => write!(f, "%{node} ({op}): {message}"),
        }
    }
}

impl std::error::Error for SpecializeError {}

/// The symbols the model's inputs mention, in order of first appearance.
pub fn input_symbols(g: &Graph) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, id) in &g.inputs {
        for d in &g.nodes[*id].ty.shape {
            for s in d.symbols() {
                if !out.iter().any(|o| **o == *s) {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}

/// `g` with the symbols of `sizes` bound.
pub fn specialize(g: &Graph, sizes: &BTreeMap<String, i64>) -> Result<Graph, SpecializeError> {
    let known = input_symbols(g);
    for (name, &value) in sizes {
        if !known.contains(name) {
            return Err(SpecializeError::Unknown { name: name.clone(), known });
        }
        if value < 1 {
            return Err(SpecializeError::Size { name: name.clone(), value });
        }
    }
    let lookup = |s: &str| sizes.get(s).map(|&v| Dim::known(v));
    let mut out = g.clone();
    let ids: Vec<_> = out.nodes.iter().map(|(id, _)| id).collect();
    for id in ids {
        let node = &out.nodes[id];
        let fail = |message: String| SpecializeError::Node { node: id.index(), op: node.op.name(), message };
        let sub = |d: &Dim| d.substitute(&lookup).map_err(|e| fail(format!("{e:?} binding sizes")));
        let ty = match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } => {
                let mut ty = node.ty.clone();
                ty.shape = ty.shape.iter().map(sub).collect::<Result<_, _>>()?;
                ty
            }
            _ => {
                let op = match &node.op {
                    Op::Reshape { shape } => Op::Reshape { shape: shape.iter().map(sub).collect::<Result<_, _>>()? },
                    other => other.clone(),
                };
                let args: Vec<_> = node.args.iter().map(|a| &out.nodes[*a].ty).collect();
                let ty = op.infer(&args).map_err(|e| fail(e.to_string()))?;
                out.nodes[id].op = op;
                ty
            }
        };
        if let Some(bad) = ty.shape.iter().find(|d| d.as_known().is_some_and(|v| v < 1)) {
            let node = &out.nodes[id];
            return Err(SpecializeError::Node {
                node: id.index(),
                op: node.op.name(),
                message: format!("a dimension of size {bad}"),
            });
        }
        out.nodes[id].ty = ty;
    }
    Ok(out)
}
