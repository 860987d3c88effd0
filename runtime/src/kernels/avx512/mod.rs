//! AVX-512 microkernels (x86-64 with AVX512-F/BW/VL and VNNI): the tq2 matrix product on
//! `vpdpbusd`, the convolution product over int8 weight panels ([`conv`]) and over f32 weight
//! panels ([`fconv`]), the depthwise convolution ([`depthwise`]); gathers and pooling run the
//! AVX2 code at this level (see `kernels::conv`).

pub(crate) mod conv;
pub(crate) mod depthwise;
pub(crate) mod fconv;
pub(crate) mod planar;
pub(crate) mod tq2;

use std::arch::x86_64::*;

use crate::ops::UnaryOp;

/// The frame of the full 6 x 4 register tiles in assembly (`fconv::full_tile`,
/// `conv::full_tile*`): the 24 accumulators `zmm0 ..= zmm23` (row `r`, block `j` in
/// `zmm(4r + j)`) zeroed, the caller's reduction loop, the accumulators stored to the 24
/// vectors at operand `o`; every zmm register is clobbered (`zmm24 ..= zmm31` are the loop's).
macro_rules! tile_asm {
    ($($body:expr),* ; $($operands:tt)*) => {
        std::arch::asm!(
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            "vpxord zmm16, zmm16, zmm16",
            "vpxord zmm17, zmm17, zmm17",
            "vpxord zmm18, zmm18, zmm18",
            "vpxord zmm19, zmm19, zmm19",
            "vpxord zmm20, zmm20, zmm20",
            "vpxord zmm21, zmm21, zmm21",
            "vpxord zmm22, zmm22, zmm22",
            "vpxord zmm23, zmm23, zmm23",
            $($body,)*
            "vmovups zmmword ptr [{o} + 0], zmm0",
            "vmovups zmmword ptr [{o} + 64], zmm1",
            "vmovups zmmword ptr [{o} + 128], zmm2",
            "vmovups zmmword ptr [{o} + 192], zmm3",
            "vmovups zmmword ptr [{o} + 256], zmm4",
            "vmovups zmmword ptr [{o} + 320], zmm5",
            "vmovups zmmword ptr [{o} + 384], zmm6",
            "vmovups zmmword ptr [{o} + 448], zmm7",
            "vmovups zmmword ptr [{o} + 512], zmm8",
            "vmovups zmmword ptr [{o} + 576], zmm9",
            "vmovups zmmword ptr [{o} + 640], zmm10",
            "vmovups zmmword ptr [{o} + 704], zmm11",
            "vmovups zmmword ptr [{o} + 768], zmm12",
            "vmovups zmmword ptr [{o} + 832], zmm13",
            "vmovups zmmword ptr [{o} + 896], zmm14",
            "vmovups zmmword ptr [{o} + 960], zmm15",
            "vmovups zmmword ptr [{o} + 1024], zmm16",
            "vmovups zmmword ptr [{o} + 1088], zmm17",
            "vmovups zmmword ptr [{o} + 1152], zmm18",
            "vmovups zmmword ptr [{o} + 1216], zmm19",
            "vmovups zmmword ptr [{o} + 1280], zmm20",
            "vmovups zmmword ptr [{o} + 1344], zmm21",
            "vmovups zmmword ptr [{o} + 1408], zmm22",
            "vmovups zmmword ptr [{o} + 1472], zmm23",
            $($operands)*
            out("zmm0") _,
            out("zmm1") _,
            out("zmm2") _,
            out("zmm3") _,
            out("zmm4") _,
            out("zmm5") _,
            out("zmm6") _,
            out("zmm7") _,
            out("zmm8") _,
            out("zmm9") _,
            out("zmm10") _,
            out("zmm11") _,
            out("zmm12") _,
            out("zmm13") _,
            out("zmm14") _,
            out("zmm15") _,
            out("zmm16") _,
            out("zmm17") _,
            out("zmm18") _,
            out("zmm19") _,
            out("zmm20") _,
            out("zmm21") _,
            out("zmm22") _,
            out("zmm23") _,
            out("zmm24") _,
            out("zmm25") _,
            out("zmm26") _,
            out("zmm27") _,
            out("zmm28") _,
            out("zmm29") _,
            out("zmm30") _,
            out("zmm31") _,
            options(nostack),
        )
    };
}
pub(crate) use tile_asm;

