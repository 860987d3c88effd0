//! The AMX product of int8 rows and ternary panels: the AVX-512 VNNI panel kernel's contract
//! ([`super::avx512::conv::product`]: the same [`Panel`], the same [`Call`], the same bits) on
//! AMX-INT8 tiles, for convolutions (gathered or pointwise rows) and matrix products.
//!
//! Rules:
//! - The panel's 64-byte lines (16 channels x 4 reduction values, channel-major) are the rows
//!   of an AMX B tile as they are: 16 lines of one block (64 reduction values) are one 1 KB
//!   tile, read in place. Activation rows are A tiles of up to 16 rows x 64 bytes, read in place
//!   with the rows' stride. The reduction is a multiple of 64 values (`Panel::k4 % 16 == 0`,
//!   as `pack::padded_k` pads every panel); [`product`] refuses other panels to the caller.
//! - Rows stored flipped (`x + 128`, gathered rows) multiply unsigned by signed (`tdpbusd`) and
//!   the epilogue subtracts `128 * sum(w)`; plain int8 rows multiply signed by signed
//!   (`tdpbssd`). Both sums are the exact 32-bit integers `sum w * x` (at most 64 * 255 per
//!   instruction and row), then the VNNI kernel's epilogue: bit for bit the portable kernels.
//! - Register blocking: 2 x 2 tiles of 16 rows x 16 channels of sums (32 rows x 32 channels)
//!   from 2 A and 2 B tiles: all 8 tile registers. Rows left over (fewer than 32) run in tiles
//!   configured with fewer rows; the configuration is loaded only when its row counts change.
//! - Weights outer, rows inner: a pair of blocks (2 x 64 x `k4` bytes) is reused from L1/L2 by
//!   every row tile of the call; the caller bounds the rows per call (the engine's row blocks).
//! - Every call ends with `tilerelease`: a thread holds tile state only while it multiplies.

use std::arch::asm;
use std::arch::x86_64::*;

use super::avx512::conv::{Call, Panel, epilogue};

/// Rows from which the engine runs a panel product on AMX rather than on 512-bit VNNI.
pub(crate) const MIN_ROWS: usize = 4;

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1: 8 tiles of up to 16 rows of
/// 64 bytes).
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Tile registers: sums of row tile `i` and block `j` in `tmm(2 i + j)`; A tiles (rows) in
/// `tmm4`, `tmm5`; B tiles (weights) in `tmm6`, `tmm7`.
impl Config {
    /// Row tiles of `r0` and `r1` rows (`r1` may be 0: that tile's registers stay unset).
    fn new(r0: usize, r1: usize) -> Config {
        let mut c = Config { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
        for (t, rows) in [(0, r0), (1, r0), (2, r1), (3, r1), (4, r0), (5, r1), (6, 16), (7, 16)] {
            if rows > 0 {
                c.colsb[t] = 64;
                c.rows[t] = rows as u8;
            }
        }
        c
    }
}

/// The sums of one 2 x 2 block of tiles, 16 x 16 `i32` each (row-major, 64 bytes a row).
#[repr(C, align(64))]
struct Sums([[i32; 256]; 4]);

/// Whether [`product`] runs panel `p` (its reduction is whole tiles).
pub(crate) fn fits(p: &Panel) -> bool {
    p.k4.is_multiple_of(16)
}

/// Computes every row and channel of `c` against group `c.group` of `p`: the results of
/// [`super::avx512::conv::product`], bit for bit.
///
/// # Safety
/// The CPU has AMX-INT8 and AVX512-F/BW/VL with the tile state enabled for this process
/// (`cpu::best() == Isa::Amx`); [`fits`]`(p)`; `c` valid as for the VNNI kernel: `c.x` holds
/// `c.rows` rows of `c.stride >= 4 * p.k4` bytes, `c.sx` `c.rows` values, `c.out` (and a non-null
/// `c.residual`) `c.rows` rows of `c.n >= c.og` floats; the vectors hold `c.og` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn product(p: &Panel, c: &Call<'_>) {
    let mut sums = Sums([[0; 256]; 4]);
    let mut loaded: Option<(usize, usize)> = None;
    let mut b = 0;
    while b < p.blocks {
        let two_blocks = p.blocks - b >= 2;
        let mut r = 0;
        while r < c.rows {
            let r0 = (c.rows - r).min(16);
            let r1 = (c.rows - r - r0).min(16);
            if loaded != Some((r0, r1)) {
                let cfg = Config::new(r0, r1);
                // SAFETY: a valid palette-1 configuration (the CPU has AMX: caller).
                unsafe { asm!("ldtilecfg [{0}]", in(reg) &cfg, options(nostack, readonly, preserves_flags)) };
                loaded = Some((r0, r1));
            }
            // SAFETY: rows r .. r + r0 + r1 and blocks b .. b + 1 or 2 are inside (caller), as
            // the configuration just loaded.
            unsafe {
                match (r1 > 0, two_blocks, c.flipped) {
                    (true, true, true) => tiles::<2, 2, true>(p, c, r, b, &mut sums),
                    (true, true, false) => tiles::<2, 2, false>(p, c, r, b, &mut sums),
                    (true, false, true) => tiles::<2, 1, true>(p, c, r, b, &mut sums),
                    (true, false, false) => tiles::<2, 1, false>(p, c, r, b, &mut sums),
                    (false, true, true) => tiles::<1, 2, true>(p, c, r, b, &mut sums),
                    (false, true, false) => tiles::<1, 2, false>(p, c, r, b, &mut sums),
                    (false, false, true) => tiles::<1, 1, true>(p, c, r, b, &mut sums),
                    (false, false, false) => tiles::<1, 1, false>(p, c, r, b, &mut sums),
                }
                finish(p, c, r, (r0, r1), b, if two_blocks { 2 } else { 1 }, &sums);
            }
            r += r0 + r1;
        }
        b += 2;
    }
    if loaded.is_some() {
        // SAFETY: tiles are configured; releasing them ends this call's use.
        unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    }
}

