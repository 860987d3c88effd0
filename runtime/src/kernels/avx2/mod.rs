//! AVX2 + FMA microkernels (x86-64): 256-bit integer and float vectors.

pub(crate) mod fconv;
pub(crate) mod tq2;

use std::arch::x86_64::*;

use crate::ops::UnaryOp;

/// An activation on 8 lanes with the semantics of [`UnaryOp::apply`] (relu and relu6 in
/// vector instructions, NaN propagated; the others lane by lane).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn act8(y: __m256, act: Option<UnaryOp>) -> __m256 {
    match act {
        None => y,
        Some(op @ (UnaryOp::Relu | UnaryOp::Relu6)) => {
            // `y < 0 ? 0 : y` (ordered compare: NaN stays NaN, -0.0 stays -0.0).
            let y = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(y, _mm256_setzero_ps()), y);
            if op == UnaryOp::Relu6 {
                let six = _mm256_set1_ps(6.0);
                _mm256_blendv_ps(y, six, _mm256_cmp_ps::<_CMP_GT_OQ>(y, six))
            } else {
                y
            }
        }
        Some(op) => {
            let mut lanes = [0.0f32; 8];
            // SAFETY: 8 floats into an array of 8, and back.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), y);
                lanes.iter_mut().for_each(|v| *v = op.apply(*v));
                _mm256_loadu_ps(lanes.as_ptr())
            }
        }
    }
}