/// The lanes of 16-channel block `block` that are real channels of `n` (all 16 but for the
/// last block).
#[inline(always)]
pub(crate) fn block_mask(n: usize, block: usize) -> __mmask16 {
    let lanes = (n - block * 16).min(16);
    if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 }
}

/// The shared tail of the products' epilogues on 16 channels `ch .. ch + 16` of one output
/// row (lanes outside `m` untouched): `y * scale`, `+ bias`, `+ residual` (the row's, when
/// not null), activation, then a masked store at `out + ch`. Each step rounds in f32, no
/// fused multiply-add: the portable epilogue's bits (sigmoid and SiLU on [`exp16`], which is
/// `ops::exp` in 16 lanes).
///
/// # Safety
/// The CPU has AVX512-F; the lanes of `m` are valid channels of `scale`, `bias`, the residual
/// row and the output row.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tail16(
    mut y: __m512,
    m: __mmask16,
    ch: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    residual: *const f32,
    act: Option<UnaryOp>,
    out: *mut f32,
) {
    // SAFETY: masked loads and stores touch only the lanes of `m` (caller).
    unsafe {
        let load = |v: &[f32]| _mm512_maskz_loadu_ps(m, v.as_ptr().add(ch));
        if let Some(s) = scale {
            y = _mm512_mul_ps(y, load(s));
        }
        if let Some(b) = bias {
            y = _mm512_add_ps(y, load(b));
        }
        if !residual.is_null() {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, residual.add(ch)));
        }
        y = act16(y, act);
        _mm512_mask_storeu_ps(out.add(ch), m, y);
    }
}

/// An activation (any unary op) on 16 lanes with [`UnaryOp::apply`]'s bits: relu and relu6 by
/// compares, sigmoid, SiLU, `exp`, both GELUs on [`exp16`] with the scalar definitions' steps
/// (tested), `sqrt` and negation as the IEEE instructions; tanh lane by lane.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn act16(y: __m512, act: Option<UnaryOp>) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let zero = _mm512_setzero_ps();
    match act {
        None => y,
        Some(op @ (UnaryOp::Relu | UnaryOp::Relu6)) => {
            let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, zero), y, zero);
            if op == UnaryOp::Relu6 {
                let six = _mm512_set1_ps(6.0);
                _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, six), y, six)
            } else {
                y
            }
        }
        Some(UnaryOp::Sigmoid) => _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, y)))),
        Some(UnaryOp::Silu) => _mm512_div_ps(y, _mm512_add_ps(one, exp16(_mm512_sub_ps(zero, y)))),
        Some(UnaryOp::Exp) => exp16(y),
        Some(UnaryOp::Sqrt) => _mm512_sqrt_ps(y),
        Some(UnaryOp::Neg) => _mm512_sub_ps(_mm512_set1_ps(-0.0), y),
        Some(UnaryOp::Gelu) => gelu16(y),
        Some(UnaryOp::GeluTanh) => {
            use crate::ops::{GELU_TANH_CUBIC, GELU_TANH_SCALE};
            let cube = _mm512_mul_ps(_mm512_mul_ps(y, y), y);
            let u = _mm512_mul_ps(
                _mm512_set1_ps(GELU_TANH_SCALE),
                _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(GELU_TANH_CUBIC), cube)),
            );
            let g = _mm512_div_ps(y, _mm512_add_ps(one, exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0), u))));
            // -inf / inf is NaN: the definition's limit is -0.0.
            _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(y, _mm512_set1_ps(f32::NEG_INFINITY)),
                g,
                _mm512_set1_ps(-0.0),
            )
        }
        Some(op @ UnaryOp::Tanh) => {
            let mut v = [0.0f32; 16];
            // SAFETY: 16 floats into an array of 16, and back.
            unsafe {
                _mm512_storeu_ps(v.as_mut_ptr(), y);
                v.iter_mut().for_each(|t| *t = op.apply(*t));
                _mm512_loadu_ps(v.as_ptr())
            }
        }
    }
}