/// One instruction on fixed tile registers (the compiler allocates none).
macro_rules! tile {
    ($op:literal) => {
        asm!($op, options(nostack, nomem, preserves_flags))
    };
    ($op:literal, $at:expr, $stride:expr) => {
        asm!($op, at = in(reg) $at, s = in(reg) $stride, options(nostack, readonly, preserves_flags))
    };
}

/// The exact sums of `RT` row tiles (from row `r`) and `CT` blocks (from block `b`) over the
/// whole reduction, stored to `sums` (tile `2 i + j` for row tile `i`, block `j`).
///
/// # Safety
/// As [`product`], with the configuration of this call's row tiles loaded.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn tiles<const RT: usize, const CT: usize, const FLIPPED: bool>(
    p: &Panel,
    c: &Call<'_>,
    r: usize,
    b: usize,
    sums: &mut Sums,
) {
    let stride = c.stride;
    let a0 = c.x.wrapping_add(r * stride);
    let a1 = a0.wrapping_add(16 * stride);
    let w0 = p.data.i8s().as_ptr().wrapping_add((c.group * p.blocks + b) * p.k4 * 64);
    let w1 = w0.wrapping_add(p.k4 * 64);
    // SAFETY: the tiles used are configured (RT row tiles, CT <= 2 blocks); every load reads 16
    // (or the tile's rows) rows of 64 bytes inside the rows (4 * k4 <= stride) or the blocks
    // (k4 lines each); the stores write `sums`.
    unsafe {
        tile!("tilezero tmm0");
        if CT == 2 {
            tile!("tilezero tmm1");
        }
        if RT == 2 {
            tile!("tilezero tmm2");
            if CT == 2 {
                tile!("tilezero tmm3");
            }
        }
        for kk in (0..p.k4).step_by(16) {
            tile!("tileloadd tmm4, [{at} + {s}]", a0.add(4 * kk), stride);
            tile!("tileloadd tmm6, [{at} + {s}]", w0.add(64 * kk), 64usize);
            if RT == 2 {
                tile!("tileloadd tmm5, [{at} + {s}]", a1.add(4 * kk), stride);
            }
            if CT == 2 {
                tile!("tileloadd tmm7, [{at} + {s}]", w1.add(64 * kk), 64usize);
            }
            if FLIPPED {
                tile!("tdpbusd tmm0, tmm4, tmm6");
                if CT == 2 {
                    tile!("tdpbusd tmm1, tmm4, tmm7");
                }
                if RT == 2 {
                    tile!("tdpbusd tmm2, tmm5, tmm6");
                    if CT == 2 {
                        tile!("tdpbusd tmm3, tmm5, tmm7");
                    }
                }
            } else {
                tile!("tdpbssd tmm0, tmm4, tmm6");
                if CT == 2 {
                    tile!("tdpbssd tmm1, tmm4, tmm7");
                }
                if RT == 2 {
                    tile!("tdpbssd tmm2, tmm5, tmm6");
                    if CT == 2 {
                        tile!("tdpbssd tmm3, tmm5, tmm7");
                    }
                }
            }
        }
        let base = sums.0.as_mut_ptr();
        let at = |t: usize| base.add(t).cast::<i32>();
        asm!("tilestored [{at} + {s}], tmm0", at = in(reg) at(0), s = in(reg) 64usize, options(nostack, preserves_flags));
        if CT == 2 {
            asm!("tilestored [{at} + {s}], tmm1", at = in(reg) at(1), s = in(reg) 64usize, options(nostack, preserves_flags));
        }
        if RT == 2 {
            asm!("tilestored [{at} + {s}], tmm2", at = in(reg) at(2), s = in(reg) 64usize, options(nostack, preserves_flags));
            if CT == 2 {
                asm!("tilestored [{at} + {s}], tmm3", at = in(reg) at(3), s = in(reg) 64usize, options(nostack, preserves_flags));
            }
        }
    }
}

