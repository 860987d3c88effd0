//! Batch-norm folding: `batch_norm(x, gamma, beta, mean, var)` with parameter statistics
//! becomes the per-channel affine `x * s + t`, with `s = gamma / sqrt(var + eps)` and
//! `t = beta - mean * s` computed from the parameters alone.
//!
//! Rules:
//! - Only when all four statistics are static (computed from parameters and constants, not from
//!   inputs): then `s` and `t` are parameter-only subgraphs that a backend evaluates once at load
//!   time and the fusion pass absorbs the affine into the preceding matmul or convolution.
//! - A per-channel bias added just before the batch norm (a convolution with `bias = true`)
//!   folds in too: `(y + b) * s + t = y * s + (b * s + t)`.

use triton_runtime::DType;

use crate::ir::{BinaryOp, Dim, Graph, NodeId, Op, TensorType, UnaryOp};

/// The `[C]` vector behind a per-channel operand of a tensor with `channels` channels: the
/// operand itself when it is `[C]`, or the input of a `reshape` to `[C, 1, ..., 1]`.
pub fn channel_vector(g: &Graph, id: NodeId, channels: &Dim) -> Option<NodeId> {
    let n = &g.nodes[id];
    if n.ty.dtype != DType::F32 {
        return None;
    }
    if n.ty.shape.len() == 1 && n.ty.shape[0] == *channels {
        return Some(id);
    }
    if let Op::Reshape { shape } = &n.op {
        let src = n.args[0];
        let ones = shape.iter().skip(1).all(|d| d.as_known() == Some(1));
        if shape.first() == Some(channels)
            && ones
            && g.nodes[src].ty.shape.len() == 1
            && g.nodes[src].ty.shape[0] == *channels
        {
            return Some(src);
        }
    }
    None
}

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    let statics = g.static_mask();
    let uses = g.use_counts();
    g.rebuild(|rb, id, node| {
        let Op::BatchNorm { eps } = node.op else { return rb.copy(id, node) };
        if !node.args[1..].iter().all(|a| statics[a.index()]) {
            return rb.copy(id, node);
        }
        let span = rb.old.spans.get(id).copied();
        let x_old = node.args[0];
        let [x, gamma, beta, mean, var] = [0, 1, 2, 3, 4].map(|i| rb.get(node.args[i]));
        let vec_ty = rb.new.nodes[gamma].ty.clone();
        let channels = vec_ty.shape[0].clone();
        let scalar = TensorType::new(DType::F32, Vec::new());
        let eps_c = rb.emit(Op::Const { value: eps }, Vec::new(), scalar, span);
        let ve = rb.emit(Op::Binary(BinaryOp::Add), vec![var, eps_c], vec_ty.clone(), span);
        let sd = rb.emit(Op::Unary(UnaryOp::Sqrt), vec![ve], vec_ty.clone(), span);
        let s = rb.emit(Op::Binary(BinaryOp::Div), vec![gamma, sd], vec_ty.clone(), span);
        let ms = rb.emit(Op::Binary(BinaryOp::Mul), vec![mean, s], vec_ty.clone(), span);
        let mut t = rb.emit(Op::Binary(BinaryOp::Sub), vec![beta, ms], vec_ty.clone(), span);
        // (y + b) * s + t = y * s + (b * s + t) for a static per-channel bias b used only here.
        let mut base = x;
        let xo = &rb.old.nodes[x_old];
        if let (Op::Binary(BinaryOp::Add), 1) = (&xo.op, uses[x_old.index()]) {
            for (y_i, b_i) in [(0, 1), (1, 0)] {
                let (y_old, b_old) = (xo.args[y_i], xo.args[b_i]);
                if !statics[b_old.index()] || rb.old.nodes[y_old].ty != xo.ty {
                    continue;
                }
                let b_new = rb.get(b_old);
                if let Some(bv) = channel_vector(rb.new, b_new, &channels) {
                    let bs = rb.emit(Op::Binary(BinaryOp::Mul), vec![bv, s], vec_ty.clone(), span);
                    t = rb.emit(Op::Binary(BinaryOp::Add), vec![bs, t], vec_ty.clone(), span);
                    base = rb.get(y_old);
                    break;
                }
            }
        }
        let x_ty = node.ty.clone();
        let (s_b, t_b) = if x_ty.rank() == 2 {
            (s, t)
        } else {
            let mut shape = vec![channels.clone()];
            shape.extend(std::iter::repeat_n(Dim::known(1), x_ty.rank() - 2));
            let ty = TensorType::new(DType::F32, shape.clone());
            let s_b = rb.emit(Op::Reshape { shape: shape.clone() }, vec![s], ty.clone(), span);
            let t_b = rb.emit(Op::Reshape { shape }, vec![t], ty, span);
            (s_b, t_b)
        };
        let y = rb.emit(Op::Binary(BinaryOp::Mul), vec![base, s_b], x_ty.clone(), span);
        Some(rb.emit(Op::Binary(BinaryOp::Add), vec![y, t_b], x_ty, span))
    })
}
