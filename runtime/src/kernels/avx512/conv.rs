//! The AVX-512 VNNI product of convolutions: rows of int8 activations (gathered pixels, or the
//! int8 rows themselves for 1x1) times a panel of signed int8 trits, register-blocked over
//! [`MR`] rows x [`NB`] blocks of 16 output channels with 512-bit `vpdpbusd`.
//!
//! Rules:
//! - The panel ([`Panel`]) holds, per block of 16 output channels and per group of 4 reduction
//!   values, 64 bytes: channel-major 4-byte groups, the layout `vpdpbusd` multiplies against a
//!   broadcast of 4 activations. Trits are -1/0/1 as i8; padding channels and padding
//!   reduction values are 0.
//! - `vpdpbusd` multiplies unsigned by signed bytes: activations are flipped to `x + 128`
//!   (`xor 0x80`) and each channel's `128 * sum(w)` ([`Panel::corr`]) is subtracted, so the
//!   sums are the exact integers `sum w * x` (no saturation: at most 4 * 255 per step).
//! - The epilogue is the interpreter's order in 16 lanes (`acc * (sx * alpha)`, scale, bias,
//!   residual, activation, no fused multiply-add): bit for bit the portable kernels' results.

use std::arch::x86_64::*;

use crate::ops::UnaryOp;

/// Rows per register tile.
pub(crate) const MR: usize = 6;
/// Blocks of 16 output channels per register tile.
pub(crate) const NB: usize = 4;

/// A convolution weight for this kernel (one per model, all groups).
#[derive(Debug)]
pub(crate) struct Panel {
    /// Per group, per block of 16 channels, per group of 4 reduction values: 64 bytes.
    pub data: Vec<i8>,
    /// Per group and padded channel: `128 * sum(w)`.
    pub corr: Vec<i32>,
    /// Reduction values per row, a multiple of 4 (the activations' row stride may be larger).
    pub k4: usize,
    /// Blocks of 16 channels per group.
    pub blocks: usize,
}

impl Panel {
    /// From trits `codes` (`groups * og` rows of `k`, in the gathered rows' order).
    pub fn new(codes: &[i8], groups: usize, og: usize, k: usize, k_pad: usize) -> Panel {
        let blocks = og.div_ceil(16);
        let k4 = k_pad / 4;
        let mut data = vec![0i8; groups * blocks * k4 * 64];
        let mut corr = vec![0i32; groups * blocks * 16];
        for g in 0..groups {
            for c in 0..og {
                let row = &codes[(g * og + c) * k..][..k];
                let (b, lane) = (c / 16, c % 16);
                corr[(g * blocks + b) * 16 + lane] = 128 * row.iter().map(|v| i32::from(*v)).sum::<i32>();
                for (kk, w) in row.iter().enumerate() {
                    data[((g * blocks + b) * k4 + kk / 4) * 64 + lane * 4 + kk % 4] = *w;
                }
            }
        }
        Panel { data, corr, k4, blocks }
    }
}

/// One call's operands: `rows` rows of int8 activations (`stride` bytes apart, at least
/// `4 * k4` readable), output rows of `n` floats (channels `0..og` of group `g` written at
/// `out + c`), per-row scales `sx`, and the group's per-channel vectors.
pub(crate) struct Call<'a> {
    pub x: *const i8,
    pub stride: usize,
    pub rows: usize,
    pub sx: *const f32,
    pub out: *mut f32,
    pub n: usize,
    pub residual: *const f32,
    pub og: usize,
    pub group: usize,
    pub alpha: &'a [f32],
    pub scale: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
    /// The activations are stored flipped already (`x ^ 0x80`, as gathered rows are).
    pub flipped: bool,
}

