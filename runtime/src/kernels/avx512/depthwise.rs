//! The AVX-512 depthwise convolution (channels-last, int8 codes or f32 values): tiles of 8, 4,
//! 2 or 1 output pixels of one output row x 16 channels in zmm sums, each tap's 16 weights
//! loaded once per tile, the epilogue in registers.
//!
//! Rules:
//! - Pixels whose every column tap is inside the image run in tiles without checks (a tap
//!   row outside the image is skipped for the whole output row); the others one at a time,
//!   skipping each tap column outside. The portable kernel is the definition.
//! - Sums run over the taps in `(u, v)` order: int8 codes multiply and add exactly in i32 (so
//!   the result is the portable kernel's, bit for bit), f32 values with fused multiply-adds
//!   (rounding only differs: the f32 path's contract). The epilogue is the portable order
//!   (`acc * mult`, scale, bias, residual, activation, each rounded in f32).

use std::arch::x86_64::*;
use std::ops::Range;

use super::tail16;
use crate::kernels::ChannelEpilogue;
use crate::kernels::contract::conv::{DepthwiseValue, Window};

/// A depthwise element type in 16 lanes.
pub(crate) trait Lanes: DepthwiseValue {
    type V: Copy;
    /// Zero sums.
    unsafe fn zero() -> Self::V;
    /// The lanes of `m` of 16 values at `p` (others zero), widened to the sums' type.
    unsafe fn load(p: *const Self, m: __mmask16) -> Self::V;
    /// `acc + x * w`.
    unsafe fn madd(acc: Self::V, x: Self::V, w: Self::V) -> Self::V;
    /// The sums as f32.
    unsafe fn to_ps(acc: Self::V) -> __m512;
}

impl Lanes for f32 {
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller's target features include AVX512-F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: lanes of `m` are readable (caller).
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512, x: __m512, w: __m512) -> __m512 {
        // SAFETY: AVX512-F (caller).
        unsafe { _mm512_fmadd_ps(x, w, acc) }
    }
    #[inline(always)]
    unsafe fn to_ps(acc: __m512) -> __m512 {
        acc
    }
}

impl Lanes for i8 {
    type V = __m512i;
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: AVX512-F (caller).
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn load(p: *const i8, m: __mmask16) -> __m512i {
        // SAFETY: lanes of `m` are readable (caller); AVX512-BW/VL for the byte mask.
        unsafe { _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)) }
    }
    #[inline(always)]
    unsafe fn madd(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        // SAFETY: AVX512-F (caller). |x * w| <= 128 * 128: exact in i32.
        unsafe { _mm512_add_epi32(acc, _mm512_mullo_epi32(x, w)) }
    }
    #[inline(always)]
    unsafe fn to_ps(acc: __m512i) -> __m512 {
        // SAFETY: AVX512-F (caller); the portable kernel's `acc as f32`, round to nearest.
        unsafe { _mm512_cvtepi32_ps(acc) }
    }
}

/// Output pixels `pixels` of one sample: as `kernels::conv::depthwise`.
///
/// # Safety
/// The CPU has AVX512-F/BW/VL; otherwise as `kernels::conv::depthwise` (`x` holds the
/// sample's `h * w` pixels of `stride >= c` values, `w` `taps * c` weights, `out` and a
/// residual the pixels' `c` values, the epilogue's vectors `c` values).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn depthwise<T: Lanes>(
    x: &[T],
    stride: usize,
    w: &[T],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    // Output columns whose every tap column is inside: x0 = j * s - pad >= 0 and
    // x0 + (kw - 1) * dil < w.
    let (s, pad, span) = (win.stride[1], win.pad[1], (win.kw - 1) * win.dil[1]);
    let ja = pad.div_ceil(s);
    let jb = if win.w + pad > span { ((win.w + pad - span - 1) / s + 1).min(win.ow) } else { 0 };
    let mut p = pixels.start;
    while p < pixels.end {
        let (i, j) = (p / win.ow, p % win.ow);
        let row0 = p - j;
        let row_end = (row0 + win.ow).min(pixels.end);
        // SAFETY (the calls): pixels of output row i; `CHECKED` tiles test every tap column,
        // the others are interior columns (above).
        unsafe {
            if j < ja || j >= jb {
                tile::<T, 1, true>(x, stride, w, c, win, i, j, p, epi, residual, out);
                p += 1;
                continue;
            }
            let q = (row0 + jb).min(row_end);
            while p < q {
                let j = p - row0;
                let n = match q - p {
                    8.. => 8,
                    4..8 => 4,
                    2..4 => 2,
                    _ => 1,
                };
                match n {
                    8 => tile::<T, 8, false>(x, stride, w, c, win, i, j, p, epi, residual, out),
                    4 => tile::<T, 4, false>(x, stride, w, c, win, i, j, p, epi, residual, out),
                    2 => tile::<T, 2, false>(x, stride, w, c, win, i, j, p, epi, residual, out),
                    _ => tile::<T, 1, false>(x, stride, w, c, win, i, j, p, epi, residual, out),
                }
                p += n;
            }
        }
    }
}

/// Pixels `p0 .. p0 + N` (output row `i`, columns `j0 ..`) x every channel; unless
/// `CHECKED` (one pixel, testing each tap's column), all interior.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<T: Lanes, const N: usize, const CHECKED: bool>(
    x: &[T],
    stride: usize,
    w: &[T],
    c: usize,
    win: &Window,
    i: usize,
    j0: usize,
    p0: usize,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let (s, dil) = (win.stride[1], win.dil[1]);
    let mut c0 = 0;
    while c0 < c {
        let m = super::block_mask(c, c0 / 16);
        // SAFETY (every access below): interior columns (caller) and rows inside the image
        // (`win.row`) address pixels of the sample; the lanes of `m` are channels below `c` of
        // the `x` rows, the weights, the vectors, the residual and the output pixels.
        unsafe {
            let mut acc = [T::zero(); N];
            for u in 0..win.kh {
                let Some(y) = win.row(i, u) else { continue };
                let xrow = x.as_ptr().add(y * win.w * stride + c0);
                for v in 0..win.kw {
                    if CHECKED && win.col(j0, v).is_none() {
                        continue;
                    }
                    let wv = T::load(w.as_ptr().add((u * win.kw + v) * c + c0), m);
                    let x0 = j0 * s + v * dil - win.pad[1];
                    for (px, a) in acc.iter_mut().enumerate() {
                        let xv = T::load(xrow.add((x0 + px * s) * stride), m);
                        *a = T::madd(*a, xv, wv);
                    }
                }
            }
            let acc = std::hint::black_box(acc);
            for (px, a) in acc.iter().enumerate() {
                let p = p0 + px;
                let mut yv = T::to_ps(*a);
                if let Some(mu) = epi.mult {
                    yv = _mm512_mul_ps(yv, _mm512_maskz_loadu_ps(m, mu.as_ptr().add(c0)));
                }
                let res = residual.map_or(std::ptr::null(), |r| r.as_ptr().add(p * c));
                tail16(yv, m, c0, epi.scale, epi.bias, res, epi.act, out.as_mut_ptr().add(p * c));
            }
        }
        c0 += 16;
    }
}
