//! Element-wise semantics shared by the runtime and the compiler's reference interpreter, so
//! both compute the very same thing: activations, binary arithmetic, int8 quantization.
//!
//! Rules: each function here is the definition docs/language.md ("Numeric semantics") states;
//! the interpreter and the runtime call these, never a copy.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UnaryOp {
    Relu,
    Relu6,
    Sigmoid,
    Silu,
    Tanh,
    Neg,
    /// Square root (IEEE, correctly rounded).
    Sqrt,
    /// `e^x` ([`exp`]).
    Exp,
    /// GELU, the erf form ([`gelu`]).
    Gelu,
    /// GELU, the tanh approximation ([`gelu_tanh`]).
    GeluTanh,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 10] = [
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Tanh,
        UnaryOp::Neg,
        UnaryOp::Sqrt,
        UnaryOp::Exp,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
    ];

    /// The op on one f32 value (docs/language.md, "Activations").
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            // NaN propagates (as in PyTorch): `x < 0` and `y > 6` are false for NaN.
            UnaryOp::Relu => relu(x),
            UnaryOp::Relu6 => {
                let y = relu(x);
                if y > 6.0 { 6.0 } else { y }
            }
            UnaryOp::Sigmoid => 1.0 / (1.0 + exp(-x)),
            UnaryOp::Silu => x / (1.0 + exp(-x)),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Neg => -x,
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Exp => exp(x),
            UnaryOp::Gelu => gelu(x),
            UnaryOp::GeluTanh => gelu_tanh(x),
        }
    }

    /// Activations a fused epilogue may end with.
    pub fn is_activation(self) -> bool {
        matches!(
            self,
            UnaryOp::Relu
                | UnaryOp::Relu6
                | UnaryOp::Sigmoid
                | UnaryOp::Silu
                | UnaryOp::Tanh
                | UnaryOp::Gelu
                | UnaryOp::GeluTanh
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Relu => "relu",
            UnaryOp::Relu6 => "relu6",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Silu => "silu",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Neg => "neg",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
        }
    }
}

/// `e^x` as sigmoid and SiLU define it (docs/language.md, "Activations"): `x` clamped to
/// [-150, 128], `n = round_ties_even(x * log2(e))`, `r = x - n ln 2` (ln 2 in two parts,
/// fused), Cephes `expf`'s degree-7 polynomial for `e^r` (fused multiply-adds), times `2^n`
/// rounded once. Every step is an IEEE operation, so the vector kernels (`vscalefps` for the
/// last step) give these bits on every CPU: the integer paths' activations equal the
/// interpreter's. Within 2 ulp of the correctly rounded `e^x` for normal results (tested);
/// NaN stays NaN, `-inf` gives 0, `inf` infinity.
#[inline]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let xc = x.clamp(-150.0, 128.0);
    let n = (xc * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(EXP_LN2_HI, xc);
    let r = (-n).mul_add(EXP_LN2_LO, r);
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let p = (p * r).mul_add(r, r + 1.0);
    scale_pow2(p, n as i32)
}

/// GELU, erf form (docs/language.md, "Activations"): `x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2))`,
/// with `erfc` in f32 as Numerical Recipes' `erfcc` (a Chebyshev fit, relative error below
/// 1.2e-7): for `a = |x| / sqrt(2)`, `t = 1 / (1 + a / 2)` and `e = t * exp(-a^2 + P(t))`
/// ([`ERFC_POLY`], Horner with fused multiply-adds, `-a^2 + P` fused, [`exp`]), `h = x * e / 2`
/// and GELU is `x - h` for `x >= 0`, `h` below. No cancellation for negative `x` (PyTorch's
/// `0.5 * x * (1 + erf(x / sqrt(2)))` loses hundreds of ulp at `x = -3`); every step an IEEE
/// operation, so the vector kernels give these bits (tested). `inf` gives `inf`, `-inf` gives
/// `-0.0` (the limit, as for large negative `x`); NaN stays NaN.
#[inline]
pub fn gelu(x: f32) -> f32 {
    if x.is_infinite() {
        return if x > 0.0 { x } else { -0.0 };
    }
    let a = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (0.5f32.mul_add(a, 1.0));
    let mut p = ERFC_POLY[0];
    for c in &ERFC_POLY[1..] {
        p = p.mul_add(t, *c);
    }
    let e = t * exp((-a).mul_add(a, p));
    let h = 0.5 * x * e;
    if x >= 0.0 { x - h } else { h }
}

