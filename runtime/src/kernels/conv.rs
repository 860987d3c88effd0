//! Channels-last convolution kernels: the gathers that feed the matrix-product kernels
//! (implicit GEMM over blocks of output pixels) and the depthwise kernels.
//!
//! Rules:
//! - Input is one sample, `[H, W, C]` rows of `stride` values per pixel (int8 rows are padded
//!   to their alignment); output pixels are numbered `i * ow + j`; a window tap `(u, v)` reads
//!   input pixel `(i * sh + u * dh - ph, j * sw + v * dw - pw)`, zero outside the image.
//! - A gathered row holds, for each tap in `(u, v)` order, the group's `cg` channels: the
//!   weight order `(u, v, c)` the engine re-lays weights into. The int8 gather also returns
//!   each row's code sum (the tq2 kernel's correction term).
//! - Depthwise (one input and one output channel per group): integer sums are exact, then the
//!   per-channel epilogue in the interpreter's order ([`ChannelEpilogue`]). The AVX2 level is
//!   the same Rust compiled with AVX2 (LLVM vectorizes the channel loops).

use std::ops::Range;

use super::ChannelEpilogue;
use crate::cpu::Isa;

/// A convolution window over one sample.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// The input row tap row `u` of output row `i` reads, if inside the image.
    #[inline(always)]
    pub fn row(&self, i: usize, u: usize) -> Option<usize> {
        (i * self.stride[0] + u * self.dil[0]).checked_sub(self.pad[0]).filter(|y| *y < self.h)
    }

    /// The input column tap column `v` of output column `j` reads, if inside the image.
    #[inline(always)]
    pub fn col(&self, j: usize, v: usize) -> Option<usize> {
        (j * self.stride[1] + v * self.dil[1]).checked_sub(self.pad[1]).filter(|x| *x < self.w)
    }

    /// Calls `f(tap, input pixel)` for every tap of output pixel `p` in `(u, v)` order, with
    /// `None` for a tap outside the image.
    #[inline(always)]
    pub fn for_taps(&self, p: usize, mut f: impl FnMut(usize, Option<usize>)) {
        let (i, j) = (p / self.ow, p % self.ow);
        for u in 0..self.kh {
            let y = self.row(i, u);
            for v in 0..self.kw {
                f(u * self.kw + v, y.zip(self.col(j, v)).map(|(y, x)| y * self.w + x));
            }
        }
    }

    pub fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// Gathers output pixels `pixels` of one sample's channels `c0 .. c0 + cg` into rows of `kp`
/// int8 values (`cols`, zero past `taps * cg`) and their sums (`xsum`).
#[allow(clippy::too_many_arguments)]
pub fn im2col_i8(
    x: &[i8],
    stride: usize,
    c0: usize,
    cg: usize,
    win: &Window,
    pixels: Range<usize>,
    cols: &mut [i8],
    kp: usize,
    xsum: &mut [i32],
) {
    for (r, p) in pixels.enumerate() {
        let row = &mut cols[r * kp..(r + 1) * kp];
        win.for_taps(p, |t, src| {
            let dst = &mut row[t * cg..(t + 1) * cg];
            match src {
                Some(src) => dst.copy_from_slice(&x[src * stride + c0..][..cg]),
                None => dst.fill(0),
            }
        });
        row[win.taps() * cg..].fill(0);
        xsum[r] = row.iter().map(|v| i32::from(*v)).sum();
    }
}

/// [`im2col_i8`] for f32 values (rows of exactly `taps * cg`), or int8 codes as f32.
#[allow(clippy::too_many_arguments)]
pub fn im2col_f32<T: Copy + Into<f32>>(
    x: &[T],
    stride: usize,
    c0: usize,
    cg: usize,
    win: &Window,
    pixels: Range<usize>,
    cols: &mut [f32],
) {
    let k = win.taps() * cg;
    for (r, p) in pixels.enumerate() {
        let row = &mut cols[r * k..(r + 1) * k];
        win.for_taps(p, |t, src| {
            let dst = &mut row[t * cg..(t + 1) * cg];
            match src {
                Some(src) => dst.iter_mut().zip(&x[src * stride + c0..][..cg]).for_each(|(d, s)| *d = (*s).into()),
                None => dst.fill(0.0),
            }
        });
    }
}

/// Depthwise convolution of one int8 sample: `x` rows of `stride` codes, `w` the codes as
/// `[tap][c]`; output pixels `pixels` into `out` (`c` values per pixel, indexed from pixel 0),
/// residual likewise.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_i8(
    isa: Isa,
    x: &[i8],
    stride: usize,
    w: &[i8],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's level is capped at what the CPU has (`Model::set_isa`).
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { depthwise_i8_avx2(x, stride, w, c, win, pixels, epi, residual, out) },
        _ => depthwise_i8_generic(x, stride, w, c, win, pixels, epi, residual, out),
    }
}

/// [`depthwise_i8`] for f32 values and weights (mult: the weight's scale, if any).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_f32(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `depthwise_i8`.
        Isa::Avx2 | Isa::Avx512Vnni => unsafe { depthwise_f32_avx2(x, w, c, win, pixels, epi, residual, out) },
        _ => depthwise_f32_generic(x, w, c, win, pixels, epi, residual, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn depthwise_i8_avx2(
    x: &[i8],
    stride: usize,
    w: &[i8],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    depthwise_i8_generic(x, stride, w, c, win, pixels, epi, residual, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn depthwise_f32_avx2(
    x: &[f32],
    w: &[f32],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    depthwise_f32_generic(x, w, c, win, pixels, epi, residual, out)
}

/// Channels per pass of the depthwise kernels: the sums stay in registers.
const DW_CHUNK: usize = 64;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_i8_generic(
    x: &[i8],
    stride: usize,
    w: &[i8],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let mut acc = [0i32; DW_CHUNK];
    for p in pixels {
        let y = &mut out[p * c..(p + 1) * c];
        for c0 in (0..c).step_by(DW_CHUNK) {
            let n = (c - c0).min(DW_CHUNK);
            let acc = &mut acc[..n];
            acc.fill(0);
            win.for_taps(p, |t, src| {
                if let Some(src) = src {
                    let xs = &x[src * stride + c0..][..n];
                    let ws = &w[t * c + c0..][..n];
                    for ((a, xv), wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += i32::from(*xv) * i32::from(*wv);
                    }
                }
            });
            y[c0..c0 + n].iter_mut().zip(acc.iter()).for_each(|(d, a)| *d = *a as f32);
        }
        epi.apply(y, residual.map(|r| &r[p * c..(p + 1) * c]));
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_f32_generic(
    x: &[f32],
    w: &[f32],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let mut acc = [0f32; DW_CHUNK];
    for p in pixels {
        let y = &mut out[p * c..(p + 1) * c];
        for c0 in (0..c).step_by(DW_CHUNK) {
            let n = (c - c0).min(DW_CHUNK);
            let acc = &mut acc[..n];
            acc.fill(0.0);
            win.for_taps(p, |t, src| {
                if let Some(src) = src {
                    let xs = &x[src * c + c0..][..n];
                    let ws = &w[t * c + c0..][..n];
                    for ((a, xv), wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += xv * wv;
                    }
                }
            });
            y[c0..c0 + n].copy_from_slice(acc);
        }
        epi.apply(y, residual.map(|r| &r[p * c..(p + 1) * c]));
    }
}