/// `ops::gelu` in 16 lanes, bit for bit (tested): the same steps on [`exp16`].
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn gelu16(x: __m512) -> __m512 {
    use crate::ops::ERFC_POLY;
    let a = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
    let t = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_fmadd_ps(_mm512_set1_ps(0.5), a, _mm512_set1_ps(1.0)));
    let mut p = _mm512_set1_ps(ERFC_POLY[0]);
    for c in &ERFC_POLY[1..] {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(*c));
    }
    let e = _mm512_mul_ps(t, exp16(_mm512_fnmadd_ps(a, a, p)));
    let h = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), e);
    let g = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps()), h, _mm512_sub_ps(x, h));
    let inf = _mm512_set1_ps(f32::INFINITY);
    let g = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, inf), g, inf);
    _mm512_mask_blend_ps(
        _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(x, _mm512_set1_ps(f32::NEG_INFINITY)),
        g,
        _mm512_set1_ps(-0.0),
    )
}

/// `ops::striped_sum` in 8 f64 lanes, bit for bit (tested): 8 values at a time widened to f64,
/// lane `j` summing the values `i % 8 = j` in order, the 8 sums added in order.
///
/// # Safety
/// The CPU has AVX512-F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn striped_sum(x: &[f32], term: crate::ops::SumTerm) -> f64 {
    use crate::ops::SumTerm;
    let n = x.len();
    let mut acc = _mm512_setzero_pd();
    let mut i = 0;
    // SAFETY: masked loads read indices below n only.
    unsafe {
        while i < n {
            let k = (n - i).min(8);
            let mask = ((1u32 << k) - 1) as __mmask8;
            let v =
                _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_maskz_loadu_ps(mask as __mmask16, x.as_ptr().add(i))));
            let t = match term {
                SumTerm::Value => v,
                SumTerm::SquaredDeviation(m) => {
                    let d = _mm512_sub_pd(v, _mm512_set1_pd(m));
                    _mm512_mul_pd(d, d)
                }
                SumTerm::Square => _mm512_mul_pd(v, v),
            };
            acc = _mm512_mask_add_pd(acc, mask, acc, t);
            i += 8;
        }
    }
    let mut lanes = [0.0f64; 8];
    // SAFETY: 8 doubles into an array of 8.
    unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc) };
    lanes.iter().fold(0.0, |a, b| a + b)
}

/// The per-value step of `ops::layer_norm_row` in 16 lanes: `out = (x - m) * r * gamma (+ beta)`, each step
/// rounded in f32 as the scalar loop (no fused multiply-add).
///
/// # Safety
/// The CPU has AVX512-F; `gamma`, `beta` (when given) and `out` hold at least `x.len()` values.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn scale_row(x: &[f32], m: f32, r: f32, gamma: &[f32], beta: Option<&[f32]>, out: &mut [f32]) {
    let n = x.len();
    let (mv, rv) = (_mm512_set1_ps(m), _mm512_set1_ps(r));
    let mut i = 0;
    // SAFETY: masked loads and stores touch indices below n only (caller: every slice holds n).
    unsafe {
        while i < n {
            let k = (n - i).min(16);
            let mask = if k == 16 { 0xffff } else { ((1u32 << k) - 1) as __mmask16 };
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            let g = _mm512_maskz_loadu_ps(mask, gamma.as_ptr().add(i));
            let mut y = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(v, mv), rv), g);
            if let Some(b) = beta {
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(i)));
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), mask, y);
            i += 16;
        }
    }
}

