//! The IR verifier: checks that a graph is well formed.
//!
//! Rules: run after lowering and, in debug builds or with `--verify-each`, after every pass.
//! A failure is an internal compiler error (a bug in a pass), reported with the node and the
//! printed graph, never a user diagnostic.
//!
//! Checked: arguments exist and precede their node; arity; input and parameter nodes agree with
//! the graph's tables; every node's type is what [`super::Op::infer`] gives for its arguments;
//! outputs exist.

use std::fmt;

use super::dim::Dim;
use super::graph::{Graph, NodeId};
use super::op::Op;
use super::types::TensorType;

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    pub node: Option<NodeId>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "%{}: {}", n.index(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

fn err(node: Option<NodeId>, message: impl Into<String>) -> Result<(), VerifyError> {
    Err(VerifyError { node, message: message.into() })
}

pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    for (id, node) in g.nodes.iter() {
        for a in &node.args {
            if a.index() >= id.index() {
                return err(Some(id), format!("argument %{} does not precede the node", a.index()));
            }
        }
        match &node.op {
            Op::Input { index } => match g.inputs.get(*index) {
                Some((_, n)) if *n == id => {}
                _ => {
                    return err(Some(id), format!("input {index} is not this node in the input table"));
                }
            },
            Op::Param { index } => {
                let Some(p) = g.params.get(*index) else {
                    return err(Some(id), format!("parameter {index} does not exist"));
                };
                let ty = TensorType::new(p.dtype, p.shape.iter().map(|&d| Dim::known(d as i64)).collect());
                if ty != node.ty {
                    return err(Some(id), format!("parameter `{}` is {ty}, the node says {}", p.name, node.ty));
                }
            }
            _ => {
                let args: Vec<&TensorType> = node.args.iter().map(|a| &g.nodes[*a].ty).collect();
                match node.op.infer(&args) {
                    Ok(ty) if ty == node.ty => {}
                    Ok(ty) => {
                        return err(Some(id), format!("{} gives {ty}, the node says {}", node.op.name(), node.ty));
                    }
                    Err(e) => return err(Some(id), format!("{}: {e}", node.op.name())),
                }
            }
        }
        if !node.args.is_empty() && matches!(node.op, Op::Input { .. } | Op::Param { .. } | Op::Const { .. }) {
            return err(Some(id), "a leaf node has arguments");
        }
    }
    for (i, (name, n)) in g.inputs.iter().enumerate() {
        match g.nodes.get(*n).map(|node| &node.op) {
            Some(Op::Input { index }) if *index == i => {}
            _ => {
                return err(Some(*n), format!("input `{name}` does not point at its input node"));
            }
        }
    }
    if g.outputs.is_empty() {
        return err(None, "the graph has no output");
    }
    for o in &g.outputs {
        if o.index() >= g.nodes.len() {
            return err(None, format!("output %{} does not exist", o.index()));
        }
    }
    Ok(())
}
