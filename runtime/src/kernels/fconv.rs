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

use super::ChannelEpilogue;
use super::lines::Lines;
use crate::cpu::Isa;
use crate::ops::UnaryOp;

/// Rows per register tile (every kernel's largest), and the multiple the engine's row blocks
/// are made of.
pub const MR: usize = 6;
/// Blocks of 16 output channels per register tile in the widest kernel: the engine splits
/// channels in multiples of it.
pub const NB: usize = 4;

/// A convolution's f32 weight for these kernels (one per model, all groups).
#[derive(Debug)]
pub struct F32Panel {
    /// Per group, per run of up to [`NB`] blocks, per reduction index: the run's blocks of 16
    /// floats (cache lines).
    data: Lines,
    /// Reduction values per row.
    pub k: usize,
    /// Blocks of 16 channels per group.
    pub blocks: usize,
}

impl F32Panel {
    /// From `w(t, c)`, the weight of reduction index `t` (the gathered rows' order) and output
    /// channel `c` of `groups * og`.
    pub fn new(groups: usize, og: usize, k: usize, w: impl Fn(usize, usize) -> f32) -> F32Panel {
        let blocks = og.div_ceil(16);
        let mut data = Lines::zeroed_f32(groups * blocks * k * 16);
        let mut p = F32Panel { data: Lines::zeroed(0), k, blocks };
        let d = data.f32s_mut();
        for g in 0..groups {
            for c in 0..og {
                let (b, lane) = (c / 16, c % 16);
                let (at, step) = (p.at(g, b, 0), p.step(b));
                for t in 0..k {
                    d[at + t * step + lane] = w(t, g * og + c);
                }
            }
        }
        p.data = data;
        p
    }

    /// Every weight, in the panel's order (cache-line aligned).
    #[inline(always)]
    pub(crate) fn data(&self) -> &[f32] {
        self.data.f32s()
    }

    /// Where the 16 weights of block `b` of group `g` at reduction index `t` start in
    /// [`F32Panel::data`]; the block's next reduction index is [`F32Panel::step`] further.
    #[inline(always)]
    pub(crate) fn at(&self, g: usize, b: usize, t: usize) -> usize {
        let run = b / NB * NB;
        ((g * self.blocks + run) * self.k + t * self.run_len(b) + (b - run)) * 16
    }

    /// Floats from one reduction index of block `b` to the next: its run's width.
    #[inline(always)]
    pub(crate) fn step(&self, b: usize) -> usize {
        self.run_len(b) * 16
    }

    /// Blocks in the run of block `b`.
    #[inline(always)]
    fn run_len(&self, b: usize) -> usize {
        (self.blocks - b / NB * NB).min(NB)
    }

    /// Bytes of weight held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// One call's operands: `rows` rows of f32 activations (`stride` floats apart, at least `k`
/// readable), output rows `n` floats apart (channel `c` of the group written at `out + c`;
/// the residual likewise), the group's per-channel vectors, and which blocks of 16 channels
/// of the group to compute.
#[derive(Debug)]
pub struct FCall<'a> {
    pub x: *const f32,
    pub stride: usize,
    pub rows: usize,
    pub out: *mut f32,
    pub n: usize,
    pub residual: *const f32,
    pub og: usize,
    pub group: usize,
    pub mult: Option<&'a [f32]>,
    pub scale: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
    pub blocks: Range<usize>,
}

impl FCall<'_> {
    /// Real channels of block `b` (16 but for the group's last block).
    #[inline(always)]
    pub(crate) fn lanes(&self, b: usize) -> usize {
        (self.og - b * 16).min(16)
    }

    /// Applies the epilogue in place to channels `ch .. ch + n` of output row `r` (its raw
    /// sums), with that row's residual.
    ///
    /// # Safety
    /// Row `r` of the output (and of a non-null residual) holds channels `ch .. ch + n`.
    #[inline(always)]
    pub(crate) unsafe fn finish(&self, r: usize, ch: usize, n: usize) {
        let epi = ChannelEpilogue {
            mult: self.mult.map(|m| &m[ch..]),
            scale: self.scale.map(|s| &s[ch..]),
            bias: self.bias.map(|b| &b[ch..]),
            act: self.act,
        };
        // SAFETY: forwarded from the caller.
        unsafe {
            let y = std::slice::from_raw_parts_mut(self.out.add(r * self.n + ch), n);
            let res =
                (!self.residual.is_null()).then(|| std::slice::from_raw_parts(self.residual.add(r * self.n + ch), n));
            epi.apply(y, res);
        }
    }
}

/// Which kernel [`product`] runs at level `isa`, as the plan prints it.
pub fn kernel_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512Vnni => "avx512 fma panel",
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
        Isa::Avx512Vnni => unsafe { super::avx512::fconv::product(p, c) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { super::avx2::fconv::product(p, c) },
        _ => unsafe { product_generic(p, c) },
    }
}

/// The block, chunk and row-tile loops every kernel shares: `tile(r, mr, b, nb, ks)` computes
/// rows `r .. r + mr` (`mr <= mr_max`) of blocks `b .. b + nb` (`nb <= nb_max`, all in one
/// run of the panel, so they share [`F32Panel::step`]) over reduction `ks` (chunks of equal
/// length, at most `kc`).
#[inline(always)]
pub(crate) fn for_tiles(
    p: &F32Panel,
    c: &FCall<'_>,
    (mr_max, nb_max, kc): (usize, usize, usize),
    mut tile: impl FnMut(usize, usize, usize, usize, Range<usize>),
) {
    let chunks = p.k.div_ceil(kc).max(1);
    let kc = p.k.div_ceil(chunks);
    let mut b = c.blocks.start;
    while b < c.blocks.end {
        let nb = (c.blocks.end - b).min(nb_max).min(NB - b % NB);
        let mut k0 = 0;
        loop {
            let k1 = (k0 + kc).min(p.k);
            let mut r = 0;
            while r < c.rows {
                let mr = (c.rows - r).min(mr_max);
                tile(r, mr, b, nb, k0..k1);
                r += mr;
            }
            k0 = k1;
            if k0 >= p.k {
                break;
            }
        }
        b += nb;
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
