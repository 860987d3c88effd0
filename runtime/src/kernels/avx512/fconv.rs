//! The AVX-512 f32 convolution product (see `kernels::fconv` for the panel and the rules):
//! tiles of up to [`MR`] rows x [`NB`] blocks of 16 channels in zmm accumulators, 512-bit
//! fused multiply-adds, the epilogue applied in registers with masked stores.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{block_mask, tail16};
use crate::kernels::contract::fconv::{F32Panel, FCall, MR, NB, for_tiles};

/// Reduction values per chunk: a run's chunk of weights (`KC * NB * 64` bytes, 128 KB) stays
/// in L2 while the block's row tiles walk it (128 and 256, in L1, measured no faster).
const KC: usize = 512;

/// Computes rows `0..c.rows` and blocks `c.blocks` of group `c.group` of `p`.
///
/// # Safety
/// The CPU has AVX512-F; otherwise as `kernels::fconv::product`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn product(p: &F32Panel, c: &FCall<'_>) {
    // SAFETY: forwarded; every tile is inside the call's rows and blocks.
    for_tiles(p, c, (MR, NB, KC), |r, mr, b, nb, ks| unsafe { tiles(p, c, r, mr, b, nb, ks) });
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
        if R == MR && B == NB && p.step(b0) == NB * 16 {
            let mut sums = [[_mm512_setzero_ps(); NB]; MR];
            let x = c.x.add(r0 * c.stride + ks.start);
            let w = p.data().as_ptr().add(p.at(c.group, b0, ks.start));
            full_tile(x, c.stride * 4, w, ks.len(), &mut sums);
            // The sums in the generic shape's array (the same type whenever this branch runs).
            let acc: [[__m512; B]; R] = std::mem::transmute_copy(&sums);
            return finish_tile::<R, B>(c, r0, b0, first, last, &masks, acc);
        }
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
    // SAFETY: forwarded.
    unsafe { finish_tile::<R, B>(c, r0, b0, first, last, &masks, std::hint::black_box(acc)) }
}

/// Adds the chunks before (unless `first`) and stores the tile's sums, through the epilogue
/// when `last`.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_tile<const R: usize, const B: usize>(
    c: &FCall<'_>,
    r0: usize,
    b0: usize,
    first: bool,
    last: bool,
    masks: &[__mmask16; B],
    mut acc: [[__m512; B]; R],
) {
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
                tail16(y, masks[j], ch, c.scale, c.bias, res, c.act, c.out.add(at));
            }
        }
    }
}

/// The full 6 x 4 tile's reduction over `kc` values, in assembly (the shape of ONNX Runtime's
/// MLAS kernels: the intrinsics' version spent a third of its time on address arithmetic and
/// a spilled pointer): rows at `x + r * stride_bytes` (two base registers and the stride,
/// `x + 3 * stride` the second), the run's 4 blocks of 16 weights per reduction index one
/// 256-byte line group at `w`, sums from zero into `zmm0 ..= zmm23` (row `r`, block `j` in
/// `zmm(4r + j)`), stored to `sums`.
///
/// # Safety
/// The CPU has AVX512-F; 6 rows of `kc` floats at `x` (`stride_bytes` apart) and `kc * 64`
/// floats at `w` are readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn full_tile(x: *const f32, stride_bytes: usize, w: *const f32, kc: usize, sums: &mut [[__m512; NB]; MR]) {
    // SAFETY: every load is inside the rows and the weights (caller); the stores write `sums`.
    unsafe {
        super::tile_asm!(
            "lea {x3}, [{x} + 2*{s}]",
            "add {x3}, {s}",
            "test {n}, {n}",
            "jz 3f",
            "2:",
            "vbroadcastss zmm26, dword ptr [{x}]",
            "vbroadcastss zmm27, dword ptr [{x} + {s}]",
            "vbroadcastss zmm28, dword ptr [{x} + 2*{s}]",
            "vbroadcastss zmm29, dword ptr [{x3}]",
            "vbroadcastss zmm30, dword ptr [{x3} + {s}]",
            "vbroadcastss zmm31, dword ptr [{x3} + 2*{s}]",
            "vmovups zmm24, zmmword ptr [{w}]",
            "vfmadd231ps zmm0, zmm26, zmm24", "vfmadd231ps zmm4, zmm27, zmm24",
            "vfmadd231ps zmm8, zmm28, zmm24", "vfmadd231ps zmm12, zmm29, zmm24",
            "vfmadd231ps zmm16, zmm30, zmm24", "vfmadd231ps zmm20, zmm31, zmm24",
            "vmovups zmm25, zmmword ptr [{w} + 64]",
            "vfmadd231ps zmm1, zmm26, zmm25", "vfmadd231ps zmm5, zmm27, zmm25",
            "vfmadd231ps zmm9, zmm28, zmm25", "vfmadd231ps zmm13, zmm29, zmm25",
            "vfmadd231ps zmm17, zmm30, zmm25", "vfmadd231ps zmm21, zmm31, zmm25",
            "vmovups zmm24, zmmword ptr [{w} + 128]",
            "vfmadd231ps zmm2, zmm26, zmm24", "vfmadd231ps zmm6, zmm27, zmm24",
            "vfmadd231ps zmm10, zmm28, zmm24", "vfmadd231ps zmm14, zmm29, zmm24",
            "vfmadd231ps zmm18, zmm30, zmm24", "vfmadd231ps zmm22, zmm31, zmm24",
            "vmovups zmm25, zmmword ptr [{w} + 192]",
            "vfmadd231ps zmm3, zmm26, zmm25", "vfmadd231ps zmm7, zmm27, zmm25",
            "vfmadd231ps zmm11, zmm28, zmm25", "vfmadd231ps zmm15, zmm29, zmm25",
            "vfmadd231ps zmm19, zmm30, zmm25", "vfmadd231ps zmm23, zmm31, zmm25",
            "add {x}, 4",
            "add {x3}, 4",
            "add {w}, 256",
            "dec {n}",
            "jnz 2b",
            "3:";
            x = inout(reg) x => _,
            x3 = out(reg) _,
            s = in(reg) stride_bytes,
            w = inout(reg) w => _,
            n = inout(reg) kc => _,
            o = in(reg) sums.as_mut_ptr(),
        );
    }
}
