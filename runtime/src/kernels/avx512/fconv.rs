//! The AVX-512 f32 convolution product (see `kernels::fconv` for the panel and the rules):
//! tiles of up to [`MR`] rows x [`NB`] blocks of 16 channels in zmm accumulators, 512-bit
//! fused multiply-adds, the epilogue applied in registers with masked stores.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{block_mask, tail16};
use crate::kernels::fconv::{F32Panel, FCall, MR, NB, for_tiles};

/// Computes rows `0..c.rows` and blocks `c.blocks` of group `c.group` of `p`.
///
/// # Safety
/// The CPU has AVX512-F; otherwise as `kernels::fconv::product`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn product(p: &F32Panel, c: &FCall<'_>) {
    // SAFETY: forwarded; every tile is inside the call's rows and blocks.
    for_tiles(p, c, (MR, NB, 512), |r, mr, b, nb, ks| unsafe { tiles(p, c, r, mr, b, nb, ks) });
}

/// One tile of `mr x nb`, each shape its own register allocation.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tiles(p: &F32Panel, c: &FCall<'_>, r: usize, mr: usize, b: usize, nb: usize, ks: Range<usize>) {
    macro_rules! pick {
        ($($r:literal),*) => {
            match (mr, nb) {
                $(($r, 1) => tile::<$r, 1>(p, c, r, b, ks),
                  ($r, 2) => tile::<$r, 2>(p, c, r, b, ks),
                  ($r, 3) => tile::<$r, 3>(p, c, r, b, ks),
                  ($r, _) => tile::<$r, 4>(p, c, r, b, ks),)*
                _ => {}
            }
        };
    }
    // SAFETY: forwarded from `product`.
    unsafe { pick!(1, 2, 3, 4, 5, 6) }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const B: usize>(p: &F32Panel, c: &FCall<'_>, r0: usize, b0: usize, ks: Range<usize>) {
    let first = ks.start == 0;
    let last = ks.end == p.k;
    let masks: [__mmask16; B] = std::array::from_fn(|j| block_mask(c.og, b0 + j));
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    // SAFETY (every access below): rows r0 .. r0 + R < rows and blocks b0 .. b0 + B are inside
    // (caller); the masks keep to the group's real channels of each output row.
    unsafe {
        // One pointer per row and per block, so every load in the loop is base + index
        // (array-building closures in the loop made LLVM keep the accumulators on the stack).
        // The tile's blocks are in one run (`for_tiles`), so they share one step. (A step per
        // block cost four more registers and LLVM spilled accumulators.)
        let step = p.step(b0);
        let mut ws = [p.data().as_ptr(); B];
        for (j, wj) in ws.iter_mut().enumerate() {
            *wj = wj.add(p.at(c.group, b0 + j, 0));
        }
        let xs: [_; R] = crate::kernels::row_ptrs(c.x, r0, c.stride);
        for kk in ks {
            let mut wv = [_mm512_setzero_ps(); B];
            for j in 0..B {
                wv[j] = _mm512_loadu_ps(ws[j].add(kk * step));
            }
            for ri in 0..R {
                let xv = _mm512_set1_ps(*xs[ri].add(kk));
                for j in 0..B {
                    acc[ri][j] = _mm512_fmadd_ps(xv, wv[j], acc[ri][j]);
                }
            }
        }
    }
    // The epilogue indexes its own copy: the loop's accumulators then stay in registers
    // (indexed in place, LLVM kept them on the stack and stored each after every FMA).
    let mut acc = std::hint::black_box(acc);
    if !first {
        for (ri, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                let before = unsafe { _mm512_maskz_loadu_ps(masks[j], c.out.add((r0 + ri) * c.n + (b0 + j) * 16)) };
                *a = _mm512_add_ps(*a, before);
            }
        }
    }
    for (ri, row) in acc.iter().enumerate() {
        let at = (r0 + ri) * c.n;
        for (j, a) in row.iter().enumerate() {
            let ch = (b0 + j) * 16;
            unsafe {
                if !last {
                    _mm512_mask_storeu_ps(c.out.add(at + ch), masks[j], *a);
                    continue;
                }
                let y = match c.mult {
                    Some(m) => _mm512_mul_ps(*a, _mm512_maskz_loadu_ps(masks[j], m.as_ptr().add(ch))),
                    None => *a,
                };
                let res = if c.residual.is_null() { std::ptr::null() } else { c.residual.add(at) };
                tail16(y, masks[j], ch, c.scale, c.bias, res, c.act, true, c.out.add(at));
            }
        }
    }
}
