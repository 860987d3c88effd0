//! Weight quantization rules, exactly as docs/language.md ("Numeric semantics") states them.
//! Shared by the interpreter, the trainer and the code generator.
//!
//! Every rule works per output channel: row `n` of a weight viewed as `[N, K]`.

use ndarray::{Array1, Array2, ArrayView2};

use crate::ir::QuantRule;

/// Quantized weight: integer codes (trits in {-1, 0, 1}, or int8 in [-127, 127]) and one scale per
/// row; the weight's value is `scale[n] * codes[n, k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    pub codes: Array2<i8>,
    pub scale: Array1<f32>,
}

/// Added to the absmean divisor so an all-zero row quantizes to zeros.
pub const ABSMEAN_EPS: f32 = 1e-6;
/// TWN threshold factor.
pub const TWN_DELTA: f32 = 0.7;

/// `round_ties_even(x)` clamped to [-1, 1] (NaN gives 0): the sign of `x` beyond +-0.5 (0.5
/// ties to 0), else 0. Without a rounding call per weight, which was most of the compile time
/// of ResNet-sized models.
fn ternary_code(x: f32) -> i8 {
    i8::from(x > 0.5) - i8::from(x < -0.5)
}

pub fn quantize(w: ArrayView2<'_, f32>, rule: QuantRule) -> Quantized {
    use rayon::prelude::*;
    let (n, k) = w.dim();
    let mut codes = Array2::<i8>::zeros((n, k));
    let mut scale = Array1::<f32>::zeros(n);
    if rule == QuantRule::AbsmeanTensor {
        // One gamma: the rows' sums (each in order) summed in f64 in row order.
        let sums: Vec<f32> = w.axis_iter(ndarray::Axis(0)).into_par_iter().map(sum_abs).collect();
        let gamma = (sums.iter().map(|s| f64::from(*s)).sum::<f64>() / (n * k).max(1) as f64) as f32;
        codes
            .axis_iter_mut(ndarray::Axis(0))
            .into_par_iter()
            .zip(w.axis_iter(ndarray::Axis(0)).into_par_iter())
            .for_each(|(mut out, row)| absmean_codes(row, out.view_mut(), gamma + ABSMEAN_EPS));
        scale.fill(gamma);
        return Quantized { codes, scale };
    }
    // Rows are independent: quantize them in parallel (a row's own work stays in order).
    codes
        .axis_iter_mut(ndarray::Axis(0))
        .into_par_iter()
        .zip(scale.axis_iter_mut(ndarray::Axis(0)).into_par_iter())
        .zip(w.axis_iter(ndarray::Axis(0)).into_par_iter())
        .for_each(|((mut out, mut s), row)| s[()] = quantize_row(row, out.view_mut(), rule));
    Quantized { codes, scale }
}

/// The sum of `|v|` over a row, in order (the scales are part of every artifact and weights
/// file: their bits do not change with the machine or the code's vectorization).
fn sum_abs(row: ndarray::ArrayView1<'_, f32>) -> f32 {
    row.iter().map(|v| v.abs()).sum::<f32>()
}

/// `round(clip(v / d, -1, 1))` of each value of `row` into `out`.
fn absmean_codes(row: ndarray::ArrayView1<'_, f32>, mut out: ndarray::ArrayViewMut1<'_, i8>, d: f32) {
    match (row.as_slice(), out.as_slice_mut()) {
        // Contiguous rows: a loop the compiler vectorizes (the same divisions).
        (Some(src), Some(dst)) => {
            for (code, v) in dst.iter_mut().zip(src) {
                *code = ternary_code(v / d);
            }
        }
        _ => {
            for (code, v) in out.iter_mut().zip(row.iter()) {
                *code = ternary_code(v / d);
            }
        }
    }
}

/// Quantizes one row into `out` (zeros on entry) and returns its scale.
fn quantize_row(row: ndarray::ArrayView1<'_, f32>, mut out: ndarray::ArrayViewMut1<'_, i8>, rule: QuantRule) -> f32 {
    let k = row.len();
    {
        let mean_abs = sum_abs(row) / k.max(1) as f32;
        match rule {
            // AbsmeanTensor rows come here only through `quantize`'s own path (not reached).
            QuantRule::Absmean | QuantRule::AbsmeanTensor => {
                absmean_codes(row, out, mean_abs + ABSMEAN_EPS);
                mean_abs
            }
            QuantRule::Twn => {
                let delta = TWN_DELTA * mean_abs;
                let (mut sum, mut count) = (0.0f32, 0usize);
                for (code, v) in out.iter_mut().zip(row.iter()) {
                    if v.abs() > delta {
                        *code = if *v > 0.0 { 1 } else { -1 };
                        sum += v.abs();
                        count += 1;
                    }
                }
                if count > 0 { sum / count as f32 } else { 0.0 }
            }
            QuantRule::Absmax => {
                let m = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let s = if m > 0.0 { m / 127.0 } else { 1.0 };
                for (code, v) in out.iter_mut().zip(row.iter()) {
                    *code = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
                }
                s
            }
        }
    }
}

