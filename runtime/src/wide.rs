//! The 256-bit int8 x ternary batch kernel: hand-written AVX2 (and AVX-512 VNNI where the CPU
//! has it), for the products the JIT kernels cannot make fast (Cranelift 0.135 emits 128-bit
//! vectors only on x86-64, while the FP32 baseline's sgemm uses 256-bit FMAs).
//!
//! Rules:
//! - Same contract and same results as the JIT int8 kernel (`GemmArgs`, tq2 weights, int8 rows
//!   padded to `k_pad`): integer sums are exact, and the epilogue runs in the interpreter's
//!   order with the JIT kernel's activation semantics (`y > 0 ? y : 0`, then `y > 6 ? 6 : y`),
//!   so the output is bit for bit the JIT kernel's (tests/jit.rs compares every [`Isa`] and the
//!   JIT kernels to the interpreter).
//! - Used for every int8 product on CPUs with AVX2 (checked once per model), batch 1 included:
//!   at 256 bits it beats the 128-bit JIT kernels at every row count measured (docs/kernels.md).
//!   Elsewhere, or with `Model::set_wide_kernel(None)`, the JIT kernels run. Shapes are run-time
//!   values here, not constants: per call the work dwarfs what specialisation would save.
//! - Inner step per 64 weights of a channel: one 16-byte load broadcast to both halves, two
//!   per-lane shifts (`vpsrlvd` by 0|2 and 4|6) and masks give the codes of weights 0..32 and
//!   32..64 in order; each meets 32 activations of each row of the group:
//!   - [`Isa::Avx2`]: `vpmaddubsw` into 16-bit sums, which hold at most 32 blocks
//!     (32 * 2 * 508 = 32512) before `vpmaddwd` widens them;
//!   - [`Isa::Avx512Vnni`]: `vpdpbusd` (the 256-bit EVEX form, AVX512-VL) multiplies and adds
//!     straight into 32-bit sums, one instruction where AVX2 needs two and no flushes. Not
//!     saturating, so the sums are the same exact integers.
//! - Rows must start on 32-byte boundaries to run at full speed (the runtime's int8 rows are
//!   cache-line aligned, `crate::aligned`); any alignment is correct.

use std::ops::Range;

use crate::kernel::GemmArgs;
use crate::ops::UnaryOp;

/// Rows sharing one decode of a channel's codes.
const ROWS: usize = 8;
/// Blocks whose 16-bit sums cannot overflow.
const FLUSH_BLOCKS: usize = 32;

/// The instruction sets the wide kernel is written for, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// AVX2: `vpmaddubsw` + 16-bit adds.
    Avx2,
    /// AVX2 plus AVX512-VNNI and AVX512-VL: `vpdpbusd` on 256-bit vectors.
    Avx512Vnni,
}

