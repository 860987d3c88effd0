//! AVX2 tiles of the tq2 matrix-product kernel (`kernels::tq2`): `vpmaddubsw` into 16-bit
//! sums, 8 rows per decode of a channel's codes; also the helpers the VNNI tiles share.

use std::arch::x86_64::*;

use std::ops::Range;

use crate::kernel::GemmArgs;
use crate::kernels::contract::tq2::{FLUSH_BLOCKS, ROWS, walk};
use crate::ops::UnaryOp;

#[target_feature(enable = "avx2")]
pub(crate) unsafe fn gemm(a: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
    // SAFETY (both closures): rows and channels inside what the caller vouched for, on a CPU
    // with AVX2 (caller).
    walk(
        a.rows as usize,
        channels,
        |r, ch| unsafe { tile::<ROWS>(a, n, k_pad, r, ch, act) },
        |row, ch| unsafe { tile_row(a, n, k_pad, row, ch, act) },
    );
}

/// One row against channel `c` on the AVX2 tile, compiled for AVX2 alone: inlined into the
/// VNNI driver, LLVM's AVX-512 code for it ran 40-50% slower (MLP batch 1 7.9 vs 5.6 us).
#[target_feature(enable = "avx2")]
#[inline(never)]
pub(crate) unsafe fn tile_row(a: &GemmArgs, n: usize, k_pad: usize, row: usize, c: usize, act: Option<UnaryOp>) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::<1>(a, n, k_pad, row, c, act) }
}

/// The codes of block `blk` of channel `c`: weights 0..32 and 32..64, one per byte.
///
/// # Safety
/// Channel `c` and block `blk < k_pad / 64` lie inside the weight.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn decode(a: &GemmArgs, k_pad: usize, c: usize, blk: usize) -> [__m256i; 2] {
    let mask = _mm256_set1_epi8(3);
    // SAFETY: inside the weight (caller).
    let p = unsafe { a.w.add(c * (k_pad / 4) + blk * 16) };
    let w = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    [
        _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), mask),
        _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)), mask),
    ]
}

/// The 64 activations of block `blk` of row `row`, as two vectors.
///
/// # Safety
/// Row `row` and block `blk < k_pad / 64` lie inside the activations.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn activations(a: &GemmArgs, k_pad: usize, row: usize, blk: usize) -> [__m256i; 2] {
    // SAFETY: inside the activations (caller).
    unsafe {
        let p = a.x.add(row * k_pad + blk * 64);
        [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())]
    }
}

/// Runs the epilogue of rows `r .. r + R` (R is 1 or 8) of channel `c` from their sums.
///
/// # Safety
/// Those rows and channel `c` lie inside the caller's buffers.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn finish<const R: usize>(
    a: &GemmArgs,
    n: usize,
    r: usize,
    c: usize,
    acc: &[__m256i; R],
    act: Option<UnaryOp>,
) {
    // SAFETY: channel c < n for every per-channel vector; rows inside (caller).
    unsafe {
        let alpha = *a.alpha.add(c);
        let scale = (!a.scale.is_null()).then(|| *a.scale.add(c));
        let bias = (!a.bias.is_null()).then(|| *a.bias.add(c));
        if R == ROWS {
            epilogue8(a, n, r, c, acc, alpha, scale, bias, act);
        } else {
            for (ri, v) in acc.iter().enumerate() {
                epilogue1(a, n, r + ri, c, *v, alpha, scale, bias, act);
            }
        }
    }
}

