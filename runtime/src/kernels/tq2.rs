//! The int8 x ternary matrix-product kernel of `Step::Gemm` (tq2 weights, int8 rows): the
//! runtime's own per-ISA implementations of the JIT int8 kernel's contract, for the products
//! the JIT kernels cannot make fast (Cranelift 0.135 emits 128-bit vectors only on x86-64).
//!
//! Rules:
//! - Same contract and same results as the JIT int8 kernel (`GemmArgs`, tq2 weights, int8 rows
//!   padded to `k_pad`): integer sums are exact, and the epilogue runs in the interpreter's
//!   order ([`super::epilogue`]), so the output is bit for bit the JIT kernel's (tests/jit.rs
//!   compares every [`Isa`] and the JIT kernels to the interpreter).
//! - Used for every int8 product on CPUs with AVX2, batch 1 included: at 256 bits it beats the
//!   128-bit JIT kernels at every row count measured (docs/kernels.md). Without AVX2 the JIT
//!   kernels run where the model has them, else [`Isa::Generic`]. Shapes are run-time values
//!   here, not constants: per call the work dwarfs what specialisation would save.
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

use crate::cpu::Isa;
use crate::kernel::GemmArgs;
use crate::ops::UnaryOp;
use crate::pack;

/// Computes output channels `channels` (the tile range of `args` times the tile size, cut at
/// `n`) of `args.rows` rows, with the epilogue the non-null pointers select and `act` (relu or
/// relu6 only).
///
/// # Safety
/// The CPU has `isa` (`isa <= cpu::best()`); `args` is valid as for a JIT int8 kernel specialised
/// for `n` channels and `k_pad` (a multiple of 64) padded activations: `x` holds `rows` rows of
/// `k_pad` bytes, `w` `n` rows of `k_pad / 4` bytes, `alpha` (and non-null `scale`, `bias`) `n`
/// values, `out` (and a non-null `residual`) `rows` rows of `n`, `xsum` and `sx` `rows` values;
/// `channels.end <= n`.
pub unsafe fn gemm(isa: Isa, args: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match isa {
            Isa::Generic => generic(args, n, k_pad, act, channels),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::avx2::tq2::gemm(args, n, k_pad, act, channels),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni | Isa::Amx => super::avx512::tq2::gemm(args, n, k_pad, act, channels),
            #[cfg(not(target_arch = "x86_64"))]
            _ => generic(args, n, k_pad, act, channels),
        }
    }
}

/// The portable definition: per row and channel, the exact sum of codes times activations
/// minus the row's sum, then the epilogue.
///
/// # Safety
/// As for [`gemm`].
unsafe fn generic(a: &GemmArgs, n: usize, k_pad: usize, act: Option<UnaryOp>, channels: Range<usize>) {
    let rows = a.rows as usize;
    // SAFETY: the caller vouches for rows x k_pad activations and n x k_pad / 4 weight bytes.
    let (x, w) =
        unsafe { (std::slice::from_raw_parts(a.x, rows * k_pad), std::slice::from_raw_parts(a.w, n * (k_pad / 4))) };
    let rb = k_pad / 4;
    for r in 0..rows {
        let xr = &x[r * k_pad..(r + 1) * k_pad];
        for c in channels.clone() {
            let wr = &w[c * rb..(c + 1) * rb];
            let mut acc = 0i32;
            for (blk, bytes) in wr.chunks_exact(pack::BLOCK_BYTES).enumerate() {
                let xb = &xr[blk * pack::BLOCK..(blk + 1) * pack::BLOCK];
                for (j, &byte) in bytes.iter().enumerate() {
                    for s in 0..4 {
                        acc += i32::from((byte >> (2 * s)) & 3) * i32::from(xb[16 * s + j]);
                    }
                }
            }
            // SAFETY: row r < rows, channel c < n (caller).
            unsafe {
                let acc = acc - *a.xsum.add(r);
                let scale = (!a.scale.is_null()).then(|| *a.scale.add(c));
                let bias = (!a.bias.is_null()).then(|| *a.bias.add(c));
                let res = (!a.residual.is_null()).then(|| *a.residual.add(r * n + c));
                *a.out.add(r * n + c) = super::epilogue(acc, *a.sx.add(r) * *a.alpha.add(c), scale, bias, res, act);
            }
        }
    }
}
