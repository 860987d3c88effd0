//! Activations and binary arithmetic: [`UnaryOp`] and [`BinaryOp`] with their scalar
//! definitions (the shared [`exp`], the two GELUs), and the unary ops over slices and arrays
//! (16 AVX-512 lanes with the same bits where the CPU has them).

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