/// [`gelu`]'s `erfc` polynomial in `t`, highest degree first (Numerical Recipes, `erfcc`).
pub const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// The unary `op` on every element of `x` ([`unary_in_place`] on a standard-layout copy).
pub fn unary_array(op: UnaryOp, x: &ndarray::ArrayD<f32>) -> ndarray::ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    match y.as_slice_mut() {
        Some(ys) => unary_in_place(op, ys),
        None => y.mapv_inplace(|v| op.apply(v)),
    }
    y
}

/// The unary `op` on every element of `xs`, in place: 16 lanes at a time where the CPU has
/// AVX-512 (the same bits as [`UnaryOp::apply`], tested), else element by element.
pub fn unary_in_place(op: UnaryOp, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX512-F is present (checked).
        unsafe { crate::kernels::avx512::unary_in_place(op, xs) };
        return;
    }
    xs.iter_mut().for_each(|v| *v = op.apply(*v));
}

/// `sqrt(2 / pi)`, the tanh approximation's scale.
pub const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// The tanh approximation's cubic coefficient.
pub const GELU_TANH_CUBIC: f32 = 0.044_715;

/// GELU, tanh approximation (PyTorch's `approximate="tanh"`, GPT-2's):
/// `0.5 * x * (1 + tanh(u))` with `u = sqrt(2 / pi) * (x + 0.044715 * x^3)`, computed in f32
/// as the identical `x / (1 + e^(-2u))` with [`exp`] (no cancellation for negative `x`, and the
/// vector kernels' `exp` gives the same bits). `-inf` gives `-0.0`; NaN stays NaN.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return -0.0;
    }
    let u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * (x * x * x));
    x / (1.0 + exp(-2.0 * u))
}

/// `ln 2 = EXP_LN2_HI + EXP_LN2_LO` for [`exp`]'s range reduction.
pub const EXP_LN2_HI: f32 = 0.693_359_4;
/// The low part of `ln 2`.
pub const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// [`exp`]'s polynomial coefficients, highest degree first (Cephes `expf`).
pub const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `p * 2^n` rounded once (as `vscalefps`), for `p` in [0.5, 2] and `n` in [-217, 185]:
/// a first exact step keeps the product normal, the second rounds (to a subnormal, zero or
/// infinity only at the ends of the range).
#[inline]
fn scale_pow2(p: f32, n: i32) -> f32 {
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    if n > 127 {
        p * pow2(127) * pow2(n - 127)
    } else if n < -126 {
        p * pow2(n + 126) * pow2(-126)
    } else {
        p * pow2(n)
    }
}

/// `x < 0 ? 0 : x`: NaN and `-0.0` pass through.
#[inline(always)]
fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// The running maximum of a max pooling: the larger value, and NaN once any value is NaN (as
/// PyTorch's max pooling propagates it); ties keep the earlier value.
#[inline(always)]
pub fn pool_max(acc: f32, v: f32) -> f32 {
    if v.is_nan() || v > acc { v } else { acc }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    /// The op on two f32 values.
    #[inline]
    pub fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
        }
    }

    pub const ALL: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

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

/// Softmax along an axis: `exp(v - max) / sum`.
pub fn softmax(x: &ndarray::ArrayD<f32>, axis: usize) -> ndarray::ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    if axis + 1 == y.ndim()
        && let Some(v) = y.as_slice_mut()
    {
        let n = x.shape()[axis].max(1);
        v.chunks_exact_mut(n).for_each(softmax_row);
        return y;
    }
    let mut row = Vec::new();
    for mut lane in y.lanes_mut(ndarray::Axis(axis)) {
        row.clear();
        row.extend(lane.iter().copied());
        softmax_row(&mut row);
        lane.iter_mut().zip(&row).for_each(|(d, s)| *d = *s);
    }
    y
}

/// The partial sums of [`softmax_row`]: element `i` adds into sum `i % 16`.
pub const SOFTMAX_LANES: usize = 16;

