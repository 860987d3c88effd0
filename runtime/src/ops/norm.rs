//! Layer and RMS normalization: f64 statistics in striped partial sums, the per-value step
//! in f32 (AVX-512 kernels with the portable bits).

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
