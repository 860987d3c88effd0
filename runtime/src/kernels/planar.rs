//! The f32 convolution of a few input channels with output pixels in the lanes: first layers
//! (grayscale or RGB input, a handful of output channels), where a kernel with channels in the
//! lanes runs mostly empty (LeNet's 1 -> 6 channels fills 6 of 16 lanes) and a gather copies
//! every pixel 25 times.
//!
//! Rules:
//! - Input: the sample's channels as zero-padded planes (`[c][hp][wp]`, the engine transposes
//!   and pads once per sample); stride 1, any dilation. Output: channels-last rows
//!   (`[oh][ow][o]`), as every other convolution writes.
//! - Weights `[o][c][kh][kw]` (the stored order). Each output is `sum w * x` over `(c, u, v)`
//!   in that order, in f32 with fused multiply-adds (the f32 path's contract: within rounding
//!   of the interpreter's f64 sums), then [`ChannelEpilogue`] in the engine's order.
//! - [`Isa::Avx512Vnni`] and above: 16 output pixels of a row per vector, up to 16 channels of
//!   accumulators, weights broadcast from memory into the multiply-adds, the epilogue in
//!   registers, a scatter to the channels-last output. Other levels run the portable loop.

use std::ops::Range;

use super::ChannelEpilogue;
use crate::cpu::Isa;

/// One sample's convolution over output rows `rows`.
#[derive(Clone, Debug)]
pub struct PlanarCall<'a> {
    /// `c` planes of `hp * wp` floats (padded).
    pub x: &'a [f32],
    pub c: usize,
    pub hp: usize,
    pub wp: usize,
    /// `[o][c][kh][kw]`.
    pub w: &'a [f32],
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub dil: [usize; 2],
    pub ow: usize,
    pub rows: Range<usize>,
    pub epi: ChannelEpilogue<'a>,
    /// The sample's residual, `[oh][ow][o]`.
    pub residual: Option<&'a [f32]>,
}

/// Output channels a planar convolution takes at most (one accumulator per channel).
pub const MAX_CHANNELS: usize = 16;

/// Whether a convolution of `c` input channels and `o` output channels with these strides and
/// groups runs on this kernel.
pub fn fits(c: usize, o: usize, stride: [usize; 2], groups: usize) -> bool {
    (1..=4).contains(&c) && (1..=MAX_CHANNELS).contains(&o) && stride == [1, 1] && groups == 1
}

/// Which implementation runs at `isa`, as the plan prints it.
pub fn kernel_name(isa: Isa) -> &'static str {
    if isa >= Isa::Avx512Vnni { "avx512, 16 output pixels per vector" } else { "portable" }
}

/// Whether an output of `out_len` floats and the call's buffers hold what [`conv`] reads and
/// writes.
pub fn sizes_fit(c: &PlanarCall<'_>, out_len: usize) -> bool {
    let last_row = c.rows.end.saturating_sub(1) + (c.kh.max(1) - 1) * c.dil[0];
    c.x.len() >= c.c * c.hp * c.wp
        && c.w.len() >= c.o * c.c * c.kh * c.kw
        && out_len >= c.rows.end * c.ow * c.o
        && c.residual.is_none_or(|r| r.len() >= c.rows.end * c.ow * c.o)
        && (c.rows.is_empty() || last_row < c.hp)
        && c.ow + (c.kw.max(1) - 1) * c.dil[1] <= c.wp
        && [c.epi.mult, c.epi.scale, c.epi.bias].iter().flatten().all(|v| v.len() >= c.o)
        && (1..=MAX_CHANNELS).contains(&c.o)
}

/// Writes rows `c.rows` (only those) of the sample's output at `out` (`[oh][ow][o]`) with the
/// kernel of level `isa`.
///
/// # Safety
/// The CPU runs `isa`; [`sizes_fit`]`(c, len)` for an output of `len` floats at `out`, of which
/// no other thread touches rows `c.rows` during the call.
pub unsafe fn conv(isa: Isa, c: &PlanarCall<'_>, out: *mut f32) {
    // SAFETY: forwarded from the caller.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx512Vnni {
            return super::avx512::planar::conv(c, out);
        }
        let _ = isa;
        generic(c, out)
    }
}

