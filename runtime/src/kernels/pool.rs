//! Channels-last pooling kernels: one output pixel at a time, vectorized over the channels.
//!
//! Rules:
//! - The definitions are [`crate::ops::pool_max`] and the interpreter's order: taps in row
//!   then column order, padding taps included (`-inf` for max, `+ 0.0` for average, which
//!   matters only for `-0.0`), average divided by the window size; so every level gives the
//!   interpreter's bits.
//! - The AVX2 level is the same Rust compiled with AVX2 enabled (LLVM vectorizes the channel
//!   loops 8 lanes wide); pooling is a pass over memory and gains nothing from hand-written
//!   intrinsics.

use crate::cpu::Isa;
use crate::engine::plan::PoolGeom;
use crate::ops::pool_max;

/// The sizes of one pooling: input `[h, w, c]` per sample, output `[oh, ow, c]`.
#[derive(Clone, Copy, Debug)]
pub struct PoolDims {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Pools one sample: `x` holds `h * w * c` values, `out` `oh * ow * c`.
pub fn pool(isa: Isa, x: &[f32], d: PoolDims, g: &PoolGeom, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Amx
            if is_max_2x2(d, g) && x.len() >= d.h * d.w * d.c && out.len() >= d.oh * d.ow * d.c =>
        {
            // SAFETY: the CPU has AVX-512 (the level is capped at the CPU's); the sizes checked.
            unsafe { max_pool_2x2_avx512(x, d, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => {
            // SAFETY: the caller's level is capped at what the CPU has (`Model::set_isa`).
            unsafe { pool_avx2(x, d, g, out) }
        }
        _ => pool_generic(x, d, g, out),
    }
}

/// 2x2 max pooling with stride 2, no padding, inside the input.
fn is_max_2x2(d: PoolDims, g: &PoolGeom) -> bool {
    g.max && g.kernel == [2, 2] && g.stride == [2, 2] && g.pad == [0, 0] && d.oh * 2 <= d.h && d.ow * 2 <= d.w
}

/// [`max_pool_2x2`] with 16 channels per vector (masked to the channels): per output pixel
/// four loads, the taps in the definition's order, each step `pool_max` (`v` where `v > acc`
/// or `v` is NaN, else `acc`: ordered greater-than or unordered `v`, then a blend), one store.
/// Few channels (LeNet's 6) cost one vector each instead of a scalar loop.
///
/// # Safety
/// The CPU has AVX512-F; `x` holds `h * w * c` values, `out` `oh * ow * c`, and the windows are
/// inside the input (`is_max_2x2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_2x2_avx512(x: &[f32], d: PoolDims, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (c, row) = (d.c, d.w * d.c);
    let max = |acc: __m512, v: __m512| {
        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, acc) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_mask_blend_ps(take, acc, v)
    };
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    // SAFETY: rows 2i, 2i + 1 < h and columns 2j, 2j + 1 < w (caller), channels ch + lane < c
    // (masks); output pixel (i, j) < (oh, ow).
    unsafe {
        for i in 0..d.oh {
            let (r0, r1) = (xp.add(2 * i * row), xp.add((2 * i + 1) * row));
            let o = op.add(i * d.ow * c);
            for j in 0..d.ow {
                let mut ch = 0;
                while ch < c {
                    let lanes = (c - ch).min(16);
                    let m: __mmask16 = if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 };
                    let at = 2 * j * c + ch;
                    let a = _mm512_maskz_loadu_ps(m, r0.add(at));
                    let b = _mm512_maskz_loadu_ps(m, r0.add(at + c));
                    let p = _mm512_maskz_loadu_ps(m, r1.add(at));
                    let q = _mm512_maskz_loadu_ps(m, r1.add(at + c));
                    _mm512_mask_storeu_ps(o.add(j * c + ch), m, max(max(max(a, b), p), q));
                    ch += 16;
                }
            }
        }
    }
}

