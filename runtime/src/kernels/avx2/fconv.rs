//! The AVX2 + FMA f32 convolution product (see `kernels::fconv` for the panel and the
//! rules): tiles of up to 6 rows x 1 block of 16 channels, 12 ymm accumulators, one
//! broadcast per row and two weight loads per reduction index.

use std::arch::x86_64::*;
use std::ops::Range;

use crate::kernels::contract::fconv::{F32Panel, FCall, for_tiles};

/// Reduction values per chunk: a block's strip of weights is 32 KB (about L1; chunks from 256
/// to 1024 measured alike on Zen 3, within this machine's noise).
const KC: usize = 512;

/// Computes rows `0..c.rows` and blocks `c.blocks` of group `c.group` of `p`.
///
/// # Safety
/// The CPU has AVX2 and FMA; otherwise as `kernels::fconv::product`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn product(p: &F32Panel, c: &FCall<'_>) {
    for_tiles(p, c, (6, 1, KC), |r, mr, b, _, ks| {
        // SAFETY: forwarded; the tile is inside the call's rows and blocks.
        unsafe {
            match mr {
                1 => tile::<1>(p, c, r, b, ks),
                2 => tile::<2>(p, c, r, b, ks),
                3 => tile::<3>(p, c, r, b, ks),
                4 => tile::<4>(p, c, r, b, ks),
                5 => tile::<5>(p, c, r, b, ks),
                _ => tile::<6>(p, c, r, b, ks),
            }
        }
    });
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<const R: usize>(p: &F32Panel, c: &FCall<'_>, r0: usize, b: usize, ks: Range<usize>) {
    let n = c.lanes(b);
    let ch = b * 16;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY (every access below): rows r0 .. r0 + R and block b are inside the call
    // (caller); of an output row only the block's `n` real channels are read or written (a
    // partial block goes through a stack copy).
    unsafe {
        let (w, step) = (p.data().as_ptr().add(p.at(c.group, b, 0)), p.step(b));
        // One pointer per row, so each broadcast is a base + index load.
        let xs: [_; R] = crate::kernels::row_ptrs(c.x, r0, c.stride);
        for kk in ks.clone() {
            let w0 = _mm256_loadu_ps(w.add(kk * step));
            let w1 = _mm256_loadu_ps(w.add(kk * step + 8));
            for (a, x) in acc.iter_mut().zip(&xs) {
                let xv = _mm256_broadcast_ss(&*x.add(kk));
                a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
            }
        }
        if ks.start > 0 {
            for (ri, a) in acc.iter_mut().enumerate() {
                let at = c.out.add((r0 + ri) * c.n + ch);
                let before = if n == 16 {
                    [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]
                } else {
                    let mut t = [0.0f32; 16];
                    std::ptr::copy_nonoverlapping(at, t.as_mut_ptr(), n);
                    [_mm256_loadu_ps(t.as_ptr()), _mm256_loadu_ps(t.as_ptr().add(8))]
                };
                a[0] = _mm256_add_ps(a[0], before[0]);
                a[1] = _mm256_add_ps(a[1], before[1]);
            }
        }
        for (ri, a) in acc.iter().enumerate() {
            let at = c.out.add((r0 + ri) * c.n + ch);
            if n == 16 {
                _mm256_storeu_ps(at, a[0]);
                _mm256_storeu_ps(at.add(8), a[1]);
            } else {
                let mut t = [0.0f32; 16];
                _mm256_storeu_ps(t.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), a[1]);
                std::ptr::copy_nonoverlapping(t.as_ptr(), at, n);
            }
            if ks.end == p.k {
                c.finish(r0 + ri, ch, n);
            }
        }
    }
}
