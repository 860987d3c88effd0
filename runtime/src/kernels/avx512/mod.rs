//! AVX-512 microkernels (x86-64 with AVX512-F/BW/VL and VNNI): the tq2 matrix product on
//! `vpdpbusd`, the convolution product over int8 weight panels ([`conv`]) and over f32 weight
//! panels ([`fconv`]), the depthwise convolution ([`depthwise`]); gathers and pooling run the
//! AVX2 code at this level (see `kernels::conv`).

pub(crate) mod conv;
pub(crate) mod depthwise;
pub(crate) mod fconv;
pub(crate) mod tq2;

use std::arch::x86_64::*;

use crate::ops::UnaryOp;

/// The shared tail of the products' epilogues on 16 channels `ch .. ch + 16` of one output
/// row (lanes outside `m` untouched): `y * scale`, `+ bias`, `+ residual` (the row's, when
/// not null), activation, then a masked store at `out + ch`. Each step rounds in f32, no
/// fused multiply-add: the portable epilogue's bits.
///
/// # Safety
/// The CPU has AVX512-F; the lanes of `m` are valid channels of `scale`, `bias`, the residual
/// row and the output row.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tail16(
    mut y: __m512,
    m: __mmask16,
    ch: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: *const f32,
    act: Option<UnaryOp>,
    out: *mut f32,
) {
    // SAFETY: masked loads and stores touch only the lanes of `m` (caller).
    unsafe {
        let load = |v: &[f32]| _mm512_maskz_loadu_ps(m, v.as_ptr().add(ch));
        if let Some(s) = scale {
            y = _mm512_mul_ps(y, load(s));
        }
        if let Some(b) = bias {
            y = _mm512_add_ps(y, load(b));
        }
        if !residual.is_null() {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, residual.add(ch)));
        }
        y = match act {
            None => y,
            Some(op @ (UnaryOp::Relu | UnaryOp::Relu6)) => {
                let zero = _mm512_setzero_ps();
                let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, zero), y, zero);
                if op == UnaryOp::Relu6 {
                    let six = _mm512_set1_ps(6.0);
                    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, six), y, six)
                } else {
                    y
                }
            }
            Some(op) => {
                let mut v = [0.0f32; 16];
                _mm512_storeu_ps(v.as_mut_ptr(), y);
                v.iter_mut().for_each(|t| *t = op.apply(*t));
                _mm512_loadu_ps(v.as_ptr())
            }
        };
        _mm512_mask_storeu_ps(out.add(ch), m, y);
    }
}
