//! Per-sample int8 quantization of activations: absmax scales and the rounding into codes
//! (AVX2 and AVX-512 loops with the scalar bits).

/// Per-sample absmax int8 quantization of one sample's values: `(scale, factor)` with
/// `q = round_ties_even(v * factor)` clamped to `[-127, 127]` and `v ~ q * scale`. An all-zero
/// sample gets scale 1 and factor 0. A sample holding a NaN or an infinity gets scale NaN and
/// factor 0: its codes are 0 and everything computed from them is NaN (the NaN contract,
/// docs/language.md).
pub fn absmax_scale(values: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { absmax_scale_avx2(values) };
    }
    absmax_scale_generic(values)
}

/// 32 values per step in four independent running maxima (one chain was latency-bound: 7% of
/// the MNIST MLP at batch 64). The maxima are of `|v|`'s bits as integers: non-negative floats
/// order as their bits do, and NaN and infinity have the largest bits, so one integer max finds
/// both the absmax and any non-finite value; the result equals the generic function's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn absmax_scale_avx2(values: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let mut m = [_mm256_setzero_si256(); 4];
    let mut chunks = values.chunks_exact(32);
    for c in &mut chunks {
        for (j, mj) in m.iter_mut().enumerate() {
            // SAFETY: 8 j + 8 <= 32 = c.len().
            let v = _mm256_and_si256(unsafe { _mm256_loadu_si256(c.as_ptr().add(8 * j).cast()) }, abs);
            *mj = _mm256_max_epi32(v, *mj);
        }
    }
    let v = _mm256_max_epi32(_mm256_max_epi32(m[0], m[1]), _mm256_max_epi32(m[2], m[3]));
    let mut lanes = [0u32; 8];
    // SAFETY: 8 lanes into an 8-lane array.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
    scale_of_absmax(&lanes, chunks.remainder())
}

/// `(scale, factor)` from the running maxima of `|v|`'s bits and the values they did not
/// cover (see [`absmax_scale`]).
fn scale_of_absmax(lanes: &[u32; 8], rest: &[f32]) -> (f32, f32) {
    let bits = rest.iter().fold(lanes.iter().fold(0u32, |a, l| a.max(*l)), |a, v| a.max(v.to_bits() & 0x7fff_ffff));
    let m = f32::from_bits(bits);
    if !m.is_finite() {
        (f32::NAN, 0.0)
    } else if m > 0.0 {
        (m / 127.0, 127.0 / m)
    } else {
        (1.0, 0.0)
    }
}

#[inline(always)]
fn absmax_scale_generic(values: &[f32]) -> (f32, f32) {
    // Eight running maxima of the bits of |v| (so it vectorizes), then their max.
    let mut lanes = [0u32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = (*l).max(v.to_bits() & 0x7fff_ffff);
        }
    }
    scale_of_absmax(&lanes, chunks.remainder())
}

/// [`quantize`] over a slice (`dst.len()` values of `src`); returns the sum of the codes.
/// Same values as the scalar function on every CPU; on AVX2 it runs 8 values per instruction.
pub fn quantize_into(src: &[f32], factor: f32, dst: &mut [i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { quantize_into_avx2(src, factor, dst) };
    }
    quantize_into_generic(src, factor, dst)
}

/// 32 values per step: NaN -> 0, clamp, round half to even, convert, pack with saturation
/// (exact: the values are integers in [-127, 127]) and restore the order `packs` interleaves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_into_avx2(src: &[f32], factor: f32, dst: &mut [i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let (f, lo, hi) = (_mm256_set1_ps(factor), _mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        let q: [__m256i; 4] = std::array::from_fn(|j| {
            // SAFETY: i + 8 j + 8 <= n <= src.len().
            let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(src.as_ptr().add(i + 8 * j)) }, f);
            let v = _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
            let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            _mm256_cvtps_epi32(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v))
        });
        acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        // SAFETY: i + 32 <= n <= dst.len().
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), _mm256_permutevar8x32_epi32(packed, order)) };
        i += 32;
    }
    let mut lanes = [0i32; 8];
    // SAFETY: 8 i32 lanes into an array of 8.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    lanes.iter().sum::<i32>() + quantize_into_generic(&src[i..n], factor, &mut dst[i..n])
}

