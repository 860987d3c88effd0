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
pub use super::contract::conv::{DepthwiseValue, Window};
use crate::cpu::Isa;

/// Gathers the window of output pixel `p` (channels `c0 .. c0 + cg` of rows `stride` apart)
/// into `row` (`taps * cg` values in `(u, v, c)` order, `zero` outside the image), converting
/// each value with `f` (`zero` is `f` of a zero input). Where a window row's pixels are
/// contiguous in memory (no dilation, all channels of unpadded rows) its taps are one run.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gather<T: Copy, U: Copy>(
    x: &[T],
    stride: usize,
    c0: usize,
    cg: usize,
    win: &Window,
    p: usize,
    row: &mut [U],
    zero: U,
    f: impl Fn(T) -> U,
) {
    let (i, j) = (p / win.ow, p % win.ow);
    let span = win.kw * cg;
    let contiguous = win.dil[1] == 1 && stride == cg;
    for u in 0..win.kh {
        let dst = &mut row[u * span..(u + 1) * span];
        let Some(y) = win.row(i, u) else {
            dst.fill(zero);
            continue;
        };
        if contiguous {
            // Taps v0 .. v1 read input columns x0 + v0 .. x0 + v1.
            let x0 = (j * win.stride[1]) as isize - win.pad[1] as isize;
            let v0 = (-x0).clamp(0, win.kw as isize) as usize;
            let v1 = (win.w as isize - x0).clamp(v0 as isize, win.kw as isize) as usize;
            dst[..v0 * cg].fill(zero);
            dst[v1 * cg..].fill(zero);
            if v1 > v0 {
                let at = (y * win.w + (x0 + v0 as isize) as usize) * stride + c0;
                let src = &x[at..at + (v1 - v0) * cg];
                dst[v0 * cg..v1 * cg].iter_mut().zip(src).for_each(|(d, s)| *d = f(*s));
            }
        } else {
            for v in 0..win.kw {
                let d = &mut dst[v * cg..(v + 1) * cg];
                match win.col(j, v) {
                    Some(xc) => {
                        d.iter_mut().zip(&x[(y * win.w + xc) * stride + c0..][..cg]).for_each(|(d, s)| *d = f(*s))
                    }
                    None => d.fill(zero),
                }
            }
        }
    }
}

/// Gathers output pixels `pixels` of one sample's channels `c0 .. c0 + cg` into rows of `kp`
/// int8 values (`cols`, zero past `taps * cg`) and their sums (`xsum`); with `flip`, the
/// bytes are stored as `x ^ 0x80` (`x + 128` unsigned, what `vpdpbusd` multiplies, in the
/// same pass as the gather) and `xsum` is left alone (that kernel corrects with the weights'
/// sums instead).
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
    flip: bool,
) {
    for (r, p) in pixels.enumerate() {
        let row = &mut cols[r * kp..(r + 1) * kp];
        if flip {
            gather(x, stride, c0, cg, win, p, row, i8::MIN, |v| v ^ i8::MIN);
            row[win.taps() * cg..].fill(0);
        } else {
            gather(x, stride, c0, cg, win, p, row, 0, |v| v);
            row[win.taps() * cg..].fill(0);
            xsum[r] = row.iter().map(|v| i32::from(*v)).sum();
        }
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
        gather(x, stride, c0, cg, win, p, &mut cols[r * k..(r + 1) * k], 0.0, |v| v.into());
    }
}

/// A depthwise element with a kernel per instruction set.
#[cfg(target_arch = "x86_64")]
pub(crate) trait DepthwiseLanes: super::avx512::depthwise::Lanes {}
#[cfg(target_arch = "x86_64")]
impl<T: super::avx512::depthwise::Lanes> DepthwiseLanes for T {}
/// A depthwise element with a kernel per instruction set.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait DepthwiseLanes: DepthwiseValue {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: DepthwiseValue> DepthwiseLanes for T {}

/// Depthwise convolution of one sample: `x` rows of `stride` values per input pixel (`c`
/// channels, then padding), `w` the weight as `[tap][c]` (codes for int8 input); output
/// pixels `pixels` into `out` (`c` values per pixel, indexed from pixel 0), residual likewise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise<T: DepthwiseLanes>(
    isa: Isa,
    x: &[T],
    stride: usize,
    w: &[T],
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
        Isa::Avx512Vnni | Isa::Amx => unsafe {
            super::avx512::depthwise::depthwise(x, stride, w, c, win, pixels, epi, residual, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { depthwise_avx2(x, stride, w, c, win, pixels, epi, residual, out) },
        _ => depthwise_generic(x, stride, w, c, win, pixels, epi, residual, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn depthwise_avx2<T: DepthwiseValue>(
    x: &[T],
    stride: usize,
    w: &[T],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    depthwise_generic(x, stride, w, c, win, pixels, epi, residual, out)
}

/// Channels per pass of the depthwise kernel: the sums stay in registers.
const DW_CHUNK: usize = 64;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise_generic<T: DepthwiseValue>(
    x: &[T],
    stride: usize,
    w: &[T],
    c: usize,
    win: &Window,
    pixels: Range<usize>,
    epi: &ChannelEpilogue<'_>,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let mut acc = [T::Acc::default(); DW_CHUNK];
    for p in pixels {
        let y = &mut out[p * c..(p + 1) * c];
        for c0 in (0..c).step_by(DW_CHUNK) {
            let n = (c - c0).min(DW_CHUNK);
            let acc = &mut acc[..n];
            acc.fill(T::Acc::default());
            win.for_taps(p, |t, src| {
                if let Some(src) = src {
                    let xs = &x[src * stride + c0..][..n];
                    let ws = &w[t * c + c0..][..n];
                    for ((a, xv), wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += xv.mul(*wv);
                    }
                }
            });
            y[c0..c0 + n].iter_mut().zip(acc.iter()).for_each(|(d, a)| *d = T::to_f32(*a));
        }
        epi.apply(y, residual.map(|r| &r[p * c..(p + 1) * c]));
    }
}