/// Global average pooling of one sample: `x` holds `pixels * c` values, `out` `c`.
pub fn global_avg(isa: Isa, x: &[f32], c: usize, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => {
            // SAFETY: as in `pool`.
            unsafe { global_avg_avx2(x, c, out) }
        }
        _ => global_avg_generic(x, c, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pool_avx2(x: &[f32], d: PoolDims, g: &PoolGeom, out: &mut [f32]) {
    pool_generic(x, d, g, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn global_avg_avx2(x: &[f32], c: usize, out: &mut [f32]) {
    global_avg_generic(x, c, out)
}

/// 2x2 max pooling with stride 2 and no padding (LeNet's, VGG's): per output value the four
/// taps in the definition's order, `max(max(max(a, b), c), d)` (`max(-inf, a)` is `a`, bit for
/// bit), with no window bookkeeping. Few channels (LeNet-5's 6) leave the generic loop mostly
/// overhead.
#[inline(always)]
fn max_pool_2x2(x: &[f32], d: PoolDims, out: &mut [f32]) {
    let (c, row) = (d.c, d.w * d.c);
    for i in 0..d.oh {
        let r0 = &x[2 * i * row..][..row];
        let r1 = &x[(2 * i + 1) * row..][..row];
        let o = &mut out[i * d.ow * c..][..d.ow * c];
        for (j, oj) in o.chunks_exact_mut(c.max(1)).enumerate() {
            let (a, b) = (&r0[2 * j * c..][..c], &r0[(2 * j + 1) * c..][..c]);
            let (p, q) = (&r1[2 * j * c..][..c], &r1[(2 * j + 1) * c..][..c]);
            for ch in 0..c {
                oj[ch] = pool_max(pool_max(pool_max(a[ch], b[ch]), p[ch]), q[ch]);
            }
        }
    }
}

#[inline(always)]
fn pool_generic(x: &[f32], d: PoolDims, g: &PoolGeom, out: &mut [f32]) {
    if is_max_2x2(d, g) {
        return max_pool_2x2(x, d, out);
    }
    let [kh, kw] = g.kernel;
    let c = d.c;
    let window = (kh * kw) as f32;
    for i in 0..d.oh {
        for j in 0..d.ow {
            let acc = &mut out[(i * d.ow + j) * c..][..c];
            acc.fill(if g.max { f32::NEG_INFINITY } else { 0.0 });
            for u in 0..kh {
                let y = (i * g.stride[0] + u).checked_sub(g.pad[0]).filter(|y| *y < d.h);
                for v in 0..kw {
                    let z = (j * g.stride[1] + v).checked_sub(g.pad[1]).filter(|z| *z < d.w);
                    match (y, z, g.max) {
                        (Some(y), Some(z), true) => {
                            let src = &x[(y * d.w + z) * c..][..c];
                            acc.iter_mut().zip(src).for_each(|(a, v)| *a = pool_max(*a, *v));
                        }
                        (Some(y), Some(z), false) => {
                            let src = &x[(y * d.w + z) * c..][..c];
                            acc.iter_mut().zip(src).for_each(|(a, v)| *a += *v);
                        }
                        // Padding: `max(acc, -inf)` is `acc`; the average adds 0.0.
                        (_, _, true) => {}
                        (_, _, false) => acc.iter_mut().for_each(|a| *a += 0.0),
                    }
                }
            }
            if !g.max {
                acc.iter_mut().for_each(|a| *a /= window);
            }
        }
    }
}

#[inline(always)]
fn global_avg_generic(x: &[f32], c: usize, out: &mut [f32]) {
    let out = &mut out[..c];
    out.fill(0.0);
    let pixels = x.len() / c.max(1);
    for p in x.chunks_exact(c.max(1)) {
        out.iter_mut().zip(p).for_each(|(a, v)| *a += *v);
    }
    let n = pixels as f32;
    out.iter_mut().for_each(|a| *a /= n);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written per output value (channels-last).
    fn reference(x: &[f32], d: PoolDims, g: &PoolGeom) -> Vec<f32> {
        let mut out = vec![0.0; d.oh * d.ow * d.c];
        for (i, j, ch) in (0..d.oh).flat_map(|i| (0..d.ow).flat_map(move |j| (0..d.c).map(move |ch| (i, j, ch)))) {
            let mut acc = if g.max { f32::NEG_INFINITY } else { 0.0 };
            for u in 0..g.kernel[0] {
                for v in 0..g.kernel[1] {
                    let y = (i * g.stride[0] + u).checked_sub(g.pad[0]).filter(|y| *y < d.h);
                    let z = (j * g.stride[1] + v).checked_sub(g.pad[1]).filter(|z| *z < d.w);
                    let val = match (y, z) {
                        (Some(y), Some(z)) => x[(y * d.w + z) * d.c + ch],
                        _ if g.max => f32::NEG_INFINITY,
                        _ => 0.0,
                    };
                    acc = if g.max { pool_max(acc, val) } else { acc + val };
                }
            }
            out[(i * d.ow + j) * d.c + ch] = if g.max { acc } else { acc / (g.kernel[0] * g.kernel[1]) as f32 };
        }
        out
    }

    #[test]
    fn every_level_gives_the_definitions_bits() {
        let (h, w, c) = (7, 6, 19);
        let x: Vec<f32> = (0..h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.25).collect();
        for (max, kernel, stride, pad) in [(true, [3, 3], [2, 2], [1, 1]), (false, [2, 3], [1, 2], [0, 1])] {
            let g = PoolGeom { max, kernel, stride, pad };
            let out_size = |n: usize, a: usize| (n + 2 * pad[a] - kernel[a]) / stride[a] + 1;
            let d = PoolDims { h, w, c, oh: out_size(h, 0), ow: out_size(w, 1) };
            let want = reference(&x, d, &g);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; want.len()];
                pool(isa, &x, d, &g, &mut out);
                let same = out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{} pooling (max: {max}) differs from the definition", isa.name());
            }
        }
    }

    #[test]
    fn max_pooling_2x2_gives_the_definitions_bits() {
        // Odd sizes (the last row and column unread), few and many channels, NaNs, infinities
        // and signed zeros in every tap position (ties keep the earlier value).
        let special = [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, 1.5, -2.0];
        for (h, w, c) in [(7, 9, 6), (4, 4, 1), (6, 5, 19)] {
            let x: Vec<f32> =
                (0..h * w * c)
                    .map(|i| {
                        if i % 3 == 0 {
                            special[(i / 3) % special.len()]
                        } else {
                            ((i * 37 % 101) as f32 - 50.0) * 0.25
                        }
                    })
                    .collect();
            let g = PoolGeom { max: true, kernel: [2, 2], stride: [2, 2], pad: [0, 0] };
            let d = PoolDims { h, w, c, oh: h / 2, ow: w / 2 };
            let want = reference(&x, d, &g);
            check_2x2(&x, d, &g, &want);
        }
        // Every window of four values from NaNs of two payloads, both zeros and 1: the order
        // of the taps decides ties and which NaN wins.
        let vals = [f32::NAN, f32::from_bits(0x7fc0_0001), -0.0, 0.0, 1.0];
        let windows: Vec<[f32; 4]> = (0..625).map(|i| [0, 1, 2, 3].map(|t| vals[i / 5usize.pow(t) % 5])).collect();
        let w = 2 * windows.len();
        let mut x = vec![0.0; 2 * w];
        for (j, win) in windows.iter().enumerate() {
            (x[2 * j], x[2 * j + 1], x[w + 2 * j], x[w + 2 * j + 1]) = (win[0], win[1], win[2], win[3]);
        }
        let g = PoolGeom { max: true, kernel: [2, 2], stride: [2, 2], pad: [0, 0] };
        let d = PoolDims { h: 2, w, c: 1, oh: 1, ow: windows.len() };
        check_2x2(&x, d, &g, &reference(&x, d, &g));
    }

    /// Every level's pooling of `x` equals `want` bit for bit.
    fn check_2x2(x: &[f32], d: PoolDims, g: &PoolGeom, want: &[f32]) {
        let PoolDims { h, w, c, .. } = d;
        for isa in Isa::available() {
            let mut out = vec![7.0; want.len()];
            pool(isa, x, d, g, &mut out);
            let same = out.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{} 2x2 max pooling of {h}x{w}x{c} differs from the definition", isa.name());
        }
    }

    #[test]
    fn global_average_sums_pixels_in_order_at_every_level() {
        let (pixels, c) = (13, 21);
        let x: Vec<f32> = (0..pixels * c).map(|i| (i as f32 * 0.731).sin() * 1e3).collect();
        let want: Vec<f32> =
            (0..c).map(|ch| (0..pixels).fold(0.0f32, |a, p| a + x[p * c + ch]) / pixels as f32).collect();
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; c];
            global_avg(isa, &x, c, &mut out);
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{}",
                isa.name()
            );
        }
    }
}
