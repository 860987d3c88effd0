//! Element-wise semantics shared by the runtime and the compiler's reference interpreter, so
//! both compute the very same thing: activations, binary arithmetic, int8 quantization.
//!
//! Rules: each function here is the definition docs/language.md ("Numeric semantics") states;
//! the interpreter and the runtime call these, never a copy.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Relu,
    Relu6,
    Sigmoid,
    Silu,
    Tanh,
    Neg,
    /// Square root (introduced by batch-norm folding; not a source-level op).
    Sqrt,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 7] =
        [UnaryOp::Relu, UnaryOp::Relu6, UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::Tanh, UnaryOp::Neg, UnaryOp::Sqrt];

    /// The op on one f32 value (docs/language.md, "Activations").
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Relu6 => x.clamp(0.0, 6.0),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Silu => x / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Neg => -x,
            UnaryOp::Sqrt => x.sqrt(),
        }
    }

    /// Activations a fused epilogue may end with.
    pub fn is_activation(self) -> bool {
        matches!(self, UnaryOp::Relu | UnaryOp::Relu6 | UnaryOp::Sigmoid | UnaryOp::Silu | UnaryOp::Tanh)
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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    /// The op on two f32 values.
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
/// sample gets scale 1 and factor 0.
pub fn absmax_scale(values: &[f32]) -> (f32, f32) {
    // Eight running maxima (so it vectorizes), then their max: `max` ignores NaN and is
    // associative otherwise, so this is the max of all `|v|` in any order.
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let m = chunks.remainder().iter().fold(lanes.iter().fold(0.0f32, |a, l| a.max(*l)), |a, v| a.max(v.abs()));
    if m > 0.0 { (m / 127.0, 127.0 / m) } else { (1.0, 0.0) }
}

/// One value quantized with a factor from [`absmax_scale`] (or `1 / fixed scale`).
#[inline]
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
    let mut y = x.clone();
    for mut lane in y.lanes_mut(ndarray::Axis(axis)) {
        let m = lane.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        lane.mapv_inplace(|v| (v - m).exp());
        let sum: f32 = lane.sum();
        lane.mapv_inplace(|v| v / sum);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::quantize;

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