/// The best wide kernel this CPU runs, if any.
pub fn best() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if !has!("avx2") {
            None
        } else if has!("avx512vnni") && has!("avx512vl") {
            Some(Isa::Avx512Vnni)
        } else {
            Some(Isa::Avx2)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether this CPU runs the wide kernel (AVX2 at least).
pub fn available() -> bool {
    best().is_some()
}

/// Computes output channels `channels` (the tile range of `args` times the tile size, cut at
/// `n`) of `args.rows` rows, with the epilogue the non-null pointers select and `act` (relu or
/// relu6 only).
///
/// # Safety
/// The CPU has `isa` (`isa <= best()`); `args` is valid as for a JIT int8 kernel specialised for
/// `n` channels and `k_pad` (a multiple of 64) padded activations: `x` holds `rows` rows of
/// `k_pad` bytes, `w` `n` rows of `k_pad / 4` bytes, `alpha` (and non-null `scale`, `bias`) `n`
/// values, `out` (and a non-null `residual`) `rows` rows of `n`, `xsum` and `sx` `rows` values;
/// `channels.end <= n`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gemm(isa: Isa, args: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            Isa::Avx2 => avx2::gemm(args, n, k_pad, act, channels),
            Isa::Avx512Vnni => avx2::gemm_vnni(args, n, k_pad, act, channels),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn gemm(_: Isa, _: &GemmArgs, _: usize, _: usize, _: Option<UnaryOp>, _: Range<usize>) {
    unreachable!("the wide kernel is only used when best() offers it")
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// Rows in groups of [`ROWS`], each group against every channel of `channels`:
    /// `group(r, ch)` for full groups, `one(row, ch)` for the rows left over.
    #[inline(always)]
    fn walk(rows: usize, channels: Range<usize>, group: impl Fn(usize, usize), one: impl Fn(usize, usize)) {
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(ROWS);
            for ch in channels.clone() {
                if nr == ROWS {
                    group(r, ch);
                } else {
                    (r..r + nr).for_each(|row| one(row, ch));
                }
            }
            r += nr;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gemm(a: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
        // SAFETY (both closures): rows and channels inside what the caller vouched for, on a CPU
        // with AVX2 (caller).
        walk(
            a.rows as usize,
            channels,
            |r, ch| unsafe { tile::<ROWS>(a, n, k_pad, r, ch, act) },
            |row, ch| unsafe { tile_row(a, n, k_pad, row, ch, act) },
        );
    }

    /// One row against channel `c` on the AVX2 tile, compiled for AVX2 alone: inlined into the
    /// VNNI driver, LLVM's AVX-512 code for it ran 40-50% slower (MLP batch 1 7.9 vs 5.6 us).
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    unsafe fn tile_row(a: &GemmArgs, n: usize, k_pad: usize, row: usize, c: usize, act: Option<UnaryOp>) {
        // SAFETY: forwarded from the caller.
        unsafe { tile::<1>(a, n, k_pad, row, c, act) }
    }

    /// [`gemm`] on `vpdpbusd`: 8 rows per decode; the rows left run on the AVX2 tile (one row
    /// alone would chain every `vpdpbusd` on one register: MNIST MLP batch 1 12 us vs 5.5 us).
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(super) unsafe fn gemm_vnni(a: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
        // SAFETY (both closures): as in `gemm`, on a CPU with AVX512-VNNI and -VL (caller).
        walk(
            a.rows as usize,
            channels,
            |r, ch| unsafe { tile_vnni(a, n, k_pad, r, ch, act) },
            |row, ch| unsafe { tile_row(a, n, k_pad, row, ch, act) },
        );
    }

    /// The codes of block `blk` of channel `c`: weights 0..32 and 32..64, one per byte.
    ///
    /// # Safety
    /// Channel `c` and block `blk < k_pad / 64` lie inside the weight.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn decode(a: &GemmArgs, k_pad: usize, c: usize, blk: usize) -> [__m256i; 2] {
        let mask = _mm256_set1_epi8(3);
        // SAFETY: inside the weight (caller).
        let p = unsafe { a.w.add(c * (k_pad / 4) + blk * 16) };
        let w = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
        [
            _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), mask),
            _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)), mask),
        ]
    }

    /// The 64 activations of block `blk` of row `row`, as two vectors.
    ///
    /// # Safety
    /// Row `row` and block `blk < k_pad / 64` lie inside the activations.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn activations(a: &GemmArgs, k_pad: usize, row: usize, blk: usize) -> [__m256i; 2] {
        // SAFETY: inside the activations (caller).
        unsafe {
            let p = a.x.add(row * k_pad + blk * 64);
            [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())]
        }
    }

    /// Runs the epilogue of rows `r .. r + R` (R is 1 or 8) of channel `c` from their sums.
    ///
    /// # Safety
    /// Those rows and channel `c` lie inside the caller's buffers.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn finish<const R: usize>(
        a: &GemmArgs,
        n: usize,
        r: usize,
        c: usize,
        acc: &[__m256i; R],
        act: Option<UnaryOp>,
    ) {
        // SAFETY: channel c < n for every per-channel vector; rows inside (caller).
        unsafe {
            let alpha = *a.alpha.add(c);
            let scale = (!a.scale.is_null()).then(|| *a.scale.add(c));
            let bias = (!a.bias.is_null()).then(|| *a.bias.add(c));
            if R == ROWS {
                epilogue8(a, n, r, c, acc, alpha, scale, bias, act);
            } else {
                for (ri, v) in acc.iter().enumerate() {
                    epilogue1(a, n, r + ri, c, *v, alpha, scale, bias, act);
                }
            }
        }
    }

    /// Rows `r .. r + R` against channel `c`, on `vpmaddubsw`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile<const R: usize>(a: &GemmArgs, n: usize, k_pad: usize, r: usize, c: usize, act: Option<UnaryOp>) {
        let blocks = k_pad / 64;
        let ones = _mm256_set1_epi16(1);
        let mut acc32 = [_mm256_setzero_si256(); R];
        let mut b0 = 0;
        while b0 < blocks {
            let b1 = (b0 + FLUSH_BLOCKS).min(blocks);
            let mut acc16 = [_mm256_setzero_si256(); R];
            for blk in b0..b1 {
                // SAFETY: channel c < n, row r + ri < rows, blk < k_pad / 64 (caller).
                let codes = unsafe { decode(a, k_pad, c, blk) };
                for (ri, acc) in acc16.iter_mut().enumerate() {
                    let x = unsafe { activations(a, k_pad, r + ri, blk) };
                    let p0 = _mm256_maddubs_epi16(codes[0], x[0]);
                    let p1 = _mm256_maddubs_epi16(codes[1], x[1]);
                    *acc = _mm256_add_epi16(*acc, _mm256_add_epi16(p0, p1));
                }
            }
            for (a32, a16) in acc32.iter_mut().zip(&acc16) {
                *a32 = _mm256_add_epi32(*a32, _mm256_madd_epi16(*a16, ones));
            }
            b0 = b1;
        }
        // SAFETY: rows r..r + R and channel c are inside the caller's buffers.
        unsafe { finish(a, n, r, c, &acc32, act) };
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

    /// The epilogue of one row and channel from its 8 lanes of 32-bit sums; the same operations
    /// in the same order as [`epilogue8`].
    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn epilogue1(
        a: &GemmArgs,
        n: usize,
        row: usize,
        ch: usize,
        v: __m256i,
        alpha: f32,
        scale: Option<f32>,
        bias: Option<f32>,
        act: Option<UnaryOp>,
    ) {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        // SAFETY: row < rows for xsum, sx, residual and out; ch < n (caller).
        unsafe {
            let acc = _mm_cvtsi128_si32(s) - *a.xsum.add(row);
            let mut y = acc as f32 * (*a.sx.add(row) * alpha);
            if let Some(s) = scale {
                y *= s;
            }
            if let Some(b) = bias {
                y += b;
            }
            if !a.residual.is_null() {
                y += *a.residual.add(row * n + ch);
            }
            if let Some(op @ (UnaryOp::Relu | UnaryOp::Relu6)) = act {
                y = if y > 0.0 { y } else { 0.0 };
                if op == UnaryOp::Relu6 && y > 6.0 {
                    y = 6.0;
                }
            }
            *a.out.add(row * n + ch) = y;
        }
    }

    /// The epilogue of 8 rows of one channel, vectorized over the rows: the same operations in
    /// the same order as the scalar one (`acc * (sx * alpha)`, scale, bias, residual, act).
    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn epilogue8(
        a: &GemmArgs,
        n: usize,
        r: usize,
        ch: usize,
        acc: &[__m256i],
        alpha: f32,
        scale: Option<f32>,
        bias: Option<f32>,
        act: Option<UnaryOp>,
    ) {
        // Horizontal sums of 8 vectors into one: lane i is the sum of acc[i].
        let h01 = _mm256_hadd_epi32(acc[0], acc[1]);
        let h23 = _mm256_hadd_epi32(acc[2], acc[3]);
        let h45 = _mm256_hadd_epi32(acc[4], acc[5]);
        let h67 = _mm256_hadd_epi32(acc[6], acc[7]);
        let lo = _mm256_hadd_epi32(h01, h23);
        let hi = _mm256_hadd_epi32(h45, h67);
        let sums = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), _mm256_permute2x128_si256(lo, hi, 0x31));
        // SAFETY: rows r..r + 8 of xsum, sx, residual and out, channel ch < n (caller).
        unsafe {
            let xsum = _mm256_loadu_si256(a.xsum.add(r).cast());
            let accf = _mm256_cvtepi32_ps(_mm256_sub_epi32(sums, xsum));
            let s1 = _mm256_mul_ps(_mm256_loadu_ps(a.sx.add(r)), _mm256_set1_ps(alpha));
            let mut y = _mm256_mul_ps(accf, s1);
            if let Some(s) = scale {
                y = _mm256_mul_ps(y, _mm256_set1_ps(s));
            }
            if let Some(b) = bias {
                y = _mm256_add_ps(y, _mm256_set1_ps(b));
            }
            if !a.residual.is_null() {
                let res: [f32; 8] = std::array::from_fn(|i| *a.residual.add((r + i) * n + ch));
                y = _mm256_add_ps(y, _mm256_loadu_ps(res.as_ptr()));
            }
            if let Some(op @ (UnaryOp::Relu | UnaryOp::Relu6)) = act {
                let zero = _mm256_setzero_ps();
                y = _mm256_and_ps(y, _mm256_cmp_ps::<_CMP_GT_OQ>(y, zero));
                if op == UnaryOp::Relu6 {
                    let six = _mm256_set1_ps(6.0);
                    y = _mm256_blendv_ps(y, six, _mm256_cmp_ps::<_CMP_GT_OQ>(y, six));
                }
            }
            let mut out = [0.0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), y);
            for (i, v) in out.iter().enumerate() {
                *a.out.add((r + i) * n + ch) = *v;
            }
        }
    }
}