/// [`quantize_into`] of `src` into the first `src.len()` codes of `dst`, the rest of `dst`
/// zeroed (a padded row): one pass. Returns the codes' sum.
pub fn quantize_row_padded(src: &[f32], factor: f32, dst: &mut [i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::best() >= crate::cpu::Isa::Avx512Vnni && src.len() <= dst.len() {
        // SAFETY: the CPU has AVX-512 (the VNNI level implies F and BW).
        return unsafe { quantize_row_avx512(src, factor, dst) };
    }
    let n = src.len().min(dst.len());
    let sum = quantize_into(&src[..n], factor, &mut dst[..n]);
    dst[n..].fill(0);
    sum
}

/// 16 values per step, the padding in the same pass: lanes past `src` load as 0, which
/// quantizes to 0. The same steps as the AVX2 version (NaN -> 0, clamp, round half to even);
/// the saturating narrowing store is exact on integers in [-127, 127].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_row_avx512(src: &[f32], factor: f32, dst: &mut [i8]) -> i32 {
    use std::arch::x86_64::*;
    let (n, len) = (src.len(), dst.len());
    let (f, lo, hi) = (_mm512_set1_ps(factor), _mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    let mask = |from: usize, end: usize| -> __mmask16 {
        let lanes = end.saturating_sub(from).min(16);
        if lanes == 16 { 0xffff } else { (1u16 << lanes) - 1 }
    };
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i < len {
        // SAFETY: the masks keep the load within `src` and the store within `dst`.
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(i, n), src.as_ptr().add(i)), f);
            let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
            let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            let q = _mm512_cvtps_epi32(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v));
            acc = _mm512_add_epi32(acc, q);
            _mm512_mask_cvtsepi32_storeu_epi8(dst.as_mut_ptr().add(i).cast(), mask(i, len), q);
        }
        i += 16;
    }
    _mm512_reduce_add_epi32(acc)
}

#[inline(always)]
fn quantize_into_generic(src: &[f32], factor: f32, dst: &mut [i8]) -> i32 {
    let mut sum = 0i32;
    for (d, v) in dst.iter_mut().zip(src) {
        *d = quantize(*v, factor);
        sum += i32::from(*d);
    }
    sum
}

