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
use std::ops::Range;

use crate::kernels::lines::Lines;
use crate::ops::UnaryOp;

/// Rows per register tile.
pub(crate) const MR: usize = 6;
/// Blocks of 16 output channels per register tile.
pub(crate) const NB: usize = 4;

/// A convolution weight for this kernel (one per model, all groups).
#[derive(Debug)]
pub(crate) struct Panel {
    /// Per group, per block of 16 channels, per group of 4 reduction values: 64 bytes (a
    /// cache line).
    pub data: Lines,
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
        let mut data = Lines::zeroed(groups * blocks * k4 * 64);
        let d = data.i8s_mut();
        let mut corr = vec![0i32; groups * blocks * 16];
        for g in 0..groups {
            for c in 0..og {
                let row = &codes[(g * og + c) * k..][..k];
                let (b, lane) = (c / 16, c % 16);
                corr[(g * blocks + b) * 16 + lane] = 128 * row.iter().map(|v| i32::from(*v)).sum::<i32>();
                for (kk, w) in row.iter().enumerate() {
                    d[((g * blocks + b) * k4 + kk / 4) * 64 + lane * 4 + kk % 4] = *w;
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

/// Groups of 4 reduction values per chunk: 4 blocks x 64 x 64 bytes = 16 KB of weights, which
/// stay in L1 while the chunk walks the rows (unchunked, ResNet-18's 3x3 x 64 panel, 37 KB,
/// shared L1 with the streaming rows and ran at a third of the kernel's in-cache speed).
const KC4: usize = 64;

/// Computes every row and channel of `c` against group `c.group` of `p`.
///
/// The reduction runs in chunks of at most [`KC4`] steps; between chunks each tile's exact
/// i32 sums wait in its output row (as raw bits, only real channels), and the last chunk
/// applies the epilogue: the result is the unchunked one, bit for bit.
///
/// # Safety
/// The CPU has AVX512-F/BW/VL and VNNI; `c.x` holds `c.rows` rows of `c.stride >= 4 * p.k4`
/// bytes, `c.sx` `c.rows` values, `c.out` (and a non-null `c.residual`) `c.rows` rows of
/// `c.n >= c.og` floats; the vectors hold `c.og` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn product(p: &Panel, c: &Call<'_>) {
    let chunks = p.k4.div_ceil(KC4).max(1);
    let kc = p.k4.div_ceil(chunks);
    let mut k0 = 0;
    loop {
        let ks = k0..(k0 + kc).min(p.k4);
        let mut b = 0;
        while b < p.blocks {
            let nb = (p.blocks - b).min(NB);
            let mut r = 0;
            while r < c.rows {
                let mr = (c.rows - r).min(MR);
                // SAFETY: rows r .. r + mr and blocks b .. b + nb are inside (caller).
                unsafe {
                    if c.flipped {
                        tiles::<true>(p, c, r, mr, b, nb, ks.clone());
                    } else {
                        tiles::<false>(p, c, r, mr, b, nb, ks.clone());
                    }
                }
                r += mr;
            }
            b += nb;
        }
        k0 = ks.end;
        if k0 >= p.k4 {
            break;
        }
    }
}

/// Rows `r .. r + mr` against blocks `b .. b + nb` over reduction steps `ks`, in the largest
/// tiles that fit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tiles<const FLIPPED: bool>(
    p: &Panel,
    c: &Call<'_>,
    r: usize,
    mr: usize,
    b: usize,
    nb: usize,
    ks: Range<usize>,
) {
    macro_rules! pick {
        ($($r:literal),*) => {
            match (mr, nb) {
                $(($r, 1) => tile::<$r, 1, FLIPPED>(p, c, r, b, ks),
                  ($r, 2) => tile::<$r, 2, FLIPPED>(p, c, r, b, ks),
                  ($r, 3) => tile::<$r, 3, FLIPPED>(p, c, r, b, ks),
                  ($r, _) => tile::<$r, 4, FLIPPED>(p, c, r, b, ks),)*
                _ => {}
            }
        };
    }
    // SAFETY: forwarded from `product`; every shape up to MR x NB has its own tile (a
    // remainder of rows run one at a time re-streamed the weights once per row).
    unsafe { pick!(1, 2, 3, 4, 5, 6) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tile<const R: usize, const B: usize, const FLIPPED: bool>(
    p: &Panel,
    c: &Call<'_>,
    r0: usize,
    b0: usize,
    ks: Range<usize>,
) {
    let (first, last) = (ks.start == 0, ks.end == p.k4);
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    // SAFETY (every access below): the panel holds blocks b0 .. b0 + B of this group, k4 steps
    // each; rows r0 .. r0 + R < rows, byte 4 kk + 3 < 4 k4 <= stride (caller); output rows
    // are touched only in the group's real channels (masks).
    unsafe {
        let w = p.data.i8s().as_ptr().add((c.group * p.blocks + b0) * p.k4 * 64);
        if R == MR && B == NB {
            let mut sums = [[_mm512_setzero_si512(); NB]; MR];
            let (x, stride) = (c.x.add(r0 * c.stride + 4 * ks.start), c.stride);
            let (w, q) = (w.add(ks.start * 64), p.k4 * 64);
            if FLIPPED {
                full_tile_flipped(x, stride, w, q, ks.len(), &mut sums);
            } else {
                full_tile(x, stride, w, q, ks.len(), &mut sums);
            }
            // The sums in the generic shape's array (the same type whenever this branch runs).
            let acc: [[__m512i; B]; R] = std::mem::transmute_copy(&sums);
            return finish_tile::<R, B>(p, c, r0, b0, first, last, acc);
        }
        let mut ws = [w; B];
        for (j, wj) in ws.iter_mut().enumerate() {
            *wj = w.add(j * p.k4 * 64);
        }
        let xs: [_; R] = crate::kernels::row_ptrs(c.x, r0, c.stride);
        for kk in ks {
            let mut wv = [_mm512_setzero_si512(); B];
            for j in 0..B {
                wv[j] = _mm512_loadu_si512(ws[j].add(kk * 64).cast());
            }
            for ri in 0..R {
                let v = (xs[ri].add(4 * kk) as *const i32).read_unaligned();
                let x = if FLIPPED { _mm512_set1_epi32(v) } else { _mm512_xor_si512(_mm512_set1_epi32(v), flip) };
                for j in 0..B {
                    acc[ri][j] = _mm512_dpbusd_epi32(acc[ri][j], x, wv[j]);
                }
            }
        }
        // The rest indexes its own copy, so the loop's accumulators stay in registers.
        finish_tile::<R, B>(p, c, r0, b0, first, last, std::hint::black_box(acc));
    }
}

/// Adds the chunks before (unless `first`) to the tile's exact sums and stores them, through
/// the epilogue when `last`.
///
/// # Safety
/// As [`tile`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn finish_tile<const R: usize, const B: usize>(
    p: &Panel,
    c: &Call<'_>,
    r0: usize,
    b0: usize,
    first: bool,
    last: bool,
    mut acc: [[__m512i; B]; R],
) {
    // SAFETY: output rows r0 .. r0 + R and blocks b0 .. b0 + B are inside (caller); the masks
    // keep to the group's real channels.
    unsafe {
        for (ri, row) in acc.iter_mut().enumerate() {
            let at = c.out.add((r0 + ri) * c.n).cast::<i32>();
            for (j, a) in row.iter_mut().enumerate() {
                let (m, ch) = (super::block_mask(c.og, b0 + j), (b0 + j) * 16);
                if !first {
                    *a = _mm512_add_epi32(*a, _mm512_maskz_loadu_epi32(m, at.add(ch)));
                }
                if last {
                    epilogue(p, c, r0 + ri, b0 + j, *a, true);
                } else {
                    _mm512_mask_storeu_epi32(at.add(ch), m, *a);
                }
            }
        }
    }
}

/// The epilogue of 16 channels of one row, from sums of flipped activations (`x + 128`,
/// corrected here by [`Panel::corr`]) when `flipped`, else from the exact sums.
///
/// # Safety
/// The CPU has AVX512-F/BW/VL; row `row` and block `block` are inside `c` and `p`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(crate) unsafe fn epilogue(p: &Panel, c: &Call<'_>, row: usize, block: usize, acc: __m512i, flipped: bool) {
    let (ch, m) = (block * 16, super::block_mask(c.og, block));
    // SAFETY: the mask's channels ch .. < og of every vector and output row `row` (caller); the
    // masked loads and stores touch no other lane.
    unsafe {
        let acc = if flipped {
            _mm512_sub_epi32(acc, _mm512_loadu_si512(p.corr.as_ptr().add((c.group * p.blocks + block) * 16).cast()))
        } else {
            acc
        };
        let accf = _mm512_cvtepi32_ps(acc);
        let mult = _mm512_mul_ps(_mm512_set1_ps(*c.sx.add(row)), _mm512_maskz_loadu_ps(m, c.alpha.as_ptr().add(ch)));
        let y = _mm512_mul_ps(accf, mult);
        let res = if c.residual.is_null() { std::ptr::null() } else { c.residual.add(row * c.n) };
        super::tail16(y, m, ch, c.scale, c.bias, res, c.act, c.out.add(row * c.n));
    }
}

/// The full 6 x 4 tile's reduction over `k4` steps of 4 bytes, in assembly (as the f32 tile,
/// `kernels::avx512::fconv`): rows at `x + r * stride` (broadcast 4 bytes per step; with
/// `$xor`, flipped to `x ^ 0x80` after the broadcast), blocks at `w + j * q` (64 bytes per
/// step), exact sums from zero in `zmm0 ..= zmm23` (row `r`, block `j` in `zmm(4r + j)`),
/// stored to `sums`.
macro_rules! vnni_full_tile {
    ($name:ident, $doc:literal, $($xor:literal),*) => {
        #[doc = $doc]
        ///
        /// # Safety
        /// The CPU has AVX512-F and VNNI; 6 rows of `4 * k4` bytes at `x` (`stride` apart) and
        /// 4 blocks of `64 * k4` bytes at `w` (`q` apart) are readable.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        #[inline]
        unsafe fn $name(x: *const i8, stride: usize, w: *const i8, q: usize, k4: usize, sums: &mut [[__m512i; NB]; MR]) {
            let flip = 0x8080_8080u32;
            // SAFETY: every load is inside the rows and the blocks (caller); the stores write `sums`.
            unsafe {
                super::tile_asm!(
                    "lea {x3}, [{x} + 2*{s}]",
                    "add {x3}, {s}",
                    "lea {w3}, [{w} + 2*{q}]",
                    "add {w3}, {q}",
                    "test {n}, {n}",
                    "jz 3f",
                    "2:",
                    "vpbroadcastd zmm26, dword ptr [{x}]",
                    "vpbroadcastd zmm27, dword ptr [{x} + {s}]",
                    "vpbroadcastd zmm28, dword ptr [{x} + 2*{s}]",
                    "vpbroadcastd zmm29, dword ptr [{x3}]",
                    "vpbroadcastd zmm30, dword ptr [{x3} + {s}]",
                    "vpbroadcastd zmm31, dword ptr [{x3} + 2*{s}]",
                    $($xor,)*
                    "vmovdqu64 zmm24, zmmword ptr [{w}]",
                    "vpdpbusd zmm0, zmm26, zmm24", "vpdpbusd zmm4, zmm27, zmm24",
                    "vpdpbusd zmm8, zmm28, zmm24", "vpdpbusd zmm12, zmm29, zmm24",
                    "vpdpbusd zmm16, zmm30, zmm24", "vpdpbusd zmm20, zmm31, zmm24",
                    "vmovdqu64 zmm25, zmmword ptr [{w} + {q}]",
                    "vpdpbusd zmm1, zmm26, zmm25", "vpdpbusd zmm5, zmm27, zmm25",
                    "vpdpbusd zmm9, zmm28, zmm25", "vpdpbusd zmm13, zmm29, zmm25",
                    "vpdpbusd zmm17, zmm30, zmm25", "vpdpbusd zmm21, zmm31, zmm25",
                    "vmovdqu64 zmm24, zmmword ptr [{w} + 2*{q}]",
                    "vpdpbusd zmm2, zmm26, zmm24", "vpdpbusd zmm6, zmm27, zmm24",
                    "vpdpbusd zmm10, zmm28, zmm24", "vpdpbusd zmm14, zmm29, zmm24",
                    "vpdpbusd zmm18, zmm30, zmm24", "vpdpbusd zmm22, zmm31, zmm24",
                    "vmovdqu64 zmm25, zmmword ptr [{w3}]",
                    "vpdpbusd zmm3, zmm26, zmm25", "vpdpbusd zmm7, zmm27, zmm25",
                    "vpdpbusd zmm11, zmm28, zmm25", "vpdpbusd zmm15, zmm29, zmm25",
                    "vpdpbusd zmm19, zmm30, zmm25", "vpdpbusd zmm23, zmm31, zmm25",
                    "add {x}, 4",
                    "add {x3}, 4",
                    "add {w}, 64",
                    "add {w3}, 64",
                    "dec {n}",
                    "jnz 2b",
                    "3:",
                    "/* {f} */";
                    x = inout(reg) x => _,
                    x3 = out(reg) _,
                    s = in(reg) stride,
                    w = inout(reg) w => _,
                    w3 = out(reg) _,
                    q = in(reg) q,
                    n = inout(reg) k4 => _,
                    o = in(reg) sums.as_mut_ptr(),
                    f = in(reg) &flip,
                );
            }
        }
    };
}

vnni_full_tile!(full_tile_flipped, "The full tile over rows stored flipped (gathered rows).",);
vnni_full_tile!(
    full_tile,
    "The full tile over rows of plain int8 (pointwise input), flipped in registers.",
    "vpxord zmm26, zmm26, dword ptr [{f}]{{1to16}}",
    "vpxord zmm27, zmm27, dword ptr [{f}]{{1to16}}",
    "vpxord zmm28, zmm28, dword ptr [{f}]{{1to16}}",
    "vpxord zmm29, zmm29, dword ptr [{f}]{{1to16}}",
    "vpxord zmm30, zmm30, dword ptr [{f}]{{1to16}}",
    "vpxord zmm31, zmm31, dword ptr [{f}]{{1to16}}"
);
