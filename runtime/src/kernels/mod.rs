//! Microkernels per instruction set (portable code in each driver, `avx2`, `avx512`), and
//! the drivers that pick one from a [`crate::cpu::Isa`] level.
//!
//! Rules:
//! - The portable (`Isa::Generic`) code is the definition: on integer paths every other
//!   implementation returns the same bits (tests force every level the machine runs).
//! - A kernel never allocates and never panics; the engine checks every size before a call
//!   and passes raw pointers valid for what the kernel's documented contract reads and writes.
//! - The epilogue of a product is [`epilogue`]'s order everywhere: `acc * mult`, `* scale`,
//!   `+ bias`, `+ residual`, activation, each rounded in f32 (no fused multiply-add), so
//!   integer products equal the interpreter's bit for bit.
//! - AMX ([`amx`], Intel CPUs that have it and an OS that enables it) runs the int8 panel
//!   products ([`panel_product`]); every other kernel runs its AVX-512 code at that level.
//! - Drivers: [`tq2`] (the int8 x tq2 matrix product of `Step::Gemm`), [`conv`] (channels-last
//!   convolutions: direct/implicit-GEMM int8 and f32, depthwise), [`pool`] (channels-last
//!   pooling), [`sgemm`] (the f32 GEMM of matrix products, on the `gemm` crate).

pub mod contract;
pub mod conv;
pub mod fconv;
pub(crate) mod lines;
pub mod planar;
pub mod pool;
pub mod sgemm;
pub mod tq2;

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::ops::UnaryOp;

/// The int8 panel product (convolutions and matrix products of several rows, CPUs with AVX-512
/// VNNI): on AMX tiles at [`crate::cpu::Isa::Amx`] from [`amx::MIN_ROWS`] rows, else on 512-bit
/// `vpdpbusd`; the same bits either way.
///
/// # Safety
/// `isa <= cpu::best()` and at least [`crate::cpu::Isa::Avx512Vnni`]; `c` valid for `p` as
/// [`avx512::conv::product`] requires.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn panel_product(isa: crate::cpu::Isa, p: &avx512::conv::Panel, c: &avx512::conv::Call<'_>) {
    // SAFETY: forwarded from the caller; AMX runs only at its level and on whole-tile panels.
    unsafe {
        if isa >= crate::cpu::Isa::Amx && c.rows >= amx::MIN_ROWS && amx::fits(p) {
            amx::product(p, c)
        } else {
            avx512::conv::product(p, c)
        }
    }
}

/// Pointers to rows `r0 .. r0 + R` of `x` (`stride` elements apart): one per row of a
/// register tile, so each of the tile's loads is one base + index address.
///
/// # Safety
/// Rows `r0 .. r0 + R` start inside `x`'s allocation.
#[inline(always)]
pub(crate) unsafe fn row_ptrs<T, const R: usize>(x: *const T, r0: usize, stride: usize) -> [*const T; R] {
    let mut xs = [x; R];
    for (ri, p) in xs.iter_mut().enumerate() {
        // SAFETY: inside the allocation (caller).
        *p = unsafe { x.add((r0 + ri) * stride) };
    }
    xs
}

/// The per-channel epilogue of a product's output row (a convolution's pixel, a matrix
/// product's row): `acc * mult`, `* scale`,
/// `+ bias`, `+ residual`, activation, each rounded in f32 (the interpreter's order).
#[derive(Clone, Copy, Debug)]
pub struct ChannelEpilogue<'a> {
    pub mult: Option<&'a [f32]>,
    pub scale: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
}

impl ChannelEpilogue<'_> {
    /// Applies the epilogue to one pixel's `y` (the product's sums as f32), with that pixel's
    /// residual row.
    #[inline(always)]
    pub fn apply(&self, y: &mut [f32], residual: Option<&[f32]>) {
        let n = y.len();
        if let Some(m) = self.mult {
            y.iter_mut().zip(&m[..n]).for_each(|(v, m)| *v *= m);
        }
        if let Some(s) = self.scale {
            y.iter_mut().zip(&s[..n]).for_each(|(v, s)| *v *= s);
        }
        if let Some(b) = self.bias {
            y.iter_mut().zip(&b[..n]).for_each(|(v, b)| *v += b);
        }
        if let Some(r) = residual {
            y.iter_mut().zip(&r[..n]).for_each(|(v, r)| *v += r);
        }
        match self.act {
            // One loop per activation, so each vectorizes.
            Some(UnaryOp::Relu) => y.iter_mut().for_each(|v| *v = UnaryOp::Relu.apply(*v)),
            Some(UnaryOp::Relu6) => y.iter_mut().for_each(|v| *v = UnaryOp::Relu6.apply(*v)),
            Some(a) => y.iter_mut().for_each(|v| *v = a.apply(*v)),
            None => {}
        }
    }

    /// [`ChannelEpilogue::apply`] on every row of `n` values of `out`, with the matching rows of
    /// `residual`; vectorized 8 wide on CPUs with AVX2 (same bits: each value's operations are
    /// the same).
    pub fn apply_rows(&self, out: &mut [f32], n: usize, residual: Option<&[f32]>) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2() {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.apply_rows_avx2(out, n, residual) };
        }
        self.apply_rows_generic(out, n, residual)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn apply_rows_avx2(&self, out: &mut [f32], n: usize, residual: Option<&[f32]>) {
        self.apply_rows_generic(out, n, residual)
    }

    #[inline(always)]
    fn apply_rows_generic(&self, out: &mut [f32], n: usize, residual: Option<&[f32]>) {
        for (r, row) in out.chunks_mut(n.max(1)).enumerate() {
            self.apply(row, residual.map(|res| &res[r * n..(r + 1) * n]));
        }
    }
}

/// The epilogue of one output value from its exact integer sum: `acc as f32 * mult`, then
/// scale, bias, residual and activation, in that order (the interpreter's).
#[inline(always)]
pub(crate) fn epilogue(
    acc: i32,
    mult: f32,
    scale: Option<f32>,
    bias: Option<f32>,
    residual: Option<f32>,
    act: Option<UnaryOp>,
) -> f32 {
    epilogue_f32(acc as f32 * mult, scale, bias, residual, act)
}

/// [`epilogue`] after the product's own scaling.
#[inline(always)]
pub(crate) fn epilogue_f32(
    mut y: f32,
    scale: Option<f32>,
    bias: Option<f32>,
    residual: Option<f32>,
    act: Option<UnaryOp>,
) -> f32 {
    if let Some(s) = scale {
        y *= s;
    }
    if let Some(b) = bias {
        y += b;
    }
    if let Some(r) = residual {
        y += r;
    }
    act.map_or(y, |op| op.apply(y))
}