/// One value quantized with a factor from [`absmax_scale`] (or `1 / fixed scale`).
#[inline(always)]
pub fn quantize(v: f32, factor: f32) -> i8 {
    // NaN becomes 0; otherwise clamp, then round half to even with the 1.5 * 2^23 trick: for
    // |c| <= 127, `c + MAGIC` holds round_ties_even(c) in its low mantissa bits, so the bit
    // difference is the integer. No libm call and no saturating float-to-int conversion, so a
    // loop of it vectorizes on baseline x86-64.
    const MAGIC: f32 = 12_582_912.0;
    let c = v * factor;
    let c = if c.is_nan() { 0.0 } else { c.clamp(-127.0, 127.0) };
    ((c + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice version (AVX2 where the CPU has it) equals the scalar function value by value,
    /// sums included, for lengths around the 32-value step, NaN, infinities, ties and clamping.
    #[test]
    fn quantize_into_equals_the_scalar_rounding() {
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 1e9, -0.0];
        for len in [0usize, 1, 31, 32, 33, 64, 95, 784] {
            let src: Vec<f32> = (0..len)
                .map(|i| if i % 7 == 3 { special[i % special.len()] } else { ((i * 7919) % 1000) as f32 / 3.7 - 135.0 })
                .collect();
            for factor in [1.0f32, 0.5, 127.0 / 135.0, 0.0] {
                let mut dst = vec![99i8; len];
                let sum = quantize_into(&src, factor, &mut dst);
                let want: Vec<i8> = src.iter().map(|v| quantize(*v, factor)).collect();
                assert_eq!(dst, want, "len {len} factor {factor}");
                assert_eq!(sum, want.iter().map(|q| i32::from(*q)).sum::<i32>(), "len {len}");
            }
        }
    }

    /// The padded-row version (AVX-512 where the CPU has it) writes the scalar codes, then
    /// zeros to the end of the row, and their sum, for row and padding lengths around its
    /// 16-value step.
    #[test]
    fn quantize_row_padded_equals_the_scalar_rounding_and_zeroes_the_padding() {
        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -126.5, 1e9, -0.0];
        for len in [0usize, 1, 15, 16, 17, 31, 96, 784] {
            for pad in [0usize, 1, 15, 16, 33] {
                let src: Vec<f32> =
                    (0..len)
                        .map(|i| {
                            if i % 7 == 3 {
                                special[i % special.len()]
                            } else {
                                ((i * 7919) % 1000) as f32 / 3.7 - 135.0
                            }
                        })
                        .collect();
                for factor in [1.0f32, 0.5, 127.0 / 135.0, 0.0] {
                    let mut dst = vec![99i8; len + pad];
                    let sum = quantize_row_padded(&src, factor, &mut dst);
                    let mut want: Vec<i8> = src.iter().map(|v| quantize(*v, factor)).collect();
                    want.resize(len + pad, 0);
                    assert_eq!(dst, want, "len {len} pad {pad} factor {factor}");
                    assert_eq!(sum, want.iter().map(|q| i32::from(*q)).sum::<i32>(), "len {len} pad {pad}");
                }
            }
        }
    }

    /// The dispatched absmax (AVX2 where the CPU has it) equals the generic one: a NaN or an
    /// infinity anywhere gives scale NaN and factor 0, the maximum is found in any lane and in the tail past the 32-value step.
    #[test]
    fn absmax_scale_equals_the_generic_one() {
        for len in [0usize, 1, 7, 31, 32, 33, 63, 64, 65, 784] {
            for spot in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                for special in [-500.0f32, 500.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut v: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 7.0 - 70.0).collect();
                    if let Some(s) = spot.filter(|s| *s < len) {
                        v[s] = special;
                    }
                    let (got, want) = (absmax_scale(&v), absmax_scale_generic(&v));
                    assert_eq!(got.0.to_bits(), want.0.to_bits(), "len {len} at {spot:?} = {special}");
                    assert_eq!(got.1.to_bits(), want.1.to_bits(), "len {len} at {spot:?} = {special}");
                }
            }
        }
        assert_eq!(absmax_scale(&[0.0; 40]), (1.0, 0.0));
        assert_eq!(absmax_scale(&[-254.0; 40]), (2.0, 0.5));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for len in [1, 40] {
                let mut v = vec![1.0; len];
                v[len / 2] = bad;
                let (scale, factor) = absmax_scale(&v);
                assert!(scale.is_nan() && factor == 0.0, "{bad} in {len} values: ({scale}, {factor})");
            }
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let cases = [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (126.5, 126),
            (127.49, 127),
            (1e9, 127),
            (-1e9, -127),
            (f32::INFINITY, 127),
            (f32::NEG_INFINITY, -127),
            (f32::NAN, 0),
            (0.49999997, 0),
            (-0.0, 0),
            (3.7, 4),
            (-3.2, -3),
        ];
        for (v, q) in cases {
            assert_eq!(quantize(v, 1.0), q, "quantize({v})");
        }
        // Same as the definition (round_ties_even, then clamp) on a dense sweep.
        for i in -300_000..300_000 {
            let v = i as f32 * 0.000_5;
            assert_eq!(quantize(v, 1.0), v.round_ties_even().clamp(-127.0, 127.0) as i8, "quantize({v})");
        }
    }
}
