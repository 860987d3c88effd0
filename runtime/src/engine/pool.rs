//! Pooling steps on channels-last values (`[B, H, W, C]`), one sample at a time on the
//! kernels of [`crate::kernels::pool`].

use ndarray::ArrayD;

use super::arena::Arena;
use super::plan::PoolGeom;
use super::{RunError, internal, shaped};
use crate::cpu::Isa;
use crate::kernels::pool::{self as kernel, PoolDims};

/// Max or average pooling: `[B, H, W, C]` to `[B, OH, OW, C]`.
pub(crate) fn pool(
    si: usize,
    x: &ArrayD<f32>,
    g: &PoolGeom,
    isa: Isa,
    arena: &mut Arena,
) -> Result<ArrayD<f32>, RunError> {
    let &[b, h, w, c] = x.shape() else {
        return Err(internal(si, format!("pooling of a value of shape {:?}", x.shape())));
    };
    let out_size = |size: usize, axis: usize| {
        (size + 2 * g.pad[axis]).checked_sub(g.kernel[axis]).map(|s| s / g.stride[axis].max(1) + 1)
    };
    let (Some(oh), Some(ow)) = (out_size(h, 0), out_size(w, 1)) else {
        return Err(internal(si, format!("pooling window {g:?} larger than the {h}x{w} input")));
    };
    let xs = x.as_slice().ok_or_else(|| internal(si, "pool input not contiguous"))?;
    let mut buf = arena.f32_overwritten(b * oh * ow * c);
    let d = PoolDims { h, w, c, oh, ow };
    if c > 0 {
        for (src, dst) in xs.chunks_exact(h * w * c).zip(buf.chunks_exact_mut(oh * ow * c)) {
            kernel::pool(isa, src, d, g, dst);
        }
    }
    shaped(si, &[b, oh, ow, c], buf)
}

/// Mean over the spatial axes: `[B, H, W, C]` to `[B, C]`, summing pixels in order.
pub(crate) fn global_avg(si: usize, x: &ArrayD<f32>, isa: Isa, arena: &mut Arena) -> Result<ArrayD<f32>, RunError> {
    let &[b, h, w, c] = x.shape() else {
        return Err(internal(si, format!("global pooling of a value of shape {:?}", x.shape())));
    };
    let xs = x.as_slice().ok_or_else(|| internal(si, "pool input not contiguous"))?;
    let mut buf = arena.f32_overwritten(b * c);
    if c > 0 && h * w > 0 {
        for (src, dst) in xs.chunks_exact(h * w * c).zip(buf.chunks_exact_mut(c)) {
            kernel::global_avg(isa, src, c, dst);
        }
    }
    shaped(si, &[b, c], buf)
}