/// Every quantized weight of a model, quantized once per compile: the kernel plan's zero-skip
/// analysis and the code generator's packing read the same codes.
#[derive(Clone, Debug, Default)]
pub struct QuantCache {
    by_name: std::collections::HashMap<String, std::sync::Arc<Quantized>>,
}

impl QuantCache {
    /// Quantizes every parameter of `params` that has a rule and a value in `weights` (as
    /// `[N, K]` rows), weights in parallel.
    pub fn build(params: &[crate::ir::ParamInfo], weights: &crate::weights::Weights) -> QuantCache {
        use rayon::prelude::*;
        let by_name = params
            .par_iter()
            .filter_map(|p| {
                let rule = p.quant?;
                let w = weights.tensors.get(&p.name)?;
                let rows = p.shape.first().copied().unwrap_or(1) as usize;
                let view = w.view().into_shape_with_order((rows, w.len() / rows.max(1))).ok()?;
                Some((p.name.clone(), std::sync::Arc::new(quantize(view, rule))))
            })
            .collect();
        QuantCache { by_name }
    }

    /// The codes and scales of parameter `name`, if it was quantized.
    pub fn get(&self, name: &str) -> Option<&Quantized> {
        self.by_name.get(name).map(|q| q.as_ref())
    }

    /// Parameter `name`'s codes and scales, taken out of the cache (no copy when nothing else
    /// holds them): for the last reader, the code generator.
    pub fn take(&mut self, name: &str) -> Option<Quantized> {
        self.by_name.remove(name).map(|q| std::sync::Arc::try_unwrap(q).unwrap_or_else(|shared| (*shared).clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn absmean_follows_bitnet() {
        let w = array![[0.9f32, -0.1, 0.4, -1.2], [0.0, 0.0, 0.0, 0.0]];
        let q = quantize(w.view(), QuantRule::Absmean);
        // gamma = (0.9 + 0.1 + 0.4 + 1.2) / 4 = 0.65: 0.9/0.65 = 1.38 -> 1, -0.15 -> 0, 0.62 -> 1, -1.85 -> -1
        assert_eq!(q.codes, array![[1i8, 0, 1, -1], [0, 0, 0, 0]]);
        assert!((q.scale[0] - 0.65).abs() < 1e-6);
        assert_eq!(q.scale[1], 0.0);
    }

    /// One gamma for the whole tensor (BitNet b1.58 2B4T's weights): a row of small values
    /// quantizes to zeros against the large row's mean, every channel gets the same scale.
    #[test]
    fn absmean_tensor_has_one_scale_per_tensor() {
        let w = array![[0.9f32, -0.1, 0.4, -1.2], [0.05, -0.05, 0.3, 0.0]];
        let q = quantize(w.view(), QuantRule::AbsmeanTensor);
        // gamma = (2.6 + 0.4) / 8 = 0.375: 2.4 -> 1, -0.27 -> 0, 1.07 -> 1, -3.2 -> -1; 0.13, -0.13, 0.8 -> 1, 0
        assert_eq!(q.codes, array![[1i8, 0, 1, -1], [0, 0, 1, 0]]);
        assert!(q.scale.iter().all(|s| (s - 0.375).abs() < 1e-6), "{}", q.scale);
        // Per channel, the second row keeps its own scale.
        let per_row = quantize(w.view(), QuantRule::Absmean);
        assert_eq!(per_row.codes.row(1), array![0i8, 0, 1, 0]);
        assert!((per_row.scale[1] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn ternary_codes_are_rounded_ties_to_even_and_clamped() {
        let specials = [0.5f32, -0.5, 1.5, -1.5, 2.5, 0.49999997, 0.50000006, -0.50000006, 1e30, -0.0, 0.0];
        let specials = specials.into_iter().chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE]);
        let mut s = 0x9e37_79b9_u32;
        let random = (0..10_000).map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 6.0
        });
        for x in specials.chain(random) {
            let want = x.round_ties_even().clamp(-1.0, 1.0) as i8;
            assert_eq!(ternary_code(x), want, "{x}");
        }
    }

    #[test]
    fn twn_thresholds_at_seven_tenths_of_the_mean() {
        let w = array![[0.9f32, -0.1, 0.4, -1.2]];
        let q = quantize(w.view(), QuantRule::Twn);
        // delta = 0.7 * 0.65 = 0.455: only 0.9 and -1.2 survive; alpha = (0.9 + 1.2) / 2
        assert_eq!(q.codes, array![[1i8, 0, 0, -1]]);
        assert!((q.scale[0] - 1.05).abs() < 1e-6);
    }

    #[test]
    fn absmax_saturates_symmetrically_and_rounds_ties_to_even() {
        let w = array![[127.0f32, -127.0, 0.5, 1.5, 2.5]];
        let q = quantize(w.view(), QuantRule::Absmax);
        assert_eq!(q.scale[0], 1.0);
        assert_eq!(q.codes, array![[127i8, -127, 0, 2, 2]]);
    }
}
