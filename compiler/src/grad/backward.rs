//! The gradient pass: a forward graph to its backward graph.
//!
//! Rules:
//! - A node needs a gradient when it is a trained parameter (a `weight` or `param`, never a
//!   `buffer`) or one of its arguments needs one. Each such node (except parameters) gets one
//!   [`Vjp`] step; steps run in reverse node order, so a node's gradient is complete (summed
//!   over all its uses) before its own step reads it.
//! - Only arguments that need a gradient receive one (`wrt`).

use std::fmt;

use triton_runtime::DType;

use crate::ir::{Graph, NodeId, Op};

/// One step of the backward graph: the vector-Jacobian product of a forward node, sending
/// its output's gradient to the arguments listed in `wrt` (positions in the node's args).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vjp {
    pub node: NodeId,
    pub wrt: Vec<usize>,
}

/// The backward graph of a forward graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backward {
    /// In the order they run (reverse topological order of the forward graph).
    pub steps: Vec<Vjp>,
    /// Whether each node needs a gradient.
    pub needs: Vec<bool>,
    /// Per parameter: whether it is trained.
    pub trained: Vec<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GradError {
    #[error("the model has no trainable parameter (a `weight` or `param`)")]
    NothingToTrain,
    #[error("`{op}` cannot be trained: it is made by the optimizer; train the unoptimized graph")]
    Unsupported { op: String },
    #[error("the model must have one output, the logits [batch, classes]; it has {0}")]
    Outputs(usize),
    #[error(transparent)]
    Internal(#[from] crate::invariant::Broken),
}

/// Builds the backward graph of `g` for a loss on its outputs.
pub fn differentiate(g: &Graph) -> Result<Backward, GradError> {
    let trained: Vec<bool> =
        g.params.iter().map(|p| p.kind.trained() && matches!(p.dtype, DType::F32 | DType::Trit | DType::I8)).collect();
    if !trained.iter().any(|t| *t) {
        return Err(GradError::NothingToTrain);
    }
    if g.outputs.len() != 1 {
        return Err(GradError::Outputs(g.outputs.len()));
    }
    let mut needs = vec![false; g.nodes.len()];
    for (id, n) in g.nodes.iter() {
        needs[id.index()] = match n.op {
            Op::Param { index } => trained[index],
            Op::Input { .. } | Op::Const { .. } => false,
            Op::Fused(_) => return Err(GradError::Unsupported { op: "fused".into() }),
            _ => n.args.iter().any(|a| needs[a.index()]),
        };
    }
    let mut steps = Vec::new();
    for (id, n) in g.nodes.iter().rev() {
        if !needs[id.index()] || n.args.is_empty() {
            continue;
        }
        let wrt: Vec<usize> = (0..n.args.len()).filter(|&i| needs[n.args[i].index()]).collect();
        steps.push(Vjp { node: id, wrt });
    }
    Ok(Backward { steps, needs, trained })
}

impl fmt::Display for Backward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            let wrt: Vec<String> = s.wrt.iter().map(usize::to_string).collect();
            writeln!(f, "d%{} -> args [{}]", s.node.index(), wrt.join(", "))?;
        }
        Ok(())
    }
}
