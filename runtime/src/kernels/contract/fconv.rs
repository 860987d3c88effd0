//! The f32 panel kernels' contract: the weight panel, the call, the tile constants and the
//! tile loop that the dispatcher (`kernels::fconv`) and every implementation share.

use std::ops::Range;

use crate::kernels::ChannelEpilogue;
use crate::kernels::lines::Lines;
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