/// Rows `r .. r + R` against channel `c`, on `vpmaddubsw`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile<const R: usize>(a: &GemmArgs, n: usize, k_pad: usize, r: usize, c: usize, act: Option<UnaryOp>) {
    let blocks = k_pad / 64;
    let ones = _mm256_set1_epi16(1);
    let mut acc32 = [_mm256_setzero_si256(); R];
    let mut b0 = 0;
    while b0 < blocks {
        let b1 = (b0 + FLUSH_BLOCKS).min(blocks);
        let mut acc16 = [_mm256_setzero_si256(); R];
        for blk in b0..b1 {
            // SAFETY: channel c < n, row r + ri < rows, blk < k_pad / 64 (caller).
            let codes = unsafe { decode(a, k_pad, c, blk) };
            for (ri, acc) in acc16.iter_mut().enumerate() {
                let x = unsafe { activations(a, k_pad, r + ri, blk) };
                let p0 = _mm256_maddubs_epi16(codes[0], x[0]);
                let p1 = _mm256_maddubs_epi16(codes[1], x[1]);
                *acc = _mm256_add_epi16(*acc, _mm256_add_epi16(p0, p1));
            }
        }
        for (a32, a16) in acc32.iter_mut().zip(&acc16) {
            *a32 = _mm256_add_epi32(*a32, _mm256_madd_epi16(*a16, ones));
        }
        b0 = b1;
    }
    // SAFETY: rows r..r + R and channel c are inside the caller's buffers.
    unsafe { finish(a, n, r, c, &acc32, act) };
}

/// The epilogue of one row and channel from its 8 lanes of 32-bit sums; the same operations
/// in the same order as [`epilogue8`].
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue1(
    a: &GemmArgs,
    n: usize,
    row: usize,
    ch: usize,
    v: __m256i,
    alpha: f32,
    scale: Option<f32>,
    bias: Option<f32>,
    act: Option<UnaryOp>,
) {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    // SAFETY: row < rows for xsum, sx, residual and out; ch < n (caller).
    unsafe {
        let acc = _mm_cvtsi128_si32(s) - *a.xsum.add(row);
        let res = (!a.residual.is_null()).then(|| *a.residual.add(row * n + ch));
        *a.out.add(row * n + ch) = crate::kernels::epilogue(acc, *a.sx.add(row) * alpha, scale, bias, res, act);
    }
}

/// The epilogue of 8 rows of one channel, vectorized over the rows: the same operations in
/// the same order as the scalar one (`acc * (sx * alpha)`, scale, bias, residual, act).
#[target_feature(enable = "avx2")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue8(
    a: &GemmArgs,
    n: usize,
    r: usize,
    ch: usize,
    acc: &[__m256i],
    alpha: f32,
    scale: Option<f32>,
    bias: Option<f32>,
    act: Option<UnaryOp>,
) {
    // Horizontal sums of 8 vectors into one: lane i is the sum of acc[i].
    let h01 = _mm256_hadd_epi32(acc[0], acc[1]);
    let h23 = _mm256_hadd_epi32(acc[2], acc[3]);
    let h45 = _mm256_hadd_epi32(acc[4], acc[5]);
    let h67 = _mm256_hadd_epi32(acc[6], acc[7]);
    let lo = _mm256_hadd_epi32(h01, h23);
    let hi = _mm256_hadd_epi32(h45, h67);
    let sums = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
    // SAFETY: rows r..r + 8 of xsum, sx, residual and out, channel ch < n (caller).
    unsafe {
        let xsum = _mm256_loadu_si256(a.xsum.add(r).cast());
        let accf = _mm256_cvtepi32_ps(_mm256_sub_epi32(sums, xsum));
        let s1 = _mm256_mul_ps(_mm256_loadu_ps(a.sx.add(r)), _mm256_set1_ps(alpha));
        let mut y = _mm256_mul_ps(accf, s1);
        if let Some(s) = scale {
            y = _mm256_mul_ps(y, _mm256_set1_ps(s));
        }
        if let Some(b) = bias {
            y = _mm256_add_ps(y, _mm256_set1_ps(b));
        }
        if !a.residual.is_null() {
            let res: [f32; 8] = std::array::from_fn(|i| *a.residual.add((r + i) * n + ch));
            y = _mm256_add_ps(y, _mm256_loadu_ps(res.as_ptr()));
        }
        y = super::act8(y, act);
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), y);
        for (i, v) in out.iter().enumerate() {
            *a.out.add((r + i) * n + ch) = *v;
        }
    }
}