/// Softmax of one row in place (docs/language.md, "Activations"): `m` the maximum, `e_i =
/// exp(x_i - m)` with [`exp`], their sum as [`SOFTMAX_LANES`] partial sums (element `i` into sum
/// `i % 16`, in order) then added in order, and `y_i = e_i / sum`, all in f32: the AVX-512
/// kernel's order, so every path gives the same bits.
pub fn softmax_row(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX512-F is present (checked).
        unsafe { crate::kernels::avx512::softmax_row(x) };
        return;
    }
    softmax_row_portable(x);
}

/// [`softmax_row`] element by element (every CPU).
pub(crate) fn softmax_row_portable(x: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mut acc = [0.0f32; SOFTMAX_LANES];
    for (i, v) in x.iter_mut().enumerate() {
        *v = exp(*v - m);
        acc[i % SOFTMAX_LANES] += *v;
    }
    let sum = acc.iter().fold(0.0f32, |a, b| a + b);
    x.iter_mut().for_each(|v| *v /= sum);
}

/// The partial sums of the normalizations' f64 statistics: element `i` adds into sum `i % 8`.
pub const NORM_LANES: usize = 8;

/// `f(v)` of every value summed in f64 as [`NORM_LANES`] partial sums (element `i` into sum
/// `i % 8`, in order), then the partial sums added in order: the AVX-512 kernels' order.
fn striped_sum(x: &[f32], term: SumTerm) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX512-F is present (checked).
        return unsafe { crate::kernels::avx512::striped_sum(x, term) };
    }
    striped_sum_portable(x, term)
}

/// What [`striped_sum`] adds per value `v` (in f64).
#[derive(Clone, Copy, Debug)]
pub(crate) enum SumTerm {
    Value,
    /// `(v - mean) * (v - mean)`.
    SquaredDeviation(f64),
    /// `v * v`.
    Square,
}

impl SumTerm {
    #[inline(always)]
    fn of(self, v: f64) -> f64 {
        match self {
            SumTerm::Value => v,
            SumTerm::SquaredDeviation(m) => (v - m) * (v - m),
            SumTerm::Square => v * v,
        }
    }
}

/// [`striped_sum`] value by value (every CPU).
pub(crate) fn striped_sum_portable(x: &[f32], term: SumTerm) -> f64 {
    let f = |v: f64| term.of(v);
    let mut acc = [0.0f64; NORM_LANES];
    let mut chunks = x.chunks_exact(NORM_LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += f(f64::from(*v));
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(f64::from(*v));
    }
    acc.iter().fold(0.0, |a, b| a + b)
}

/// Layer normalization of one row (docs/language.md, "Normalization"): the mean and the
/// (biased) variance of `x` summed in f64 (8 partial sums, [`striped_sum`]),
/// `r = 1 / sqrt(var + eps)` in f64, then per value in f32: `(x - mean) * r * gamma (+ beta)`,
/// each step rounded in f32. The interpreter, the training pass and the engine call this function (16 lanes at
/// a time on AVX-512, the same bits), so they agree bit for bit.
pub fn layer_norm_row(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let mean = striped_sum(x, SumTerm::Value) / n;
    let var = striped_sum(x, SumTerm::SquaredDeviation(mean)) / n;
    let (m, r) = (mean as f32, (1.0 / (var + f64::from(eps)).sqrt()) as f32);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && gamma.len() >= x.len()
        && out.len() >= x.len()
        && beta.is_none_or(|b| b.len() >= x.len())
    {
        // SAFETY: AVX512-F is present and every slice holds x.len() values (checked).
        unsafe { crate::kernels::avx512::scale_row(x, m, r, gamma, beta, out) };
        return;
    }
    scale_row_portable(x, m, r, gamma, beta, out);
}

/// `out = (x - m) * r * gamma (+ beta)` per value, each step rounded in f32.
pub(crate) fn scale_row_portable(x: &[f32], m: f32, r: f32, gamma: &[f32], beta: Option<&[f32]>, out: &mut [f32]) {
    for (i, (o, v)) in out.iter_mut().zip(x).enumerate() {
        let y = (*v - m) * r * gamma[i];
        *o = match beta {
            Some(b) => y + b[i],
            None => y,
        };
    }
}

