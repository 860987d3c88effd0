//! Fusion: a matmul or convolution absorbs the chain of single-use ops after it into one
//! [`Fused`] op: dequantize (for an integer product), then a per-channel scale, a per-channel
//! bias, a residual add and an activation, each optional, in that order.
//!
//! Rules:
//! - Every absorbed op must be the only consumer of the value before it, and must keep the
//!   tensor's type (no broadcast that widens); per-channel operands must be static (parameter-
//!   only) `[C]` vectors or their `[C, 1, 1]` reshapes.
//! - The fused op is placed where the last absorbed op was, so all its operands already exist.
//! - A matmul or convolution with nothing to absorb is left alone.

use triton_runtime::DType;

use super::bn_fold::channel_vector;
use crate::ir::{BinaryOp, Fused, FusedBase, Graph, NodeId, Op};

struct Chain {
    fused: Fused,
    /// Operands (old ids): x, w, then scale, bias, residual when present.
    operands: Vec<NodeId>,
    /// Absorbed old nodes, the base first; the last one is replaced by the fused op.
    nodes: Vec<NodeId>,
}

fn chain(g: &Graph, base: NodeId, consumers: &[Vec<NodeId>], is_output: &[bool], statics: &[bool]) -> Option<Chain> {
    let node = &g.nodes[base];
    let fbase = match node.op {
        Op::Matmul => FusedBase::Matmul,
        Op::Conv2d(a) => FusedBase::Conv2d(a),
        _ => return None,
    };
    let mut c = Chain {
        fused: Fused { base: fbase, scale: false, bias: false, residual: false, act: None },
        operands: vec![node.args[0], node.args[1]],
        nodes: vec![base],
    };
    let channel_axis = match fbase {
        FusedBase::Matmul => node.ty.rank() - 1,
        FusedBase::Conv2d(_) => 1,
    };
    let channels = node.ty.shape[channel_axis].clone();
    let (mut scale, mut bias) = (None, None);
    let mut residual = None;
    let mut cur = base;
    loop {
        // A value that leaves the graph is needed as it is: the chain ends there.
        if is_output[cur.index()] {
            break;
        }
        let [next] = consumers[cur.index()].as_slice() else { break };
        let next = *next;
        let n = &g.nodes[next];
        let other = |n: &crate::ir::Node| n.args.iter().copied().find(|a| *a != cur);
        let same_type = n.ty.shape == g.nodes[cur].ty.shape;
        if g.nodes[cur].ty.dtype != DType::F32 {
            // An integer product must be dequantized first.
            if n.op == Op::Dequantize && c.nodes.len() == 1 {
                c.nodes.push(next);
                cur = next;
                continue;
            }
            break;
        }
        let steps_after = |f: &Fused, step: u8| match step {
            0 => !f.scale && !f.bias && !f.residual && f.act.is_none(),
            1 => !f.bias && !f.residual && f.act.is_none(),
            _ => !f.residual && f.act.is_none(),
        };
        match &n.op {
            Op::Binary(b @ (BinaryOp::Mul | BinaryOp::Add))
                if same_type && n.args.len() == 2 && n.args[0] != n.args[1] =>
            {
                let Some(o) = other(n) else { break };
                let vector = if statics[o.index()] { channel_vector(g, o, &channels) } else { None };
                match (b, vector) {
                    (BinaryOp::Mul, Some(v)) if steps_after(&c.fused, 0) => {
                        c.fused.scale = true;
                        scale = Some(v);
                    }
                    (BinaryOp::Add, Some(v)) if steps_after(&c.fused, 1) => {
                        c.fused.bias = true;
                        bias = Some(v);
                    }
                    (BinaryOp::Add, None) if steps_after(&c.fused, 2) && g.nodes[o].ty == n.ty => {
                        c.fused.residual = true;
                        residual = Some(o);
                    }
                    _ => break,
                }
            }
            Op::Unary(u) if u.is_activation() && c.fused.act.is_none() => {
                c.fused.act = Some(*u);
                c.nodes.push(next);
                break;
            }
            _ => break,
        }
        c.nodes.push(next);
        cur = next;
    }
    c.operands.extend(scale);
    c.operands.extend(bias);
    c.operands.extend(residual);
    let absorbed_epilogue = c.fused.scale || c.fused.bias || c.fused.residual || c.fused.act.is_some();
    absorbed_epilogue.then_some(c)
}

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    let statics = g.static_mask();
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); g.nodes.len()];
    for (id, n) in g.nodes.iter() {
        for a in &n.args {
            consumers[a.index()].push(id);
        }
    }
    let mut is_output = vec![false; g.nodes.len()];
    for o in &g.outputs {
        is_output[o.index()] = true;
    }
    // Decide every chain first (on the old graph), then rebuild.
    let mut role: Vec<Option<(usize, bool)>> = vec![None; g.nodes.len()]; // (chain index, is last)
    let mut chains = Vec::new();
    for (id, _) in g.nodes.iter() {
        if role[id.index()].is_some() {
            continue;
        }
        if let Some(c) = chain(g, id, &consumers, &is_output, &statics) {
            if c.nodes.iter().any(|n| role[n.index()].is_some()) {
                continue;
            }
            let last = *c.nodes.last().unwrap_or(&id);
            for n in &c.nodes {
                role[n.index()] = Some((chains.len(), *n == last));
            }
            chains.push(c);
        }
    }
    g.rebuild(|rb, id, node| match role[id.index()] {
        None => rb.copy(id, node),
        Some((_, false)) => None,
        Some((ci, true)) => {
            let c = &chains[ci];
            let args = c.operands.iter().map(|o| rb.get(*o)).collect();
            Some(rb.emit(Op::Fused(c.fused), args, node.ty.clone(), rb.old.spans.get(id).copied()))
        }
    })
}
