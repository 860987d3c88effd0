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
        Isa::Avx2 | Isa::Avx512Vnni => {
            // SAFETY: the caller's level is capped at what the CPU has (`Model::set_isa`).
            unsafe { pool_avx2(x, d, g, out) }
        }
        _ => pool_generic(x, d, g, out),
    }
}

/// Global average pooling of one sample: `x` holds `pixels * c` values, `out` `c`.
pub fn global_avg(isa: Isa, x: &[f32], c: usize, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => {
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

#[inline(always)]
fn pool_generic(x: &[f32], d: PoolDims, g: &PoolGeom, out: &mut [f32]) {
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