/// The portable definition.
///
/// # Safety
/// As [`conv`].
unsafe fn generic(c: &PlanarCall<'_>, out: *mut f32) {
    let taps = c.kh * c.kw;
    let mut y = [0f32; MAX_CHANNELS];
    let y = &mut y[..c.o];
    for oy in c.rows.clone() {
        for ox in 0..c.ow {
            for (oc, acc) in y.iter_mut().enumerate() {
                let mut s = 0f32;
                for ci in 0..c.c {
                    let plane = &c.x[ci * c.hp * c.wp..];
                    let w = &c.w[(oc * c.c + ci) * taps..];
                    for u in 0..c.kh {
                        let row = &plane[(oy + u * c.dil[0]) * c.wp + ox..];
                        for v in 0..c.kw {
                            s = row[v * c.dil[1]].mul_add(w[u * c.kw + v], s);
                        }
                    }
                }
                *acc = s;
            }
            let at = (oy * c.ow + ox) * c.o;
            c.epi.apply(y, c.residual.map(|r| &r[at..at + c.o]));
            // SAFETY: pixel (oy, ox) of a row this call writes (caller).
            unsafe { std::ptr::copy_nonoverlapping(y.as_ptr(), out.add(at), c.o) };
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ops::UnaryOp;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every level against the f64 definition (within f32 rounding of the sum), and the
        /// levels against each other bit for bit (the same multiply-adds in the same order);
        /// rows outside the call stay untouched.
        #[test]
        fn every_level_is_the_convolution(
            c in 1usize..5,
            o in 1usize..17,
            (kh, kw) in (1usize..6, 1usize..6),
            (h, w) in (1usize..12, 1usize..40),
            pad in 0usize..3,
            dil in 1usize..3,
            act in prop::sample::select(vec![None, Some(UnaryOp::Relu), Some(UnaryOp::Relu6), Some(UnaryOp::Gelu)]),
            vectors in any::<(bool, bool, bool, bool)>(),
            seed in any::<u32>(),
        ) {
            let (hp, wp) = (h + 2 * pad, w + 2 * pad);
            prop_assume!(hp > (kh - 1) * dil && wp > (kw - 1) * dil);
            let (oh, ow) = (hp - (kh - 1) * dil, wp - (kw - 1) * dil);
            let val = |i: usize| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 250.0 - 4.0;
            let mut x = vec![0f32; c * hp * wp];
            for ci in 0..c {
                for y in 0..h {
                    for z in 0..w {
                        x[ci * hp * wp + (y + pad) * wp + z + pad] = val(ci * 977 + y * 31 + z);
                    }
                }
            }
            let wts: Vec<f32> = (0..o * c * kh * kw).map(|i| val(i + 5000) / 4.0).collect();
            let vec_of = |base: usize| (0..o).map(|i| val(base + i)).collect::<Vec<f32>>();
            let (mult, scale, bias) = (vec_of(9000), vec_of(9100), vec_of(9200));
            let residual: Vec<f32> = (0..oh * ow * o).map(|i| val(i + 12000)).collect();
            let (m, s, b, r) = vectors;
            let epi = ChannelEpilogue {
                mult: m.then_some(&mult[..]),
                scale: s.then_some(&scale[..]),
                bias: b.then_some(&bias[..]),
                act,
            };
            let rows = oh / 3..oh;
            let call = PlanarCall {
                x: &x, c, hp, wp, w: &wts, o, kh, kw, dil: [dil, dil], ow, rows: rows.clone(), epi,
                residual: r.then_some(&residual[..]),
            };
            prop_assert!(sizes_fit(&call, oh * ow * o));
            let mut results = Vec::new();
            for isa in Isa::available() {
                let mut out = vec![f32::from_bits(0x7fc0_beef); oh * ow * o];
                // SAFETY: the machine runs `isa`; the sizes fit (asserted).
                unsafe { conv(isa, &call, out.as_mut_ptr()) };
                results.push((isa, out));
            }
            let (_, first) = &results[0];
            for (isa, out) in &results {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(out), bits(first), "{} against the portable loop", isa);
            }
            for oy in 0..oh {
                for ox in 0..ow {
                    for oc in 0..o {
                        let got = first[(oy * ow + ox) * o + oc];
                        if !rows.contains(&oy) {
                            prop_assert_eq!(got.to_bits(), 0x7fc0_beef, "row {} written", oy);
                            continue;
                        }
                        let (mut sum, mut mag) = (0f64, 0f64);
                        for ci in 0..c {
                            for u in 0..kh {
                                for v in 0..kw {
                                    let xv = f64::from(x[ci * hp * wp + (oy + u * dil) * wp + ox + v * dil]);
                                    let wv = f64::from(wts[((oc * c + ci) * kh + u) * kw + v]);
                                    sum += xv * wv;
                                    mag += (xv * wv).abs();
                                }
                            }
                        }
                        // The epilogue on the f64 sum rounded to f32, as the interpreter does.
                        let mut y = [sum as f32];
                        let at = (oy * ow + ox) * o + oc;
                        fn one(v: Option<&[f32]>, oc: usize) -> Option<&[f32]> {
                            v.map(|v| &v[oc..oc + 1])
                        }
                        ChannelEpilogue { mult: one(epi.mult, oc), scale: one(epi.scale, oc), bias: one(epi.bias, oc), act }
                            .apply(&mut y, r.then(|| &residual[at..at + 1]));
                        let scale_of = |v: &Option<&[f32]>| v.map_or(1.0, |v| v[oc].abs());
                        let bound = 1e-5 * (mag as f32 * scale_of(&epi.mult) * scale_of(&epi.scale) + 1.0) * 4.0;
                        prop_assert!((got - y[0]).abs() <= bound, "({}, {}, {}): {} vs {}", oy, ox, oc, got, y[0]);
                    }
                }
            }
        }
    }
}
