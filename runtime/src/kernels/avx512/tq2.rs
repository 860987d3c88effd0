//! AVX512-VNNI tiles of the tq2 matrix-product kernel (`kernels::tq2`): `vpdpbusd` on 256-bit
//! vectors (AVX512-VL) straight into 32-bit sums; decode, loads and epilogue are the AVX2 ones.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::kernel::GemmArgs;
use crate::kernels::avx2::tq2::{activations, decode, finish, tile_row};
use crate::kernels::contract::tq2::{ROWS, walk};
use crate::ops::UnaryOp;

/// The tq2 product on `vpdpbusd`: 8 rows per decode; the rows left run on the AVX2 tile (one row
/// alone would chain every `vpdpbusd` on one register: MNIST MLP batch 1 12 us vs 5.5 us).
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
pub(crate) unsafe fn gemm(a: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
    // SAFETY (both closures): as in `gemm`, on a CPU with AVX512-VNNI and -VL (caller).
    walk(
        a.rows as usize,
        channels,
        |r, ch| unsafe { tile_vnni(a, n, k_pad, r, ch, act) },
        |row, ch| unsafe { tile_row(a, n, k_pad, row, ch, act) },
    );
}

/// Rows `r .. r + 8` against channel `c`, on `vpdpbusd`.
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
#[inline]
unsafe fn tile_vnni(a: &GemmArgs, n: usize, k_pad: usize, r: usize, c: usize, act: Option<UnaryOp>) {
    let mut acc = [_mm256_setzero_si256(); ROWS];
    for blk in 0..k_pad / 64 {
        // SAFETY: channel c < n, row r + ri < rows, blk < k_pad / 64 (caller).
        let codes = unsafe { decode(a, k_pad, c, blk) };
        for (ri, acc) in acc.iter_mut().enumerate() {
            let x = unsafe { activations(a, k_pad, r + ri, blk) };
            *acc = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(*acc, codes[0], x[0]), codes[1], x[1]);
        }
    }
    // SAFETY: rows r..r + 8 and channel c are inside the caller's buffers.
    unsafe { finish(a, n, r, c, &acc, act) };
}