/// The epilogue of the sums [`tiles`] stored: row tiles of `rows.0` and `rows.1` rows from row
/// `r`, `ct` blocks from block `b`.
///
/// # Safety
/// As [`product`], for rows and blocks inside `c` and `p`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn finish(p: &Panel, c: &Call<'_>, r: usize, rows: (usize, usize), b: usize, ct: usize, sums: &Sums) {
    for (i, n) in [rows.0, rows.1].into_iter().enumerate() {
        for row in 0..n {
            for j in 0..ct {
                // SAFETY: 16 sums of row `row` of tile 2 i + j (inside `sums`); the row and
                // block are inside (caller).
                unsafe {
                    let acc = _mm512_loadu_si512(sums.0[2 * i + j].as_ptr().add(16 * row).cast());
                    epilogue(p, c, r + 16 * i + row, b + j, acc, c.flipped);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cpu::{self, Isa};
    use crate::ops::UnaryOp;

    /// Every row and channel of a random product on AMX and on the VNNI kernel (a sentinel
    /// after each output row must survive).
    fn both(rows: usize, og: usize, groups: usize, k4: usize, flipped: bool, seed: u64, act: Option<UnaryOp>) {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let k = 4 * k4 - (next() as usize % 64).min(4 * k4 - 1);
        let codes: Vec<i8> = (0..groups * og * k).map(|_| (next() % 3) as i8 - 1).collect();
        let p = Panel::new(&codes, groups, og, k, 4 * k4);
        let stride = 4 * k4 + 64 * (next() as usize % 2);
        let x: Vec<i8> = (0..rows * stride).map(|_| next() as i8).collect();
        let sx: Vec<f32> = (0..rows).map(|_| 0.01 + (next() % 100) as f32 / 1000.0).collect();
        let alpha: Vec<f32> = (0..og).map(|_| 0.5 + (next() % 100) as f32 / 100.0).collect();
        let bias: Vec<f32> = (0..og).map(|_| (next() % 200) as f32 / 100.0 - 1.0).collect();
        let n = groups * og + 1;
        let residual: Vec<f32> = (0..rows * n).map(|_| (next() % 200) as f32 / 100.0 - 1.0).collect();
        let run = |amx: bool| {
            let mut out = vec![f32::from_bits(0x7fc0_dead); rows * n];
            for g in 0..groups {
                let call = Call {
                    x: x.as_ptr(),
                    stride,
                    rows,
                    sx: sx.as_ptr(),
                    out: out[g * og..].as_mut_ptr(),
                    n,
                    residual: residual[g * og..].as_ptr(),
                    og,
                    group: g,
                    alpha: &alpha,
                    scale: None,
                    bias: Some(&bias),
                    act,
                    flipped,
                };
                // SAFETY: the machine has AMX (checked by the callers); the buffers hold what
                // the call names.
                unsafe { if amx { product(&p, &call) } else { super::super::avx512::conv::product(&p, &call) } }
            }
            out
        };
        let (a, v) = (run(true), run(false));
        let bits = |o: &[f32]| o.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&v), "rows {rows}, og {og}, groups {groups}, k4 {k4}, flipped {flipped}");
        assert!(a.chunks(n).all(|r| r[n - 1].to_bits() == 0x7fc0_dead), "wrote past its channels");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn amx_equals_the_vnni_kernel(
            rows in 1usize..70,
            og in 1usize..70,
            groups in 1usize..3,
            k4 in prop::sample::select(vec![16usize, 32, 48, 144]),
            flipped in any::<bool>(),
            relu in any::<bool>(),
            seed in any::<u64>(),
        ) {
            if cpu::best() < Isa::Amx {
                return Ok(());
            }
            both(rows, og, groups, k4, flipped, seed, relu.then_some(UnaryOp::Relu));
        }
    }

    #[test]
    fn amx_equals_the_vnni_kernel_on_tile_edges() {
        if cpu::best() < Isa::Amx {
            eprintln!("no AMX on this machine: the AMX kernel is not run");
            return;
        }
        // Whole 2 x 2 tiles, a row and a channel past them, a long reduction, the fewest rows.
        for (rows, og, k4, flipped) in [(32, 32, 16, false), (17, 33, 256, true), (64, 16, 16, true), (4, 1, 16, false)]
        {
            both(rows, og, 1, k4, flipped, rows as u64, None);
        }
    }
}
