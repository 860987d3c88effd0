//! The AVX-512 planar f32 convolution (`kernels::planar`): 16 output pixels of a row in the
//! lanes, one accumulator per output channel (`O <= 16`, a const so they stay in registers),
//! weights broadcast from memory into the fused multiply-adds, the epilogue in registers
//! (the engine's order, each step rounded in f32), then the strip's 16 x O results re-read
//! pixel-major from L1 by gathers and stored contiguously to the channels-last output.

use std::arch::x86_64::*;

use crate::kernels::planar::PlanarCall;
use crate::ops::UnaryOp;

/// Writes rows `c.rows` of `out`.
///
/// # Safety
/// The CPU has AVX512-F; as `kernels::planar::conv`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn conv(c: &PlanarCall<'_>, out: *mut f32) {
    macro_rules! by_channels {
        ($($o:literal),*) => {
            match c.o {
                // SAFETY: forwarded; `o` is the const.
                $($o => unsafe { rows::<$o>(c, out) },)*
                _ => {}
            }
        };
    }
    by_channels!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
}

#[target_feature(enable = "avx512f")]
unsafe fn rows<const O: usize>(c: &PlanarCall<'_>, o: *mut f32) {
    let (taps, plane) = (c.kh * c.kw, c.hp * c.wp);
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(O as i32),
    );
    let (x, w) = (c.x.as_ptr(), c.w.as_ptr());
    // The strip's 16 x O results, channel-major, and the gather indices that read them back
    // pixel-major: output float q of the strip is channel q % O of pixel q / O.
    let mut tmp = [[0f32; 16]; O];
    let mut back = [_mm512_setzero_si512(); O];
    for (j, b) in back.iter_mut().enumerate() {
        let mut v = [0i32; 16];
        for (l, e) in v.iter_mut().enumerate() {
            let q = 16 * j + l;
            *e = ((q % O) * 16 + q / O) as i32;
        }
        // SAFETY: 16 values.
        *b = unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
    }
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    // SAFETY (every access): rows oy + u * dil < hp and columns ox0 + lane + v * dil < wp of
    // each plane (masked lanes < ow - ox0), weights o * c * taps, outputs and residual rows
    // < rows.end of ow * O floats (`sizes_fit`, checked by the caller).
    unsafe {
        for oy in c.rows.clone() {
            let mut ox0 = 0;
            while ox0 < c.ow {
                let lanes = (c.ow - ox0).min(16);
                let m: __mmask16 = if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 };
                let mut acc = [zero; O];
                for ci in 0..c.c {
                    for u in 0..c.kh {
                        let row = x.add(ci * plane + (oy + u * c.dil[0]) * c.wp + ox0);
                        let wr = w.add(ci * taps + u * c.kw);
                        for v in 0..c.kw {
                            let xv = _mm512_maskz_loadu_ps(m, row.add(v * c.dil[1]));
                            for (oc, a) in acc.iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(xv, _mm512_set1_ps(*wr.add(oc * c.c * taps + v)), *a);
                            }
                        }
                    }
                }
                let at = (oy * c.ow + ox0) * O;
                for (oc, a) in acc.iter().enumerate() {
                    let mut y = *a;
                    if let Some(v) = c.epi.mult {
                        y = _mm512_mul_ps(y, _mm512_set1_ps(*v.get_unchecked(oc)));
                    }
                    if let Some(v) = c.epi.scale {
                        y = _mm512_mul_ps(y, _mm512_set1_ps(*v.get_unchecked(oc)));
                    }
                    if let Some(v) = c.epi.bias {
                        y = _mm512_add_ps(y, _mm512_set1_ps(*v.get_unchecked(oc)));
                    }
                    if let Some(r) = c.residual {
                        y = _mm512_add_ps(
                            y,
                            _mm512_mask_i32gather_ps::<4>(zero, m, idx, r.as_ptr().add(at + oc).cast()),
                        );
                    }
                    y = match c.epi.act {
                        None => y,
                        // `x < 0 ? 0 : x`: max returns its second operand for NaN and for two
                        // zeros, so NaN and -0.0 pass; `y > 6 ? 6 : y` likewise by min.
                        Some(UnaryOp::Relu) => _mm512_max_ps(zero, y),
                        Some(UnaryOp::Relu6) => _mm512_min_ps(six, _mm512_max_ps(zero, y)),
                        Some(op) => {
                            let mut t = [0f32; 16];
                            _mm512_storeu_ps(t.as_mut_ptr(), y);
                            t.iter_mut().for_each(|v| *v = op.apply(*v));
                            _mm512_loadu_ps(t.as_ptr())
                        }
                    };
                    _mm512_storeu_ps(tmp[oc].as_mut_ptr(), y);
                }
                // Pixel-major: O vectors of 16 floats (the last ones masked to the strip's
                // lanes x O floats), each gathered from the channel-major block in L1.
                let total = lanes * O;
                for (j, b) in back.iter().enumerate() {
                    let left = total.saturating_sub(16 * j);
                    if left == 0 {
                        break;
                    }
                    let mj: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                    let v = _mm512_mask_i32gather_ps::<4>(zero, mj, *b, tmp.as_ptr().cast());
                    _mm512_mask_storeu_ps(o.add(at + 16 * j), mj, v);
                }
                ox0 += 16;
            }
        }
    }
}
