//! Constant folding and algebraic identities.
//!
//! Rules:
//! - An elementwise op whose inputs are all scalar constants becomes a constant (computed in
//!   f32, as the interpreter would).
//! - `x * 1`, `1 * x`, `x + 0`, `0 + x`, `x - 0` and `x / 1` become `x`, and `-(-x)` becomes `x`,
//!   but only when the result has exactly `x`'s type (a broadcast that widens is kept).
//! - `relu(relu(x))` is `relu(x)`; `relu6(relu(x))` is `relu6(x)`.
//! - Weights are not constants here: the IR does not hold weight values.

use crate::ir::{BinaryOp, Graph, Node, NodeId, Op, UnaryOp};

fn const_value(g: &Graph, id: NodeId) -> Option<f32> {
    match g.nodes[id].op {
        Op::Const { value } => Some(value),
        _ => None,
    }
}

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    g.rebuild(|rb, id, node: &Node| {
        let args: Vec<NodeId> = node.args.iter().map(|a| rb.get(*a)).collect();
        let new = &*rb.new;
        match &node.op {
            Op::Unary(u) => {
                if let Some(x) = const_value(new, args[0]) {
                    return Some(rb.emit(
                        Op::Const { value: u.apply(x) },
                        Vec::new(),
                        node.ty.clone(),
                        rb.old.spans.get(id).copied(),
                    ));
                }
                let inner = &new.nodes[args[0]];
                match (u, &inner.op) {
                    (UnaryOp::Neg, Op::Unary(UnaryOp::Neg)) => return Some(inner.args[0]),
                    (UnaryOp::Relu, Op::Unary(UnaryOp::Relu)) => return Some(args[0]),
                    (UnaryOp::Relu6, Op::Unary(UnaryOp::Relu)) => {
                        let x = inner.args[0];
                        return Some(rb.emit(
                            Op::Unary(UnaryOp::Relu6),
                            vec![x],
                            node.ty.clone(),
                            rb.old.spans.get(id).copied(),
                        ));
                    }
                    _ => {}
                }
            }
            Op::Binary(b) => {
                let (x, y) = (const_value(new, args[0]), const_value(new, args[1]));
                if let (Some(x), Some(y)) = (x, y) {
                    return Some(rb.emit(
                        Op::Const { value: b.apply(x, y) },
                        Vec::new(),
                        node.ty.clone(),
                        rb.old.spans.get(id).copied(),
                    ));
                }
                let keeps = |i: usize| new.nodes[args[i]].ty == node.ty;
                let identity = match b {
                    BinaryOp::Add => {
                        (y == Some(0.0) && keeps(0)).then_some(0).or((x == Some(0.0) && keeps(1)).then_some(1))
                    }
                    BinaryOp::Sub => (y == Some(0.0) && keeps(0)).then_some(0),
                    BinaryOp::Mul => {
                        (y == Some(1.0) && keeps(0)).then_some(0).or((x == Some(1.0) && keeps(1)).then_some(1))
                    }
                    BinaryOp::Div => (y == Some(1.0) && keeps(0)).then_some(0),
                };
                if let Some(i) = identity {
                    return Some(args[i]);
                }
            }
            _ => {}
        }
        rb.copy(id, node)
    })
}