/// RMS normalization of one row: `ms = mean(x^2)` summed in f64 ([`striped_sum`]),
/// `r = 1 / sqrt(ms + eps)` in f64, then per value in f32 `x * r * gamma`.
pub fn rms_norm_row(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().max(1) as f64;
    let ms = striped_sum(x, SumTerm::Square) / n;
    let r = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
    for ((o, v), g) in out.iter_mut().zip(x).zip(gamma) {
        *o = *v * r * g;
    }
}

/// Causal masking of scores `[..., T, S]` (in place): entry `(i, j)` of each `T x S` matrix
/// becomes `-inf` where `j > i + S - T` (a token sees itself and the ones before it; with more
/// keys than queries, the queries are the last `T` positions); `softmax` then gives those
/// entries weight 0. Rank below 2 is left alone (the checker refuses it).
pub fn causal_mask(x: &mut [f32], shape: &[usize]) {
    let r = shape.len();
    if r < 2 {
        return;
    }
    let (t, s) = (shape[r - 2], shape[r - 1]);
    for m in x.chunks_exact_mut((t * s).max(1)) {
        for (i, row) in m.chunks_exact_mut(s.max(1)).enumerate() {
            let keep = (i + s).saturating_sub(t) + 1;
            row.iter_mut().skip(keep).for_each(|v| *v = f32::NEG_INFINITY);
        }
    }
}

/// The rotation angles' cosines and sines of rotary position embeddings for `t` positions and
/// `half` pairs: entry `(p, i)` of each is `cos` / `sin` of `p * theta^(-2i / (2 half))`,
/// computed in f64 and rounded once to f32.
pub fn rope_tables(t: usize, half: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let d = (2 * half).max(1) as f64;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in 0..t {
        for i in 0..half {
            let angle = p as f64 * f64::from(theta).powf(-2.0 * i as f64 / d);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotary position embeddings (RoPE, LLaMA's and BitNet's "rotate half" form) of `x` with
/// shape `[..., T, D]` in place, `D` even, position `p` = the index along axis -2: with `h =
/// D / 2` and [`rope_tables`]' `c`, `s` at `(p, i)`, `(x[i], x[i + h])` becomes `(x[i] c - x[i
/// + h] s, x[i] s + x[i + h] c)`, each product rounded, then the sum (no fused multiply-add).
/// With `inverse`, the transposed rotation (`s` negated): the gradient. Shapes of rank below
/// 2 or an odd `D` are left alone (the checker refuses them).
pub fn rope(x: &mut [f32], shape: &[usize], theta: f32, inverse: bool) {
    let r = shape.len();
    if r < 2 || !shape[r - 1].is_multiple_of(2) {
        return;
    }
    let (t, d) = (shape[r - 2], shape[r - 1]);
    let h = d / 2;
    let (cos, sin) = rope_tables(t, h, theta);
    for m in x.chunks_exact_mut((t * d).max(1)) {
        for (p, row) in m.chunks_exact_mut(d.max(1)).enumerate() {
            let (a, b) = row.split_at_mut(h);
            for i in 0..h {
                let (c, s) = (cos[p * h + i], if inverse { -sin[p * h + i] } else { sin[p * h + i] });
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * c - x2 * s;
                b[i] = x1 * s + x2 * c;
            }
        }
    }
}

/// Positions `start .. end` along axis `axis` of a row-major `shape`, copied from `x` into
/// `out` (`shape` with that axis `end - start` long).
pub fn slice_axis(x: &[f32], shape: &[usize], axis: usize, start: usize, end: usize, out: &mut [f32]) {
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    let (run, take) = (len * inner, (end - start) * inner);
    for (src, dst) in x.chunks_exact(run.max(1)).zip(out.chunks_exact_mut(take.max(1))) {
        dst.copy_from_slice(&src[start * inner..end * inner]);
    }
}

/// A token id that names no row of an embedding table: not an integer, or outside
/// `0 .. vocab`. Position `index` of the ids, in row-major order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("token id {value} (element {index} of the ids) {}", if value.fract() != 0.0 || !value.is_finite() { "is not an integer".to_string() } else { format!("is outside the vocabulary of {vocab} tokens (0 to {})", vocab.saturating_sub(1)) })]
pub struct TokenIdError {
    pub index: usize,
    pub value: f32,
    pub vocab: usize,
}

/// Embedding lookup: `out` row `i` is row `ids[i]` of `table` (`vocab` rows of `dim`). The ids
/// are integers carried in f32 (exact up to 2^24); each is checked before its row is read,
/// so a bad id is an error, never a read outside the table. `out` has `ids.len() * dim`
/// values.
pub fn embedding(ids: &[f32], table: &[f32], dim: usize, out: &mut [f32]) -> Result<(), TokenIdError> {
    let vocab = table.len() / dim.max(1);
    for (index, (&value, row)) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))).enumerate() {
        if !(value >= 0.0 && value < vocab as f32 && value.fract() == 0.0) {
            return Err(TokenIdError { index, value, vocab });
        }
        let r = value as usize * dim;
        row.copy_from_slice(&table[r..r + dim]);
    }
    Ok(())
}

