//! Int8 activations (-O3): a ternary matmul or convolution that reads f32 activations gets them
//! quantized to int8 first, per sample with absmax scaling (BitNet b1.58's W1.58A8), so its
//! product is an integer one the backend runs on int8 kernels (`vpmaddubsw`).
//!
//! Rules:
//! - This is the one pass that changes the ternary model's values on purpose: by rounding each
//!   activation to one of 255 levels of its sample's absmax (docs/ir.md, "-O3", states the
//!   tolerance). At f32 precision `quantize_i8` is the identity, so nothing changes there.
//! - "Where the model allows it": only products with a trit weight and f32 activations are
//!   rewritten. f32-weight layers (first and last layers kept in full precision) and layers the
//!   model already quantizes are left alone; a model opts out as a whole with
//!   `Options::int8_activations = false` (`--f32-activations` on the command line).
//! - `x . w` becomes `dequantize(quantize_i8(x) . w)`; a fused op only has its input swapped,
//!   since its epilogue already dequantizes an integer product. Several products of one `x`
//!   each get a quantization; CSE merges them.

use triton_runtime::DType;

use crate::ir::{Graph, Op, TensorType};

pub fn run(g: &Graph) -> Result<Graph, crate::invariant::Broken> {
    g.rebuild(|rb, id, node| {
        let fused = matches!(node.op, Op::Fused(_));
        if !matches!(node.op, Op::Matmul | Op::Conv2d(_) | Op::Fused(_)) {
            return rb.copy(id, node);
        }
        let (x, w) = (rb.old.node(node.args[0]), rb.old.node(node.args[1]));
        if x.ty.dtype != DType::F32 || w.ty.dtype != DType::Trit {
            return rb.copy(id, node);
        }
        let span = rb.old.spans.get(id).copied();
        let qty = TensorType::new(DType::I8, x.ty.shape.clone());
        let q = rb.emit(Op::QuantizeI8 { scale: None }, vec![rb.get(node.args[0])], qty, span);
        let mut args: Vec<_> = node.args.iter().map(|a| rb.get(*a)).collect();
        args[0] = q;
        if fused {
            return Some(rb.emit(node.op.clone(), args, node.ty.clone(), span));
        }
        let pty = TensorType::new(DType::I32, node.ty.shape.clone());
        let product = rb.emit(node.op.clone(), args, pty, span);
        Some(rb.emit(Op::Dequantize, vec![product], node.ty.clone(), span))
    })
}
