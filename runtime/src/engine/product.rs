//! What the product steps share (matrix products in `gemm`, convolutions in `conv`): the
//! arguments of an int8 kernel call and the f32 epilogue after a product. Both import it; it
//! imports neither, so the arrows between the steps run one way (`gemm` -> `conv`).

use super::value::QTensor;
use crate::kernel::GemmArgs;
use crate::ops::UnaryOp;

/// A product's per-channel epilogue scale and bias.
pub(crate) type ScaleBias<'a> = (Option<&'a [f32]>, Option<&'a [f32]>);

/// The kernel arguments of a product over all rows of `q` (tiles `0..tiles`), with the
/// epilogue vectors that are present.
pub(crate) fn int8_args(
    q: &QTensor,
    packed: &[u8],
    alpha: &[f32],
    (scale, bias): ScaleBias<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
    tiles: usize,
) -> GemmArgs {
    GemmArgs {
        x: q.data.as_ptr(),
        w: packed.as_ptr(),
        alpha: alpha.as_ptr(),
        scale: scale.map_or(std::ptr::null(), |s| s.as_ptr()),
        bias: bias.map_or(std::ptr::null(), |s| s.as_ptr()),
        residual: residual.map_or(std::ptr::null(), |s| s.as_ptr()),
        out: out.as_mut_ptr(),
        xsum: q.row_sum.as_ptr(),
        sx: q.row_scale.as_ptr(),
        rows: q.rows() as u64,
        tile_begin: 0,
        tile_end: tiles as u64,
    }
}

/// The epilogue after the product's own scaling, in the interpreter's order.
pub(crate) fn finish(
    out: &mut [f32],
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    act: Option<UnaryOp>,
) {
    crate::kernels::ChannelEpilogue { mult: None, scale, bias, act }.apply_rows(out, n, residual);
}