/// Computes every row and channel of `c` against group `c.group` of `p`.
///
/// # Safety
/// The CPU has AVX512-F/BW/VL and VNNI; `c.x` holds `c.rows` rows of `c.stride >= 4 * p.k4`
/// bytes, `c.sx` `c.rows` values, `c.out` (and a non-null `c.residual`) `c.rows` rows of
/// `c.n >= c.og` floats; the vectors hold `c.og` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn product(p: &Panel, c: &Call<'_>) {
    let mut b = 0;
    while b < p.blocks {
        let nb = (p.blocks - b).min(NB);
        let mut r = 0;
        while r < c.rows {
            let mr = (c.rows - r).min(MR);
            // SAFETY: rows r .. r + mr and blocks b .. b + nb are inside (caller).
            unsafe {
                if c.flipped {
                    tiles::<true>(p, c, r, mr, b, nb);
                } else {
                    tiles::<false>(p, c, r, mr, b, nb);
                }
            }
            r += mr;
        }
        b += nb;
    }
}

/// Rows `r .. r + mr` against blocks `b .. b + nb`, in the largest tiles that fit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tiles<const FLIPPED: bool>(p: &Panel, c: &Call<'_>, r: usize, mr: usize, b: usize, nb: usize) {
    // SAFETY: forwarded from `product`.
    unsafe {
        match (mr, nb) {
            (MR, NB) => tile::<MR, NB, FLIPPED>(p, c, r, b),
            (MR, _) => (b..b + nb).for_each(|b| tile::<MR, 1, FLIPPED>(p, c, r, b)),
            (_, NB) => (r..r + mr).for_each(|r| tile::<1, NB, FLIPPED>(p, c, r, b)),
            _ => (r..r + mr).for_each(|r| (b..b + nb).for_each(|b| tile::<1, 1, FLIPPED>(p, c, r, b))),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile<const R: usize, const B: usize, const FLIPPED: bool>(p: &Panel, c: &Call<'_>, r0: usize, b0: usize) {
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    let w0 = (c.group * p.blocks + b0) * p.k4 * 64;
    for kk in 0..p.k4 {
        // SAFETY: the panel holds blocks b0 .. b0 + B of this group (caller), k4 steps each.
        let w: [__m512i; B] = std::array::from_fn(|j| unsafe {
            _mm512_loadu_si512(p.data.as_ptr().add(w0 + (j * p.k4 + kk) * 64).cast())
        });
        for (ri, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r0 + ri < rows, byte 4 kk + 3 < 4 k4 <= stride (caller).
            let v = unsafe { (c.x.add((r0 + ri) * c.stride + 4 * kk) as *const i32).read_unaligned() };
            let x = if FLIPPED { _mm512_set1_epi32(v) } else { _mm512_xor_si512(_mm512_set1_epi32(v), flip) };
            for (a, w) in acc.iter_mut().zip(&w) {
                *a = _mm512_dpbusd_epi32(*a, x, *w);
            }
        }
    }
    for (ri, acc) in acc.iter().enumerate() {
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: as above.
            unsafe { epilogue(p, c, r0 + ri, b0 + j, *a) };
        }
    }
}

/// The epilogue of 16 channels of one row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn epilogue(p: &Panel, c: &Call<'_>, row: usize, block: usize, acc: __m512i) {
    let ch = block * 16;
    let lanes = (c.og - ch).min(16);
    let m: __mmask16 = if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 };
    // SAFETY: channels ch .. ch + lanes < og of every vector and output row `row` (caller); the
    // masked loads and stores touch no other lane.
    unsafe {
        let corr = _mm512_loadu_si512(p.corr.as_ptr().add((c.group * p.blocks + block) * 16).cast());
        let accf = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr));
        let mult = _mm512_mul_ps(_mm512_set1_ps(*c.sx.add(row)), _mm512_maskz_loadu_ps(m, c.alpha.as_ptr().add(ch)));
        let y = _mm512_mul_ps(accf, mult);
        let res = if c.residual.is_null() { std::ptr::null() } else { c.residual.add(row * c.n) };
        super::tail16(y, m, ch, c.scale, c.bias, res, c.act, c.out.add(row * c.n));
    }
}
