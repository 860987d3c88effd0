//! The f32 product of convolutions: rows of f32 activations (gathered pixels, or the input
//! rows themselves for 1x1) times a panel of f32 weights re-laid out once at load, with the
//! epilogue applied per register tile. Kernels: AVX-512 (up to 6 rows x 4 blocks of 16
//! channels in zmm), AVX2 + FMA (6 rows x 1 block in 12 ymm) and portable Rust (the
//! definition of the layout; vectorized by the compiler for the target's baseline).
//!
//! Rules:
//! - The panel ([`F32Panel`]) holds, per group and per run of [`NB`] blocks of 16 output
//!   channels, per reduction index, the run's blocks of 16 floats side by side (one float
//!   per channel): a tile of a whole run reads one sequential stream, which at batch 1 (a few
//!   rows, weights from L3 or memory) is what the prefetchers keep up with. The last run of a
//!   group may be shorter; padding channels are 0, so a kernel may compute them but never
//!   stores them. [`F32Panel::at`] and [`F32Panel::step`] address it.
//! - Per run of blocks, the reduction runs in equal chunks of at most a kernel's `kc` values,
//!   so a tile's weights stay in cache (L1 for AVX2, L2 for AVX-512's wider tiles) while it
//!   walks the rows; runs are the outer loop, so the panel is read front to back. Each
//!   chunk sums in fresh registers and then adds the sum of the chunks before it, which waits
//!   in the output rows (only real channels are read or written): two-level summation, so
//!   the rounding error grows with the chunk length plus the number of chunks, not with `k`.
//!   The last chunk applies the epilogue.
//! - The epilogue is the engine's order (`acc * mult`, scale, bias, residual, activation, each
//!   rounded in f32); the sums are f32 (fused multiply-adds where the ISA has them), so results
//!   differ from the interpreter's f64 sums by rounding only: the f32 path's contract.

use std::ops::Range;

pub(crate) use super::contract::fconv::for_tiles;
pub use super::contract::fconv::{F32Panel, FCall, MR, NB};
use crate::cpu::Isa;

/// Which kernel [`product`] runs at level `isa`, as the plan prints it.
pub fn kernel_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512Vnni | Isa::Amx => "avx512 fma panel",
        Isa::Avx2 => "avx2 fma panel",
        Isa::Generic => "generic panel",
    }
}

/// Computes rows `0..c.rows` and blocks `c.blocks` of group `c.group` of `p` with the kernel of
/// level `isa`.
///
/// # Safety
/// The CPU runs `isa`; `c.x` holds `c.rows` rows of `c.stride >= p.k` floats; `c.out` (and a
/// non-null `c.residual`) `c.rows` rows of `c.n` floats, of which the first `c.og` are this
/// group's; the vectors hold `c.og` values; `c.blocks` is within `0..p.blocks`.
pub unsafe fn product(isa: Isa, p: &F32Panel, c: &FCall<'_>) {
    match isa {
        // SAFETY: forwarded.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Amx => unsafe { super::avx512::fconv::product(p, c) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { super::avx2::fconv::product(p, c) },
        _ => unsafe { product_generic(p, c) },
    }
}

/// Portable kernel: tiles of up to 4 rows x 1 block, sums in f32 without fused multiply-add.
///
/// # Safety
/// As [`product`].
unsafe fn product_generic(p: &F32Panel, c: &FCall<'_>) {
    for_tiles(p, c, (4, 1, 512), |r, mr, b, _, ks| {
        // SAFETY: forwarded from `product`: the tile is inside the call's rows and blocks.
        unsafe {
            match mr {
                1 => tile_generic::<1>(p, c, r, b, ks),
                2 => tile_generic::<2>(p, c, r, b, ks),
                3 => tile_generic::<3>(p, c, r, b, ks),
                _ => tile_generic::<4>(p, c, r, b, ks),
            }
        }
    });
}

#[inline(always)]
unsafe fn tile_generic<const R: usize>(p: &F32Panel, c: &FCall<'_>, r0: usize, b: usize, ks: Range<usize>) {
    let n = c.lanes(b);
    let ch = b * 16;
    let mut acc = [[0.0f32; 16]; R];
    // SAFETY (every access below): rows r0 .. r0 + R and block b are inside the call
    // (caller); only the block's `n` real channels of an output row are read or written.
    unsafe {
        let (w, step) = (&p.data()[p.at(c.group, b, 0)..], p.step(b));
        for kk in ks.clone() {
            let wk = &w[kk * step..kk * step + 16];
            for (ri, a) in acc.iter_mut().enumerate() {
                let x = *c.x.add((r0 + ri) * c.stride + kk);
                a.iter_mut().zip(wk).for_each(|(a, w)| *a += x * w);
            }
        }
        if ks.start > 0 {
            for (ri, a) in acc.iter_mut().enumerate() {
                let before = std::slice::from_raw_parts(c.out.add((r0 + ri) * c.n + ch), n);
                a.iter_mut().zip(before).for_each(|(a, b)| *a += b);
            }
        }
        for (ri, a) in acc.iter().enumerate() {
            std::ptr::copy_nonoverlapping(a.as_ptr(), c.out.add((r0 + ri) * c.n + ch), n);
            if ks.end == p.k {
                c.finish(r0 + ri, ch, n);
            }
        }
    }
}