/// The sum (or the mean, `mean`) of `x` along `axis`, which is removed: per output, the values
/// summed in f64 in index order and rounded once (the mean divides the f64 sum first). The
/// interpreter, the training pass and the engine call this, so they agree bit for bit. `None`
/// for an axis out of range.
pub fn reduce_axis(x: &ndarray::ArrayD<f32>, axis: usize, mean: bool) -> Option<ndarray::ArrayD<f32>> {
    if axis >= x.ndim() {
        return None;
    }
    let n = x.shape()[axis].max(1) as f64;
    Some(x.map_axis(ndarray::Axis(axis), |lane| {
        let s = lane.iter().map(|v| f64::from(*v)).sum::<f64>();
        (if mean { s / n } else { s }) as f32
    }))
}

/// [`layer_norm_row`] (with `beta`, or [`rms_norm_row`] without) over every row of the last
/// axis of `x`; `None` when `gamma` (or `beta`) is not a vector of the last axis' length.
pub fn norm_rows(
    x: &ndarray::ArrayD<f32>,
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    rms: bool,
) -> Option<ndarray::ArrayD<f32>> {
    let src = x.as_standard_layout();
    let mut out = ndarray::ArrayD::<f32>::zeros(x.raw_dim());
    norm_rows_into(src.as_slice()?, gamma, beta, eps, rms, out.as_slice_mut()?).then_some(out)
}