/// `ops::softmax_row` in 16 lanes, bit for bit (tested): the maximum, `exp16(x - m)` stored
/// back, lane `j` summing the elements `i % 16 = j`, the 16 sums added in order, a division.
///
/// # Safety
/// The CPU has AVX512-F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softmax_row(x: &mut [f32]) {
    let n = x.len();
    let full = n / 16 * 16;
    let tail = ((1u32 << (n - full)) - 1) as __mmask16;
    let p = x.as_mut_ptr();
    // SAFETY: full chunks in bounds; the tail's masked loads and stores touch its lanes only.
    unsafe {
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(p.add(i)));
        }
        if tail != 0 {
            m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, p.add(full)));
        }
        let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
        let mut acc = _mm512_setzero_ps();
        for i in (0..full).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), m));
            _mm512_storeu_ps(p.add(i), e);
            acc = _mm512_add_ps(acc, e);
        }
        if tail != 0 {
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.add(full)), m));
            _mm512_mask_storeu_ps(p.add(full), tail, e);
            acc = _mm512_mask_add_ps(acc, tail, acc, e);
        }
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
        let sum = _mm512_set1_ps(lanes.iter().fold(0.0f32, |a, b| a + b));
        for i in (0..full).step_by(16) {
            _mm512_storeu_ps(p.add(i), _mm512_div_ps(_mm512_loadu_ps(p.add(i)), sum));
        }
        if tail != 0 {
            _mm512_mask_storeu_ps(p.add(full), tail, _mm512_div_ps(_mm512_maskz_loadu_ps(tail, p.add(full)), sum));
        }
    }
}

/// [`act16`] of `op` on every element of `xs`, in place (a masked tail).
///
/// # Safety
/// The CPU has AVX512-F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn unary_in_place(op: UnaryOp, xs: &mut [f32]) {
    // The op chosen once, so each loop inlines its own lane function.
    // SAFETY: AVX512-F is present (caller).
    unsafe {
        match op {
            UnaryOp::Gelu => map16(xs, |v| gelu16(v)),
            UnaryOp::Exp => map16(xs, |v| exp16(v)),
            other => map16(xs, |v| act16(v, Some(other))),
        }
    }
}

/// `f` on every 16 lanes of `xs`, in place (a masked tail).
///
/// # Safety
/// The CPU has AVX512-F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn map16(xs: &mut [f32], f: impl Fn(__m512) -> __m512) {
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        // SAFETY: 16 floats in the chunk.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), f(_mm512_loadu_ps(c.as_ptr()))) };
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let m = ((1u32 << rest.len()) - 1) as __mmask16;
        // SAFETY: the mask covers the remainder's lanes only.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
            _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, f(v));
        }
    }
}

