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
//! - Drivers: [`tq2`] (the int8 x tq2 matrix product of `Step::Gemm`), [`conv`] (channels-last
//!   convolutions: direct/implicit-GEMM int8 and f32, depthwise), [`pool`] (channels-last
//!   pooling), [`sgemm`] (the f32 GEMM of matrix products, on the `gemm` crate).

pub mod conv;
pub mod pool;
pub mod sgemm;
pub mod tq2;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::ops::UnaryOp;

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