/// [`norm_rows`] over the rows of `gamma.len()` values of `src`, written to `dst` (as long);
/// `false` (nothing written) when the sizes do not agree.
pub fn norm_rows_into(src: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32, rms: bool, dst: &mut [f32]) -> bool {
    let d = gamma.len();
    if d == 0 || !src.len().is_multiple_of(d) || dst.len() != src.len() || beta.is_some_and(|b| b.len() != d) {
        return false;
    }
    for (row, o) in src.chunks_exact(d).zip(dst.chunks_exact_mut(d)) {
        if rms {
            rms_norm_row(row, gamma, eps, o);
        } else {
            layer_norm_row(row, gamma, beta, eps, o);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        let key = |v: f32| if v.to_bits() >> 31 == 1 { !v.to_bits() } else { v.to_bits() | 1 << 31 };
        key(a).abs_diff(key(b))
    }

    #[test]
    fn exp_is_within_2_ulp_of_libm_and_keeps_the_special_values() {
        let mut worst = 0;
        for i in 0..=2_000_000 {
            let x = -104.0 + i as f32 * 1.0e-4 * 96.5;
            let (got, want) = (exp(x), x.exp());
            // Subnormal results: the polynomial's relative accuracy does not reach them.
            if want >= f32::MIN_POSITIVE {
                worst = worst.max(ulps(got, want));
            }
        }
        assert!(worst <= 2, "ops::exp is {worst} ulp off");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-100.0) > 0.0 && exp(-100.0) < f32::MIN_POSITIVE, "a subnormal result, not flushed");
        assert_eq!(UnaryOp::Sigmoid.apply(0.0), 0.5);
        assert_eq!(UnaryOp::Silu.apply(-200.0), -0.0);
    }

    /// RoPE: position 0 is unchanged, each pair keeps its length, rotates by `p * theta^(-2i/D)`
    /// (checked against f64), and the inverse rotation brings the values back.
    #[test]
    fn rope_rotates_pairs_by_position() {
        let (t, d, theta) = (5usize, 8usize, 10_000.0f32);
        let x: Vec<f32> = (0..2 * t * d).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
        let mut y = x.clone();
        rope(&mut y, &[2, t, d], theta, false);
        let h = d / 2;
        for m in 0..2 {
            for p in 0..t {
                for i in 0..h {
                    let at = |v: &[f32], j: usize| f64::from(v[m * t * d + p * d + j]);
                    let a = p as f64 * f64::from(theta).powf(-2.0 * i as f64 / d as f64);
                    let (x1, x2) = (at(&x, i), at(&x, i + h));
                    let want = (x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos());
                    assert!((at(&y, i) - want.0).abs() < 1e-6 && (at(&y, i + h) - want.1).abs() < 1e-6, "{m} {p} {i}");
                    if p == 0 {
                        assert_eq!((at(&y, i), at(&y, i + h)), (x1, x2));
                    }
                }
            }
        }
        rope(&mut y, &[2, t, d], theta, true);
        assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    /// GELU against its definition in f64 (libm's f64 `erfc`) over [-8, 8], within 6 ulp
    /// (the `erfc` fit's 1.2e-7 and `exp`'s 2 ulp) plus the conditioning of the negative tail; PyTorch's printed values; the limits.
    #[test]
    fn gelu_is_the_erf_form_and_gelu_tanh_the_approximation() {
        let mut worst = (0, 0);
        for i in 0..=200_000 {
            let x = -8.0 + i as f32 * 8.0e-5;
            let xd = f64::from(x);
            // 1 + erf(z) = erfc(-z) and 1 + tanh(u) = 2 / (1 + e^(-2u)): no cancellation in f64.
            let want = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3));
            let want_tanh = xd / (1.0 + (-2.0 * u).exp());
            // Past the few ulp of the evaluation, the f32 steps before the tail (x / sqrt(2),
            // u) carry a relative error the tail multiplies by about x^2 (its conditioning).
            let allowed = 6 + (2.0 * x * x) as u32;
            worst.0 = worst.0.max(ulps(gelu(x), want as f32).saturating_sub(allowed));
            worst.1 = worst.1.max(ulps(gelu_tanh(x), want_tanh as f32).saturating_sub(allowed));
        }
        assert!(worst == (0, 0), "gelu {} ulp, gelu_tanh {} ulp past the bound", worst.0, worst.1);
        // torch.nn.functional.gelu at 1, -1, 2 (erf), and with approximate="tanh" at 1.
        for (x, y) in [(1.0, 0.841_344_7), (-1.0, -0.158_655_26), (2.0, 1.954_499_7)] {
            assert!(ulps(gelu(x), y) <= 2, "gelu({x}) = {}", gelu(x));
        }
        assert!(ulps(gelu_tanh(1.0), 0.841_192) <= 2, "{}", gelu_tanh(1.0));
        for f in [gelu, gelu_tanh] {
            assert_eq!(f(0.0), 0.0);
            assert_eq!(f(f32::INFINITY), f32::INFINITY);
            assert_eq!(f(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
            assert_eq!(f(-30.0), -0.0);
            assert_eq!(f(30.0), 30.0);
            assert!(f(f32::NAN).is_nan());
        }
        assert_eq!(UnaryOp::Exp.apply(1.0), exp(1.0));
        assert!(UnaryOp::Gelu.is_activation() && UnaryOp::GeluTanh.is_activation() && !UnaryOp::Exp.is_activation());
    }

    /// Square scores keep the lower triangle; with more keys than queries the queries are the
    /// last positions; every leading matrix is masked alike.
    #[test]
    fn causal_mask_keeps_each_token_and_the_ones_before() {
        let mut x = vec![1f32; 2 * 3 * 3];
        causal_mask(&mut x, &[2, 3, 3]);
        let inf = f32::NEG_INFINITY;
        let one = [1.0, inf, inf, 1.0, 1.0, inf, 1.0, 1.0, 1.0];
        assert_eq!(x[..9], one);
        assert_eq!(x[9..], one);
        let mut y = vec![1f32; 2 * 4];
        causal_mask(&mut y, &[2, 4]);
        assert_eq!(y, [1.0, 1.0, 1.0, inf, 1.0, 1.0, 1.0, 1.0]);
    }

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