/// `ops::exp` in 16 lanes, bit for bit (tested): the same steps, `2^n` by `vscalefps`
/// (one rounding, as `ops::exp`'s two-step scaling).
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn exp16(x: __m512) -> __m512 {
    use crate::ops::{EXP_LN2_HI, EXP_LN2_LO, EXP_POLY};
    let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-150.0)), _mm512_set1_ps(128.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        xc,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    let y = _mm512_scalef_ps(p, n);
    // max/min return their second operand for a NaN: put the NaN back.
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), y, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector f64 statistics equal the portable ones bit for bit, every length and term.
    #[test]
    fn striped_sums_equal_the_portable_definition_bit_for_bit() {
        use crate::ops::SumTerm;
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for n in 0..=70 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 200) as f32 / 7.0 - 13.0 + 1e-3 * i as f32).collect();
            for term in [SumTerm::Value, SumTerm::SquaredDeviation(0.731), SumTerm::Square] {
                let want = crate::ops::striped_sum_portable(&x, term);
                // SAFETY: AVX512-F is present (checked above).
                let got = unsafe { striped_sum(&x, term) };
                assert_eq!(got.to_bits(), want.to_bits(), "n {n} {term:?}");
            }
        }
    }

    /// The vector normalization step equals the portable one bit for bit, every length.
    #[test]
    fn scale_rows_equal_the_portable_definition_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        for n in 1..=70 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 200) as f32 / 7.0 - 13.0).collect();
            let g: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 * 0.3).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 3) as f32 * 0.1 - 0.1).collect();
            for beta in [None, Some(b.as_slice())] {
                let (mut got, mut want) = (vec![0.0f32; n], vec![0.0f32; n]);
                crate::ops::scale_row_portable(&x, 0.37, 1.9, &g, beta, &mut want);
                // SAFETY: AVX512-F is present (checked above); every slice holds n values.
                unsafe { scale_row(&x, 0.37, 1.9, &g, beta, &mut got) };
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "n {n}");
            }
        }
    }

    /// The vector softmax equals the portable one bit for bit at every row length around the
    /// 16-lane chunks, with large, tiny, equal, masked (-inf) and NaN entries.
    #[test]
    fn softmax_rows_equal_the_portable_definition_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for n in 1..=70 {
            for case in 0..4 {
                let mut x: Vec<f32> = (0..n).map(|i| ((i * 7919 + case * 31) % 200) as f32 / 9.0 - 11.0).collect();
                match case {
                    1 => x.iter_mut().skip(1).step_by(3).for_each(|v| *v = f32::NEG_INFINITY),
                    2 => x[n / 2] = 88.0,
                    3 if n > 3 => x[3] = f32::NAN,
                    _ => {}
                }
                let mut want = x.clone();
                crate::ops::softmax_row_portable(&mut want);
                // SAFETY: AVX512-F is present (checked above).
                unsafe { softmax_row(&mut x) };
                for (i, (g, w)) in x.iter().zip(&want).enumerate() {
                    assert!(same(*g, *w), "n {n} case {case} [{i}]: {g} vs {w}");
                }
                if case != 3 || n <= 3 {
                    let s: f64 = x.iter().map(|v| f64::from(*v)).sum();
                    assert!((s - 1.0).abs() < 1e-5, "n {n} case {case}: sums to {s}");
                }
            }
        }
    }

    #[test]
    fn exp16_and_every_unary_op_equal_the_scalar_definitions_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut xs: Vec<f32> = (0..=40_000).map(|i| -100.0 + i as f32 * 0.005).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.5, -87.0, -103.0, -87.5, -95.0, -104.0, 200.0, -200.0]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, f32::MAX, f32::MIN]);
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for chunk in xs.chunks(16) {
            let mut v = [0.0f32; 16];
            v[..chunk.len()].copy_from_slice(chunk);
            // SAFETY: AVX512-F is present (checked above).
            let e = unsafe {
                let mut out = [0.0f32; 16];
                _mm512_storeu_ps(out.as_mut_ptr(), exp16(_mm512_loadu_ps(v.as_ptr())));
                out
            };
            for (x, got) in v.iter().zip(e) {
                assert!(same(got, crate::ops::exp(*x)), "exp16({x}) = {got}, ops::exp {}", crate::ops::exp(*x));
            }
            for op in UnaryOp::ALL {
                let mut out = [0.0f32; 16];
                // SAFETY: as above; every lane is in the mask.
                unsafe {
                    tail16(
                        _mm512_loadu_ps(v.as_ptr()),
                        0xffff,
                        0,
                        None,
                        None,
                        std::ptr::null(),
                        Some(op),
                        out.as_mut_ptr(),
                    )
                };
                for (x, got) in v.iter().zip(out) {
                    assert!(same(got, op.apply(*x)), "{op:?}({x}) = {got}, want {}", op.apply(*x));
                }
            }
        }
    }
}
